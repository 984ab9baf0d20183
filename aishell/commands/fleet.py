"""Fleet jobs: one job on many targets, one Celery task per target, run by `aishell
worker` processes on any machine that reaches the broker and the state store.

Each target's task runs the job once: the run it starts is linked to the fleet job in
the store before its first step, so a task delivered again (its worker was killed)
resumes that run, never starts a second, and a finished one is left as it is. A server
at its `fleet.per_server_limit`, a database in use by another run, a run interrupted by
a worker's shutdown and a resume whose server does not answer (while the target's
circuit breaker lets it try) all send the task back to the queue for later.
Approvals: nobody is asked on a worker; a step that needs a person leaves its run
waiting_approval, named in `fleet status` and `aishell approvals`. What becomes of a
delivery that cannot go on as sent is fleetdelivery.py's. A schedule's trigger under
`schedule serve --fleet` sends one fleet job, by the rules of a trigger that runs its
job itself (queue_schedule).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aishell.agents.archive import refuse_relative_archives
from aishell.agents.available import get_agent
from aishell.agents.base import job_as_given
from aishell.agents.jobs import scheduled_options
from aishell.commands.fleetdelivery import (
    NOT_STARTED,
    after_store_error,
    checked_delivery,
    delivery_facts,
    keep_refusal,
    slot_lost,
    still_stopped,
    stopped_for_good,
)
from aishell.commands.fleetlist import GOING_ON, fleet_summary
from aishell.commands.runs import resume_run, run_job, show_run
from aishell.commands.takeback import notify_run
from aishell.commands.tools import load_catalog
from aishell.config.dburl import resolve_url
from aishell.config.models import Config
from aishell.config.selection import select_targets
from aishell.errors import AishellError, BrokerUnreachable, StateError, TargetLocked, UsageError
from aishell.executor import INTERRUPTED, OUT_OF_WINDOW, WAITING_APPROVAL
from aishell.fleet.sending import broker, sent_with
from aishell.fleet.slots import server_of, server_slot
from aishell.fleet.worker import TryLater, serve_worker
from aishell.policy.approvers import NonInteractive
from aishell.registry import Registry
from aishell.scheduling.due import firing_due, trigger_key
from aishell.state.fleet import TriggerTaken
from aishell.state.store import StateStore, signed_store
from aishell.state.values import now

logger = logging.getLogger(__name__)

# A run a delivery of its task (a resend) resumes: one going on, and one stopped outside
# its maintenance window, as a schedule's next trigger resumes it.
RESUMED = (*GOING_ON, OUT_OF_WINDOW)
# What a fleet job passes on to each target's new run, as run_job takes it: every option
# a schedule stores (agents/jobs.scheduled_job), as run_schedule passes them.
FLEET_OPTIONS = (
    "dry_run",
    "max_run_seconds",
    "safety_level",
    "force",
    "ignore_window",
    "reason",
    "planner",
)
# What a resume of a target's run is given of them, as run_schedule resumes a schedule's
# unfinished run: its time limit anew.
RESUME_OPTIONS = ("max_run_seconds",)
# A schedule's runs that its next trigger takes up before anything new (run_schedule's).
UNFINISHED = (INTERRUPTED, OUT_OF_WINDOW)


def fleet_run(
    config: Config,
    agent: str,
    job: dict[str, Any],
    selector: str,
    *,
    options: dict[str, Any] | None = None,
    wait_seconds: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    trigger: tuple[str, str | None] | None = None,
    adopted: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send the job to every selected target as one task each; with wait_seconds, watch
    the store until every target's run is over (or the wait ends) and return where each
    stands. The job is checked before anything is sent. `trigger`, `adopted`: a
    schedule's trigger sends it (StateStore.create_fleet_job; TriggerTaken when that
    trigger has its fleet job already)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(FLEET_OPTIONS))
    if unknown:
        raise UsageError(f"A fleet job takes no {', '.join(unknown)}")
    targets = select_targets(config, selector)
    # Checked here, kept as given: each worker's run checks it again, as `aishell run`
    # does (a job's checked form is no job an agent takes twice).
    job, _ = job_as_given(get_agent(agent), job, config.agent(agent))
    chosen = {t: config.main.targets[t] for t in targets}
    carried = sent_with(load_catalog(config), config.agent(agent), chosen)
    with broker(config) as sender:
        with signed_store(config) as store:
            fleet_id = store.create_fleet_job(
                agent, dict(job), options, selector, targets, trigger=trigger, adopted=adopted
            )
        sender.send(fleet_id, targets, carried)
        with StateStore(config.state_url) as store:
            store.mark_fleet_sent(fleet_id)
    return watch_fleet(config, fleet_id, wait_seconds, progress)


def fleet_resend(
    config: Config,
    fleet_id: str,
    *,
    wait_seconds: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send again the task of each target of a fleet job whose run is not over (queued,
    running, interrupted, out_of_window: its delivery resumes it) or never began
    (not_started, once what stopped it is mended): after a send failed midway, or a
    broker lost its queue. A target's run starts once whatever is delivered, so a task
    still queued is harmless. With wait_seconds, watch as fleet_run does."""
    summary = fleet_summary(config, fleet_id)
    pending = [
        row["target"]
        for row in summary["runs"]
        if row["status"] in (*RESUMED, "queued", NOT_STARTED)
    ]
    if pending:
        # A target this config does not know is vouched for by none: its task carries no
        # fingerprint of it, and a worker runs nothing of it.
        known = {t: config.main.targets[t] for t in pending if t in config.main.targets}
        carried = sent_with(load_catalog(config), config.agent(summary["agent"]), known)
        with broker(config) as sender:
            # Recorded first: a task that ends before its run begins, even at once,
            # says so after it.
            with signed_store(config) as store:  # signed: it lets a target's run begin
                store.record_resent(fleet_id, pending)
            sender.send(fleet_id, pending, carried)
            with StateStore(config.state_url) as store:
                store.mark_fleet_sent(fleet_id)
    return {**watch_fleet(config, fleet_id, wait_seconds, progress), "resent": pending}


