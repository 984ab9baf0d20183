"""Fleet jobs: one job on many targets, one Celery task per target, run by `aishell
worker` processes on any machine that reaches the broker and the state store.

Each target's task runs the job once: the run it starts is linked to the fleet job in
the store before its first step, so a task delivered again (its worker was killed)
resumes that run, never starts a second, and a finished one is left as it is. A server
at its `fleet.per_server_limit`, a database in use by another run, a run interrupted by
a worker's shutdown and a resume whose server does not answer (while the target's
circuit breaker lets it try) all send the task back to the queue for later.
Approvals: nobody is asked on a worker; a step that needs a person leaves its run
waiting_approval, named in `fleet status` and `aishell approvals`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aishell.agents.archive import refuse_relative_archives
from aishell.agents.available import get_agent
from aishell.agents.base import job_as_given
from aishell.commands.breaker import breaker_key
from aishell.commands.runs import resume_run, run_job
from aishell.commands.tools import load_catalog
from aishell.config.dburl import resolve_url
from aishell.config.models import Config
from aishell.config.selection import select_targets
from aishell.errors import (
    AishellError,
    BrokerUnreachable,
    ConfigError,
    StateError,
    TargetLocked,
    TargetUnreachable,
    UsageError,
)
from aishell.executor import INTERRUPTED
from aishell.fleet.sending import broker, sent_with, unlike
from aishell.fleet.slots import server_of, server_slot
from aishell.fleet.worker import TryLater, serve_worker
from aishell.policy.approvers import NonInteractive
from aishell.registry import Registry
from aishell.state.fleet import standing_refusal
from aishell.state.store import StateStore
from aishell.state.values import now

logger = logging.getLogger(__name__)

# A target's task is over once its run is in none of these.
GOING_ON = ("running", INTERRUPTED)
# A target whose task ended before its run began: its error says why.
NOT_STARTED = "not_started"
# What a fleet run passes on to each target's run.
FLEET_OPTIONS = ("dry_run", "max_run_seconds", "safety_level")


def fleet_run(
    config: Config,
    agent: str,
    job: dict[str, Any],
    selector: str,
    *,
    options: dict[str, Any] | None = None,
    wait_seconds: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send the job to every selected target as one task each; with wait_seconds, watch
    the store until every target's run is over (or the wait ends) and return where each
    stands. The job is checked before anything is sent."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(FLEET_OPTIONS))
    if unknown:
        raise UsageError(f"A fleet job takes no {', '.join(unknown)}")
    targets = select_targets(config, selector)
    # Checked here, kept as given: each worker's run checks it again, as `aishell run`
    # does (a job's checked form is no job an agent takes twice).
    job, _ = job_as_given(get_agent(agent), job, config.agent(agent))
    carried = sent_with(load_catalog(config), config.agent(agent))
    with broker(config) as sender:
        with StateStore(config.state_url) as store:
            fleet_id = store.create_fleet_job(agent, dict(job), options, selector, targets)
        sender.send(fleet_id, targets, carried)
    return watch_fleet(config, fleet_id, wait_seconds, progress)


def fleet_resend(
    config: Config,
    fleet_id: str,
    *,
    wait_seconds: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send again the task of each target of a fleet job whose run is not over (queued,
    running, interrupted) or never began (not_started, once what stopped it is mended):
    after a send failed midway, or a broker lost its queue. A target's run starts once
    whatever is delivered, so a task still queued is harmless. With wait_seconds, watch
    as fleet_run does."""
    summary = fleet_summary(config, fleet_id)
    pending = [
        row["target"]
        for row in summary["runs"]
        if row["status"] in (*GOING_ON, "queued", NOT_STARTED)
    ]
    if pending:
        carried = sent_with(load_catalog(config), config.agent(summary["agent"]))
        with broker(config) as sender:
            # Recorded first: a task that ends before its run begins, even at once,
            # says so after it.
            with StateStore(config.state_url) as store:
                store.record_resent(fleet_id, pending)
            sender.send(fleet_id, pending, carried)
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


def fleet_summary(config: Config, fleet_id: str) -> dict[str, Any]:
    """A fleet job and, per target, its run and status: "queued" before it has one,
    "not_started" when its task ended before a run began (its error says why)."""
    with StateStore(config.state_url) as store:
        fleet = store.get_fleet_job(fleet_id)
        if fleet is None:
            raise UsageError(f"No fleet job {fleet_id}")
        return _summary(store, fleet)


