"""Triggers that came due and whose run has not begun: none is lost in silence.

APScheduler moves a job's next fire time on as it hands the trigger to a thread, before
the trigger waits for its turn on the target or for the database's run lock. So the
same write of the job's row also says when that trigger was due (`due` among the job's
keyword arguments, MarkingExecutor), and the trigger clears it once its run began or it
was reported missed (settle). A trigger serve's stop caught before its run began, or a
serve killed meanwhile, leaves the mark: when serve starts again the trigger is due
again (take_up), and runs if it is within scheduler.misfire_grace_seconds of when it was
due, or is reported missed, as a trigger missed while nothing served is. So is a new
schedule's trigger that came due while nothing served (first_run).

Its lines are serve's (the `aishell.scheduling.serve` logger).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError

from aishell.errors import AishellError
from aishell.state.store import StateStore

# The job store of the schedules' jobs; serve's own jobs are in memory.
SCHEDULES = "default"
# Among a schedule job's keyword arguments: when its schedule was added (job_of).
ADDED = "added"

# By thread: when the trigger the thread fires was due (firing), for a run function that
# keys its work by the trigger (under --fleet, one fleet job per trigger).
_FIRING = threading.local()

logger = logging.getLogger("aishell.scheduling.serve")


class StoppedBeforeStart(AishellError):
    """serve stopped while a trigger waited to begin its run: not the run's failure."""


class MarkingExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """APScheduler's thread pool, marking a schedule's trigger due in its job before a
    thread takes it: the scheduler stores the job right after, with its next fire time
    moved on, so one write of the row says both. A trigger past its grace is not marked:
    it is reported missed, never run."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        due = run_times[-1]
        if job._jobstore_alias == SCHEDULES and not _past_grace(job, due):
            job._modify(kwargs={**job.kwargs, "due": due})
        super()._do_submit_job(job, run_times)


def _past_grace(job: Any, due: datetime) -> bool:
    grace = job.misfire_grace_time
    return grace is not None and datetime.now(UTC) - due > timedelta(seconds=grace)


def _instant(when: datetime) -> datetime:
    """A fire time in UTC, to compare: two times of the schedule's zone compare as wall
    clocks, fold ignored, and in the hour the clocks go back a later trigger's 02:30
    would come before an earlier one's 02:45."""
    return when.astimezone(UTC)


def _unmarked(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if key != "due"}


def settle(scheduler: Any, name: str, due: datetime) -> None:
    """The schedule's trigger due at `due` began its run or was reported missed: its mark
    goes (a later trigger's mark stays)."""
    job = scheduler.get_job(name, SCHEDULES)  # None: removed since, or the scheduler shut
    marked = None if job is None else job.kwargs.get("due")
    if marked is not None and _instant(marked) <= _instant(due):
        # Its schedule removed meanwhile: nothing is left to mark.
        with suppress(JobLookupError):
            scheduler.modify_job(name, SCHEDULES, kwargs=_unmarked(job.kwargs))


def take_up(scheduler: Any, store: StateStore) -> None:
    """On start, before the scheduler runs: each trigger the last serve marked due and
    never began (stopped, or killed) is due again at its time; one whose schedule ran
    since (its run is taken back as any left behind) or was paused is let go."""
    for job in scheduler.get_jobs(jobstore=SCHEDULES):
        due = job.kwargs.get("due")
        if due is None:
            continue
        rest = _unmarked(job.kwargs)
        if job.next_run_time is None or _began_since(store, job.id, due):
            scheduler.modify_job(job.id, SCHEDULES, kwargs=rest)
            continue
        again = min(due, job.next_run_time, key=_instant)
        scheduler.modify_job(job.id, SCHEDULES, kwargs=rest, next_run_time=again)
        logger.info(
            "schedule %s: its trigger due %s had not begun its run when serve ended; due again",
            job.id,
            f"{due.astimezone(UTC):%Y-%m-%d %H:%M %Z}",
        )