def watch_fleet(
    config: Config,
    fleet_id: str,
    wait_seconds: float | None,
    progress: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Where a fleet job stands; with wait_seconds, once every target's run is over or
    the wait has ended."""
    summary = fleet_summary(config, fleet_id)
    if wait_seconds is None:
        return summary
    deadline = time.monotonic() + wait_seconds
    while summary["going_on"] and time.monotonic() < deadline:
        if progress is not None:
            progress(summary)
        time.sleep(0.5)
        summary = fleet_summary(config, fleet_id)
    if progress is not None:
        progress(summary)
    return summary


def run_fleet_target(config: Config, fleet_id: str, target: str, carried: Any = None) -> str:
    """A fleet task's work: the target's run of the job, started once, resumed when a
    delivery before this one left it unfinished; its status. TryLater when the task
    must wait (its server at its limit, its database in use, its run interrupted, its
    resume's server not answering, the state store failing: nothing of the task can be
    kept without it). `carried`: the tools and agent config the task was sent with
    (sent_with); a worker whose own differ runs nothing of it."""
    try:
        return _target_task(config, fleet_id, target, carried)
    except StateError as exc:
        return after_store_error(config, fleet_id, target, exc)


def _target_task(config: Config, fleet_id: str, target: str, carried: Any) -> str:
    """run_fleet_target's work, the state store's failures left to it."""
    # Opened once, with the home's key: all a delivery decides by is read here.
    with signed_store(config) as store:
        fleet = store.get_fleet_job(fleet_id)
        if fleet is None or target not in fleet["targets"]:
            raise UsageError(f"Fleet job {fleet_id} has no target '{target}'")
        earlier = store.fleet_runs(fleet_id).get(target)
        stopped = earlier is not None and still_stopped(store, fleet_id, target, earlier)
        facts = delivery_facts(store, fleet, target, earlier)
    if earlier is not None and (stopped or earlier["status"] not in RESUMED):
        return str(earlier["status"])  # done before: a delivery again changes nothing
    try:
        catalog = checked_delivery(config, fleet, target, carried, facts)
        return _take_turn(config, fleet, target, earlier, catalog)
    except StateError:
        raise
    except AishellError as exc:
        keep_refusal(config, fleet_id, target, earlier, exc)
        return NOT_STARTED


def _take_turn(
    config: Config,
    fleet: dict[str, Any],
    target: str,
    earlier: dict[str, Any] | None,
    catalog: Registry,
) -> str:
    """The target's run of the fleet job, started or resumed in one of its server's
    slots with the catalog its task was checked against; its status, or TryLater."""
    fleet_id, settings = fleet["fleet_id"], config.main.fleet
    _, target_config = config.target(target)
    server = server_of(resolve_url(target_config.url, config.home))
    later = partial(TryLater, settings.slot_wait_seconds)
    options, schedule = fleet["options"], fleet.get("schedule")
    how: dict[str, Any] = {
        "approver": NonInteractive(why=f"fleet job {fleet_id} on a worker"),
        "catalog": catalog,
    }
    lost = partial(slot_lost, config, fleet_id, target, server)
    with server_slot(config.state_url, server, settings.per_server_limit, lost) as held:
        if not held:
            raise later(f"{server} runs {settings.per_server_limit} already")
        try:
            # A dry run changes nothing and is not resumed: one whose worker stopped (or
            # that a delivery again finds going) is run anew, and the fleet job keeps
            # the new one.
            if earlier is not None and not options.get("dry_run"):
                resumed = {k: options[k] for k in RESUME_OPTIONS if k in options}
                result = resume_run(config, earlier["run_id"], **how, **resumed)
            else:
                result = run_job(
                    config,
                    fleet["agent"],
                    fleet["job"],
                    target,
                    fleet=(fleet_id, target),
                    # A schedule's trigger sent it: the run is the schedule's, as run_schedule's.
                    schedule=None if schedule is None else (schedule, "cron"),
                    **how,
                    **options,
                )
        except TargetLocked as exc:
            raise later(str(exc)) from None
    if result.status == INTERRUPTED and not stopped_for_good(
        config, fleet_id, target, result.run_id, result.error
    ):
        raise later(f"run {result.run_id} was interrupted ({result.error}); resumed next")
    if schedule is not None:  # its outcome to the notifiers, as run_schedule sends it
        notify_run(config, result.to_dict(), schedule, "cron")
    return result.status


def queue_schedule(config: Config, name: str, how: str, stop: threading.Event) -> None:
    """A schedule's trigger under `schedule serve --fleet`: its job sent to the queue as
    a fleet job over the schedule's target, for the workers to run; nothing runs here.
    Runs a worker left behind are its queue's to deliver again, not the scheduler's.

    The rules of run_schedule's trigger hold. The run is the schedule's: its fleet job
    names the schedule, the worker's run is linked to it and its outcome notified, and
    every option the schedule stores reaches the run as run_schedule passes it (one a
    fleet job does not carry refuses the send). While the schedule's last run waits for
    approval nothing is sent: the waiting run is notified again. A run of it left
    unfinished (interrupted, out of its window) is resumed before anything new: its
    fleet job's task is sent again (a run a scheduler ran itself is taken by this
    trigger's fleet job). While its last fleet job is queued or running, nothing is
    sent: one instance at a time. And one fleet job per trigger: the schedule and the
    trigger's due time (due.firing_due) are kept with it in one transaction, under a
    unique index; a trigger fired again (serve stopped or killed before it knew its send
    had ended: scheduling/due.py) finds its job and sends what of it has not begun.
    A failure before anything was sent is kept, logged and notified as a missed
    trigger, then raised."""
    if how == "recover":
        return
    with signed_store(config) as store:  # serve checked it; changed since, it raises
        schedule = store.get_schedule(name)
    due = firing_due()
    try:
        refuse_relative_archives(schedule, get_agent(schedule["agent"]).spec.options)
        options = _carried_options(config, schedule)
        _queue_trigger(config, schedule, options, None if due is None else trigger_key(due))
    except (BrokerUnreachable, UsageError) as exc:
        # No run holds this failure: kept, logged and notified as a missed trigger.
        from aishell.scheduling.stuck import alert

        with StateStore(config.state_url) as store:
            alert(config, store, name, "missed", {"due": now(), "error": str(exc)})
        raise


def _carried_options(config: Config, schedule: dict[str, Any]) -> dict[str, Any]:
    """The schedule's stored options, which its fleet job carries to the run (with its
    safety level as its trigger holds it: scheduled_options); refused
    when one is none a fleet job carries: dropped, the run would not be what the
    schedule says (a dry run that deletes, a strict one that asks nobody)."""
    configured = config.agent(schedule["agent"]).defaults.safety_level
    options, held = scheduled_options(schedule["options"], configured)
    if held is not None:
        logger.warning("schedule %s: %s", schedule["name"], held)
    unknown = sorted(set(options) - set(FLEET_OPTIONS))
    if unknown:
        raise UsageError(
            f"Schedule {schedule['name']} stores {', '.join(unknown)}, which a fleet job "
            "does not carry: nothing was sent; serve it without --fleet, or remove it and "
            "add it again without them"
        )
    return options


def _queue_trigger(
    config: Config, schedule: dict[str, Any], options: dict[str, Any], due: str | None
) -> None:
    """queue_schedule's work once the schedule is read and its options checked."""
    name = schedule["name"]
    with StateStore(config.state_url) as store:
        taken = None if due is None else store.trigger_fleet_job(name, due)
        newest = store.newest_schedule_fleet_job(name)
        recent = store.schedule_runs(name, limit=5)
    if taken is not None:
        _send_again(config, name, taken["fleet_id"], f"its trigger due {due} has it already")
        return
    if newest is not None and _still_going(config, name, newest):
        return
    if recent and recent[0]["status"] == WAITING_APPROVAL:
        waiting = show_run(config, recent[0]["run_id"])
        still = "schedule %s: run %s still waits for approval; not started again"
        logger.info(still, name, waiting["run_id"], extra={"run_id": waiting["run_id"]})
        notify_run(config, waiting, name, "cron")
        return
    unfinished = [r for r in recent if r["status"] in UNFINISHED]
    if unfinished:  # resumed first; new work now would meet the same wall
        _take_up(config, schedule, options, due, unfinished)
        return
    _send_new(config, schedule, options, due, schedule["target"], None)