def list_fleet_jobs(config: Config, limit: int = 20) -> dict[str, Any]:
    """The newest fleet jobs, each with how many of its targets stand where."""
    with StateStore(config.state_url) as store:
        found = [_summary(store, fleet) for fleet in store.list_fleet_jobs(limit)]
    return {"fleet_jobs": [{k: v for k, v in job.items() if k != "runs"} for job in found]}


def _summary(store: StateStore, fleet: dict[str, Any]) -> dict[str, Any]:
    started = store.fleet_runs(fleet["fleet_id"])
    not_started = store.fleet_not_started(fleet["fleet_id"])
    rows = [_row(t, started.get(t), not_started.get(t)) for t in fleet["targets"]]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    # A run whose last delivery was refused waits for nothing the queue holds: its
    # task is over until it is sent again.
    going_on = sum(
        1 for r in rows if r["status"] in (*GOING_ON, "queued") and not r["delivery_refused"]
    )
    return {**fleet, "runs": rows, "counts": counts, "going_on": going_on}


def _row(target: str, run: dict[str, Any] | None, refused: dict[str, Any] | None) -> dict[str, Any]:
    """Where a target stands. A run, once begun, says so; before, the last reason its
    task ended without one (not_started). An interrupted run whose last delivery was
    refused since its last change keeps its status, the refusal in place of its error."""
    if run is None:
        status = NOT_STARTED if refused else "queued"
        found = refused or {}
        return {
            "target": target,
            "run_id": None,
            "status": status,
            "error": found.get("error"),
            "host": found.get("hostname"),
            "delivery_refused": None,
        }
    error = run["error"]
    shown = standing_refusal(run, refused)
    if shown is not None:
        error = f"its last delivery was refused on {shown['hostname']} at {shown['at']}: "
        error += shown["error"]
    return {
        "target": target,
        "run_id": run["run_id"],
        "status": run["status"],
        "error": error,
        "host": run["hostname"],
        "delivery_refused": shown,
    }


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
        raise TryLater(config.main.fleet.slot_wait_seconds, f"the state store: {exc}") from None


def _target_task(config: Config, fleet_id: str, target: str, carried: Any) -> str:
    """run_fleet_target's work, the state store's failures left to it."""
    with StateStore(config.state_url) as store:
        fleet = store.get_fleet_job(fleet_id)
        earlier = store.fleet_runs(fleet_id).get(target)
    if fleet is None or target not in fleet["targets"]:
        raise UsageError(f"Fleet job {fleet_id} has no target '{target}'")
    if earlier is not None and earlier["status"] not in GOING_ON:
        return str(earlier["status"])  # done before: a delivery again changes nothing
    try:
        catalog = _check_sent_with(config, fleet, carried)
        return _take_turn(config, fleet, target, earlier, catalog)
    except StateError:
        raise
    except AishellError as exc:
        return _refused(config, fleet_id, target, earlier, exc)


def _refused(
    config: Config,
    fleet_id: str,
    target: str,
    earlier: dict[str, Any] | None,
    exc: AishellError,
) -> str:
    """A delivery that failed before the target's run began, or before its run went on
    (resumed, or a dry run started anew): the refusal is kept for `fleet show` and
    `fleet status`, not left in a worker's log alone (the target unknown or its SQLite
    file gone on this worker, the job refused there, a resume refused before it reopens
    the run). Past that, the run's own row says what became of it: raised, not doubled.
    NOT_STARTED for a target with no run; a refused resume is raised, after it is kept."""
    with StateStore(config.state_url) as store:
        if earlier is None:
            went_on = store.fleet_run_id(fleet_id, target) is not None
        else:
            went_on = store.fleet_run_went_on(
                fleet_id, target, earlier["run_id"], earlier["changed"]
            )
        if went_on:
            raise exc
        if earlier is not None and isinstance(exc, TargetUnreachable):
            exc = _unreached(store, config, fleet_id, target, earlier["run_id"], exc)
        store.record_not_started(fleet_id, target, str(exc))
    if earlier is not None:
        raise exc
    return NOT_STARTED