def _began_since(store: StateStore, name: str, due: datetime) -> bool:
    """Whether the trigger due at `due` began its run: a run of the schedule started
    since, or (served with --fleet) the trigger's fleet job, once its tasks all reached
    the queue. One whose send was cut short is due again: its fire finds the fleet job
    and sends what of it has not begun, never a second job (commands/fleet.py)."""
    if any(
        datetime.fromisoformat(run["started_at"]) >= due
        for run in store.schedule_runs(name, limit=5)
    ):
        return True
    sent = store.trigger_fleet_job(name, trigger_key(due))
    return sent is not None and sent["sent_at"] is not None


def trigger_key(due: datetime) -> str:
    """A trigger's due time as its fleet job keeps it: the instant, in UTC."""
    return due.astimezone(UTC).isoformat(timespec="seconds")


@contextmanager
def firing(due: datetime | None) -> Iterator[None]:
    """While the thread fires the trigger due at `due` (None: not known): firing_due()."""
    _FIRING.due = due
    try:
        yield
    finally:
        _FIRING.due = None


def firing_due() -> datetime | None:
    """When the trigger this thread fires was due; None outside a trigger, or unknown."""
    due: datetime | None = getattr(_FIRING, "due", None)
    return due


def stopped_before_start(name: str, how: str) -> None:
    """The line of a trigger serve's stop caught before its run began."""
    if how == "recover":
        logger.info(
            "schedule %s: stopped before taking back the runs left behind (serve is "
            "stopping); serve takes them back when it starts again, or the next trigger does",
            name,
        )
        return
    logger.info(
        "schedule %s: stopped before its run began (serve is stopping); it runs when serve "
        "starts again within scheduler.misfire_grace_seconds of when it was due, and is "
        "reported missed after that",
        name,
    )


def job_of(scheduler: Any, job: Any, schedule: dict[str, Any]) -> Any:
    """The schedule's job; None when the job was that of a schedule of its name removed
    since (added again while nothing served: its pending trigger, missed or marked due,
    was never the new schedule's), which is removed. A job that does not say which
    schedule it is of (stored before jobs said so) is taken as this one's."""
    recorded = job.kwargs.get(ADDED)
    if recorded == str(schedule["created_at"]):
        return job
    if recorded is None:
        kwargs = {**job.kwargs, ADDED: str(schedule["created_at"])}
        return scheduler.modify_job(job.id, SCHEDULES, kwargs=kwargs)
    scheduler.remove_job(job.id, SCHEDULES)
    return None


def first_run(schedule: dict[str, Any], wanted: Any, grace_seconds: int) -> dict[str, Any]:
    """A new job's first fire, counted from when the schedule was added: one added while
    nothing served and due since runs now if its newest trigger is within the misfire
    grace, and is reported missed otherwise, as a known job's trigger missed while nothing
    served is. A paused schedule's job is added paused: a fire in the past would run
    before the pause."""
    if schedule["paused"]:
        return {"next_run_time": None}
    now = datetime.now(UTC)
    try:
        added = datetime.fromisoformat(str(schedule["created_at"])).astimezone(UTC)
    except ValueError:
        added = now
    start = max(added, now - timedelta(seconds=grace_seconds))
    first = wanted.get_next_fire_time(None, start)
    if added < start and (first is None or first > now):
        first = _newest_missed(wanted, added, start) or first
    return {} if first is None else {"next_run_time": first}


def _newest_missed(wanted: Any, added: datetime, start: datetime) -> datetime | None:
    """A fire time between `added` and `start`, among the newest: looking back from
    `start` in windows that double, so that APScheduler walks from it to the newest in
    a few steps however long ago the schedule was added."""
    window = timedelta(minutes=1)
    while True:
        since = max(added, start - window)
        fire: datetime | None = wanted.get_next_fire_time(None, since)
        if fire is not None and fire < start:
            return fire
        if since == added:
            return None
        window *= 2