def _take_up(
    config: Config,
    schedule: dict[str, Any],
    options: dict[str, Any],
    due: str | None,
    unfinished: list[dict[str, Any]],
) -> None:
    """The schedule's unfinished runs (newest first), each resumed by its fleet job's task
    sent again, oldest first, as run_schedule resumes them."""
    for earlier in reversed(unfinished):
        with StateStore(config.state_url) as store:
            fleet_id = store.fleet_job_of_run(earlier["run_id"])
            target = store.get_run(earlier["run_id"])["target"]
        if fleet_id is not None:
            why = f"its run {earlier['run_id']} is unfinished"
            _send_again(config, schedule["name"], fleet_id, why)
            continue
        # Left by a scheduler that ran the schedule itself: a fleet job of this trigger
        # takes it, and its task resumes it. One such run per trigger (its key).
        _send_new(config, schedule, options, due, target, {target: earlier["run_id"]})
        return


def _still_going(config: Config, name: str, newest: dict[str, Any]) -> bool:
    """Whether the schedule's newest fleet job has a target still queued or running: its
    trigger is not sent again, as a schedule runs one instance at a time. One never sent
    whole (its scheduler stopped before it, and its trigger was past its grace) is not."""
    summary = fleet_summary(config, newest["fleet_id"])
    going = [
        f"{row['target']} {row['status']}"
        for row in summary["runs"]
        if row["status"] in ("queued", "running") and not row["delivery_refused"]
    ]
    if not going or (newest["sent_at"] is None and "running" not in summary["counts"]):
        return False
    logger.info(
        "schedule %s: its fleet job %s is still going (%s); not sent again "
        "(`aishell fleet resend %s` if the broker lost its task)",
        name,
        newest["fleet_id"],
        ", ".join(going),
        newest["fleet_id"],
    )
    return True