def _unreached(
    store: StateStore,
    config: Config,
    fleet_id: str,
    target: str,
    run_id: str,
    exc: TargetUnreachable,
) -> TargetUnreachable:
    """A resume that could not reach its target's server (restarting, failing over,
    gone): it comes back (TryLater) every `slot_wait_seconds` while the target's circuit
    breaker is closed, and once more when it closes again after it opened; the error to
    keep once the breaker has counted more failed connections in a row than its
    `failures`, the run left interrupted for `fleet resend`."""
    # By the count, not by whether the breaker is still open: a slow connection attempt
    # can outlast a short cool-down.
    until, failures, _ = store.failed_in_a_row(breaker_key(config, target))
    if failures > config.main.circuit_breaker.failures:
        return TargetUnreachable(
            f"{exc}; run {run_id} stays interrupted: `aishell fleet resend {fleet_id}` "
            "once the server answers"
        )
    wait = config.main.fleet.slot_wait_seconds
    if until is not None:
        wait += max((until - datetime.now(UTC)).total_seconds(), 0.0)
    raise TryLater(wait, f"run {run_id} waits for its server: {exc}") from None


def _check_sent_with(config: Config, fleet: dict[str, Any], carried: Any) -> Registry:
    """This worker's tool catalog, which the task's run is given; ConfigError when its
    tools or agent config are not those the task was sent with: a job is run with what
    it was checked and sent with, or not at all."""
    agent = fleet["agent"]
    catalog = load_catalog(config)
    found = unlike(carried, sent_with(catalog, config.agent(agent)), agent)
    if found:
        shown = "; ".join(found[:4]) + (f"; {len(found) - 4} more" if len(found) > 4 else "")
        raise ConfigError(
            f"Not run: this worker's tools or agent config differ from those fleet job "
            f"{fleet['fleet_id']} was sent with ({shown}); give this worker the sender's "
            f"tools and config, then `aishell fleet resend {fleet['fleet_id']}`"
        )
    return catalog


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
    how: dict[str, Any] = {
        **fleet["options"],
        "approver": NonInteractive(why=f"fleet job {fleet_id} on a worker"),
        "catalog": catalog,
    }
    lost = partial(_slot_lost, config, fleet_id, target, server)
    with server_slot(config.state_url, server, settings.per_server_limit, lost) as held:
        if not held:
            raise later(f"{server} runs {settings.per_server_limit} already")
        try:
            # A dry run changes nothing and is not resumed: one whose worker stopped (or
            # that a delivery again finds going) is run anew, and the fleet job keeps
            # the new one.
            if earlier is not None and not fleet["options"].get("dry_run"):
                how.pop("dry_run", None)
                how.pop("safety_level", None)
                result = resume_run(config, earlier["run_id"], **how)
            else:
                result = run_job(
                    config, fleet["agent"], fleet["job"], target, fleet=(fleet_id, target), **how
                )
        except TargetLocked as exc:
            raise later(str(exc)) from None
    if result.status == INTERRUPTED:
        raise later(f"run {result.run_id} was interrupted ({result.error}); resumed next")
    return result.status


def _slot_lost(config: Config, fleet_id: str, target: str, server: str) -> None:
    """The run's slot on its server was let go under it (its session to the state store
    cut): another worker may take it, so the run stops as `aishell stop` stops it, and
    its task comes back once a slot is free."""
    logger.warning("fleet %s: %s: its slot on %s was lost; its run stops", fleet_id, target, server)
    try:
        with StateStore(config.state_url) as store:
            run_id = store.fleet_run_id(fleet_id, target)
            if run_id is not None:
                store.request_stop(run_id, f"fleet: its slot on {server} was lost")
    except StateError as exc:  # the store is gone too: the run meets that itself
        logger.warning("fleet %s: %s: its run could not be told to stop: %s", fleet_id, target, exc)


def queue_schedule(config: Config, name: str, how: str, stop: threading.Event) -> None:
    """A schedule's trigger under `schedule serve --fleet`: its job sent to the queue as
    a fleet job over the schedule's target, for the workers to run; nothing runs here.
    Runs a worker left behind are its queue's to deliver again, not the scheduler's."""
    if how == "recover":
        return
    with StateStore(config.state_url) as store:
        schedule = store.get_schedule(name)
    target = schedule["target"] or config.main.default_target
    options = {"max_run_seconds": schedule["options"].get("max_run_seconds")}
    try:
        refuse_relative_archives(schedule, get_agent(schedule["agent"]).spec.options)
        sent = fleet_run(config, schedule["agent"], schedule["job"], target, options=options)
    except (BrokerUnreachable, UsageError) as exc:
        # No run holds this failure: kept, logged and notified as a missed trigger.
        from aishell.scheduling.stuck import alert

        with StateStore(config.state_url) as store:
            alert(config, store, name, "missed", {"due": now(), "error": str(exc)})
        raise
    logger.info("schedule %s: sent to the queue as fleet job %s", name, sent["fleet_id"])


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
