"""What a scheduler owns: the runs it started and left behind when its process died
(taken back before new work on their database), a trigger that fails before its run
exists (stored as a failed run and notified like any failure), and the bounded wait for
a database another run holds, which the scheduler's stop ends as no failure of the run.
What it does is logged to this module's logger."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aishell.commands.runs import resume_run
from aishell.config.models import Config
from aishell.dialects import family
from aishell.errors import AishellError, TargetLocked
from aishell.executor import RunResult
from aishell.plan.model import Plan
from aishell.policy.approvers import Approver
from aishell.scheduling import notify
from aishell.scheduling.due import StoppedBeforeStart
from aishell.state.store import StateStore, signed_store
from aishell.state.values import new_run_id

T = TypeVar("T")
# Statuses a taken-back run may end in that leave its database's new work waiting.
STILL_UNFINISHED = ("interrupted", "out_of_window")

logger = logging.getLogger(__name__)


def take_back(
    config: Config,
    target: str | None,
    approver: Approver,
    stop: threading.Event,
    graced: bool = False,
) -> RunResult | None:
    """Runs a schedule started (on `target`, or any) still stored running while their
    process is gone: each marked interrupted, then resumed, oldest first. The last
    resumed run's result; one that cannot be resumed raises, naming the run, so that no
    new work starts on its database. `graced` (serve's take-back as it starts, at no
    time of the schedule's): a run that began more than scheduler.misfire_grace_seconds
    ago is only marked, as a trigger that late would not start (late_resume)."""
    with StateStore(config.state_url) as store:
        left = [
            run
            for run in store.orphaned_runs(target)
            if store.mark_interrupted(
                run, f"the process running it (pid {run['pid']} on {run['hostname']}) ended"
            )
        ]
    last = None
    for run in left:
        name, run_id = run["schedule"], run["run_id"]
        logger.warning(
            "schedule %s: run %s was left running by pid %s on %s, which is gone; "
            "marked interrupted",
            name,
            run_id,
            run["pid"],
            run["hostname"],
            extra={"run_id": run_id},
        )
        if run["dry_run"]:
            continue  # a preview has nothing to finish
        if graced and late_resume(config, run):
            continue
        logger.info("schedule %s: resuming run %s", name, run_id, extra={"run_id": run_id})
        limit = _run_limit(config, name)
        try:
            last = waiting_for_lock(
                config,
                partial(resume_run, config, run_id, approver=approver, max_run_seconds=limit),
                f"schedule {name}",
                stop,
            )
        except StoppedBeforeStart:
            raise
        except AishellError as exc:
            exc.args = (f"run {run_id}, left by a scheduler that ended, was not resumed: {exc}",)
            raise
        logger.info("schedule %s: run %s %s", name, run_id, last.status, extra={"run_id": run_id})
        notify_run(config, last.to_dict(), name, "recover")
        if last.status in STILL_UNFINISHED:
            return last
    return last


def late_resume(config: Config, run: dict[str, Any]) -> bool:
    """Whether a run left behind began longer than scheduler.misfire_grace_seconds ago:
    unattended, it is not resumed then, as its trigger would not have started that late
    (said in the log); a person's `aishell resume`, or the schedule's next trigger, goes
    on with it."""
    grace = config.main.scheduler.misfire_grace_seconds
    began = datetime.fromisoformat(run["created_at"])
    if datetime.now(UTC) - began <= timedelta(seconds=grace):
        return False
    name, run_id = run["schedule"], run["run_id"]
    logger.warning(
        "schedule %s: run %s began at %s, more than scheduler.misfire_grace_seconds (%s s) "
        "ago: not resumed unattended; `aishell resume %s` goes on with it, or the "
        "schedule's next trigger does",
        name,
        run_id,
        run["created_at"],
        grace,
        run_id,
        extra={"run_id": run_id},
    )
    return True


def _run_limit(config: Config, name: str) -> float | None:
    with signed_store(config) as store:
        try:
            limit = store.get_schedule(name)["options"].get("max_run_seconds")
        except AishellError:
            # Removed since, or changed in the store since it was added: the config's limit.
            return None
    return None if limit is None else float(limit)


def waiting_for_lock(
    config: Config,
    call: Callable[[], T],
    who: str,
    stop: threading.Event,
) -> T:
    """call(), again while another run holds the database's lock, for at most the
    scheduler's stuck_after_seconds (a run holding it longer is reported stuck anyway);
    then the lock's error is raised. `stop` set (the scheduler stopping) ends the wait
    with StoppedBeforeStart: the run never began, and nothing of it failed."""
    bound = config.main.scheduler.stuck_after_seconds
    deadline = time.monotonic() + bound
    pause, said = 0.2, False
    while True:
        try:
            return call()
        except TargetLocked as exc:
            left = deadline - time.monotonic()
            if left <= 0 and not stop.is_set():
                raise
            if not said and not stop.is_set():
                logger.info("%s: waiting for the database, at most %ss: %s", who, bound, exc)
                said = True
            if stop.is_set() or stop.wait(min(pause, left)):
                stopped = f"{who}: serve stopped while it waited for the database"
                raise StoppedBeforeStart(stopped) from exc
            pause = min(pause * 2, 5.0)


def failed_trigger(config: Config, schedule: dict[str, Any], how: str, reason: str) -> None:
    """A trigger that failed before its run existed, stored as a run that failed (no
    steps, its reason as one line) and sent to the notifiers like any failure."""
    name, agent, target = schedule["name"], schedule["agent"], schedule["target"]
    reason = " ".join(reason.split()) or "no reason given"
    run_id = new_run_id()
    dialect = _dialect(config, target)
    plan = Plan(agent, target, dialect, schedule["job"], ())
    with signed_store(config) as store:
        store.create_run(
            run_id=run_id,
            agent=agent,
            target=target,
            dialect=dialect,
            job=schedule["job"],
            plan=plan.to_dict(),
            plan_hash=plan.hash,
            tool_fingerprints={},
            dry_run=bool(schedule["options"].get("dry_run")),
            safety_level=schedule["options"].get("safety_level") or "strict",
            step_rows=[],
        )
        store.record_schedule_run(run_id, name, how)
        store.finish_run(run_id, "failed", reason)
        run = store.get_run(run_id)
    logger.error(
        "schedule %s: run %s failed before it started: %s",
        name,
        run_id,
        reason,
        extra={"run_id": run_id},
    )
    notify_run(config, run, name, how)


def _dialect(config: Config, target: str) -> str:
    """The target's dialect as its URL names it; 'unknown' for one no longer configured."""
    try:
        backend = make_url(config.main.targets[target].url).get_backend_name()
    except (KeyError, ArgumentError, ValueError):
        return "unknown"
    return family(backend)


def notify_run(config: Config, run: dict[str, Any], name: str, how: str) -> None:
    """A scheduled run's outcome to the notifiers; a notifier's failure is an event of
    the run, never a change of its outcome."""
    message = notify.summary(run, name, how)
    failures = notify.send(config.main.notifications, message)
    if failures:
        with StateStore(config.state_url) as store:
            store.record_event(run["run_id"], None, "notify_failed", {"failures": failures})