def _send_again(config: Config, name: str, fleet_id: str, why: str) -> None:
    """The tasks of the schedule's fleet job whose runs are not over, sent again."""
    resent = fleet_resend(config, fleet_id)["resent"]
    said = ", ".join(resent) if resent else "nothing: every target's run is over"
    logger.info("schedule %s: %s: fleet job %s sent again to %s", name, why, fleet_id, said)


def _send_new(
    config: Config,
    schedule: dict[str, Any],
    options: dict[str, Any],
    due: str | None,
    target: str | None,
    adopted: dict[str, str] | None,
) -> None:
    """The trigger's own fleet job, sent; one the trigger has already is sent again."""
    name = schedule["name"]
    selector = target or config.main.default_target
    try:
        sent = fleet_run(
            config,
            schedule["agent"],
            schedule["job"],
            selector,
            options=options,
            trigger=(name, due),
            adopted=adopted,
        )
    except TriggerTaken as taken:  # another scheduler's, an instant before
        _send_again(config, name, taken.fleet_id, f"its trigger due {due} has it already")
        return
    took = f" to resume run {next(iter(adopted.values()))}" if adopted else ""
    logger.info("schedule %s: sent to the queue as fleet job %s%s", name, sent["fleet_id"], took)


def start_worker(config: Config, concurrency: int = 1, name: str | None = None) -> None:
    """Run fleet tasks from the queue until stopped."""
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    code = serve_worker(
        config, partial(run_fleet_target, config), concurrency=concurrency, name=name
    )
    if code:
        raise AishellError(
            f"The worker stopped on an error (Celery's exit code {code}); its log above says which"
        )
