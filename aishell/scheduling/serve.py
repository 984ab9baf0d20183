"""`aishell schedule serve`: APScheduler over the schedules in the state store.

The schedules table (written by `aishell schedule add/remove/pause/resume`) says what
should run; APScheduler's own job table, in the same state store and written only by
the serving process, remembers when each schedule next fires, so a trigger missed
while nothing served runs once on start (coalesced) if it is within the misfire grace
time, and is reported missed otherwise; so does a trigger whose run had not begun when
serve ended (due.py). Each schedule runs at most one instance at a time. One `serve` per
state store: the one holding the scheduler's lock (leadership.py); a standby waits for it.

Every line it logs goes to this module's logger (under `aishell`); where the lines go
and how they look, the command that serves decides.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine

from aishell.config.models import Config
from aishell.config.zones import zone_problem
from aishell.errors import StateTampered, UsageError
from aishell.executor.stopping import stop_all, stops_with
from aishell.scheduling import alerts
from aishell.scheduling.configwatch import ConfigUnreadable, ConfigWatch, Refuse, refused
from aishell.scheduling.crontab import CrontabError, CrontabTrigger
from aishell.scheduling.due import (
    ADDED,
    MarkingExecutor,
    StoppedBeforeStart,
    firing,
    first_run,
    job_of,
    settle,
    stopped_before_start,
    take_up,
)
from aishell.scheduling.events import HEARD, RECONCILE, RECOVER_PREFIX, listener
from aishell.scheduling.jobstore import SignedJobStore
from aishell.scheduling.leadership import Leadership
from aishell.scheduling.stopsignals import stopped_by_signals
from aishell.scheduling.stuck import alert, refuse_tampered, report_stuck
from aishell.state.signing import load_key
from aishell.state.store import StateStore, signed_store
from aishell.units import took

JOB_TABLE = "apscheduler_jobs"
# How often the serving process reads the schedules table for changes.
RECONCILE_SECONDS = 2.0
# After SIGTERM, how long serve waits for running steps to end resumably before it
# exits anyway (well inside systemd's default stop timeout of 90 s); what it leaves is
# taken back when it starts again.
STOP_SECONDS = 20.0
# What a scheduled run stopped by serve's own stop is interrupted by.
SCHEDULER_STOP = "the scheduler's stop"

logger = logging.getLogger(__name__)


def trigger(cron: str, timezone: str) -> CrontabTrigger:
    """A --cron as crontab(5) reads it (see aishell.scheduling.crontab), in a time zone."""
    check_timezone(timezone, new=False)
    return CrontabTrigger(cron, timezone)


def next_fire(cron: str, timezone: str, after: datetime | None = None) -> datetime | None:
    """When the schedule next fires, at or after `after` (default: now)."""
    fire: datetime | None = trigger(cron, timezone).get_next_fire_time(
        None, after or datetime.now(UTC)
    )
    return fire


def first_fire(cron: str, timezone: str, after: datetime | None = None) -> datetime:
    """When a new schedule first fires; one that can never fire is refused now, not
    found silent months later."""
    first = next_fire(cron, timezone, after)
    if first is None:
        raise CrontabError(
            f"--cron {cron!r}: the schedule {cron!r} never fires: no date matches its day "
            "of month and month fields together (31 February, say); fix the day or month"
        )
    return first


def check_timezone(timezone: str, new: bool = True) -> None:
    """An IANA time zone name of a place; anything else (an empty name too) is refused,
    and the machine's `localtime` in a `new` schedule (one stored before is served)."""
    problem = zone_problem(timezone, machine_ok=not new)
    if problem:
        raise UsageError(f"--timezone {timezone!r}: {problem}")


Run = Callable[[Config, str, str, threading.Event], Any]


@dataclass
class _Serving:
    """What the job function needs; APScheduler stores jobs by a textual reference."""

    config: Config
    run: Run
    stop: threading.Event
    leadership: Leadership
    scheduler: BackgroundScheduler
    refused: set[str] = field(default_factory=set)  # schedules said to be not served
    # One trigger at a time per target: schedules on one database run one after the other.
    turns: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    # The triggers going on, so that a stop waits for them (at most STOP_SECONDS).
    active: set[str] = field(default_factory=set)
    idle: threading.Condition = field(default_factory=threading.Condition)
    # Reads the config again when its files change (configwatch.py).
    watch: ConfigWatch | None = None
    refuse: Refuse | None = None


_serving: _Serving | None = None


def fire(
    name: str, how: str = "cron", due: datetime | None = None, added: str | None = None
) -> bool:
    """The job APScheduler runs for a schedule (referenced as aishell.scheduling.serve:fire);
    `recover`: take back the runs a scheduler that ended left on its target; `due`: when
    the trigger was due; `added`: when its schedule was added (due.py). Whatever goes
    wrong is one line of the log: run_schedule has stored and notified it. False when
    the trigger did not begin its run (serve stopped first, or lost its lock): it stays
    marked due, for serve's next start."""
    serving = _serving
    if serving is None:
        raise RuntimeError("no scheduler is serving in this process")
    with serving.idle:
        serving.active.add(f"{name} ({how})")
    try:
        with firing(due):
            began = _fire(serving, name, how)
        if began and due is not None:
            settle(serving.scheduler, name, due)
        return began
    finally:
        with serving.idle:
            serving.active.discard(f"{name} ({how})")
            serving.idle.notify_all()


def _fire(serving: _Serving, name: str, how: str) -> bool:
    try:
        with _turn(serving, name) as mine:
            if not mine:
                raise StoppedBeforeStart("serve stopped while the trigger waited for its turn")
            if not serving.leadership.holds():  # another scheduler may serve by now
                logger.error("schedule %s: not started: the scheduler's lock is lost", name)
                return False
            if how == "cron":
                logger.info("schedule %s: started", name)
            else:
                logger.info("schedule %s: taking back runs left behind", name)
            if serving.watch is not None:
                try:
                    serving.config = serving.watch.current()
                except ConfigUnreadable as exc:
                    refused(serving.refuse, serving.config, (name, how), str(exc))
                    return True
            with stops_with(serving.stop, SCHEDULER_STOP):
                serving.run(serving.config, name, how, serving.stop)
    except StoppedBeforeStart:
        stopped_before_start(name, how)
        return False
    except StateTampered as exc:  # its schedule changed in the store since it was added
        refuse_tampered(serving.config, name, str(exc))
    except Exception as exc:  # an unattended trigger never ends unheard
        logger.error("schedule %s: failed: %s", name, " ".join(str(exc).split()))
    return True


@contextmanager
def _turn(serving: _Serving, name: str) -> Iterator[bool]:
    """Wait for the other triggers on the schedule's target to end (at most the
    scheduler's stuck_after_seconds; past it the run lock says who holds the database);
    False when serve stops meanwhile. StateTampered when the schedule's row is not what
    the home's key signed: no trigger of it runs."""
    with _store(serving.config) as store:
        target = store.get_schedule(name)["target"]
    with serving.guard:
        turn = serving.turns.setdefault(target, threading.Lock())
    deadline = time.monotonic() + serving.config.main.scheduler.stuck_after_seconds
    got = False
    while not got and time.monotonic() < deadline:
        if serving.stop.is_set():
            yield False
            return
        got = turn.acquire(timeout=0.2)
    try:
        # The turn may come because serve's stop just ended the run before it: a stopping
        # serve starts nothing new.
        yield not serving.stop.is_set()
    finally:
        if got:
            turn.release()


def _scheduler(config: Config) -> BackgroundScheduler:
    """Schedules in the state store's job table, signed with the home's key (jobstore.py);
    one run per schedule at a time, and a trigger missed by more than the grace time
    reported instead of run late."""
    jobs = SignedJobStore(
        load_key(config.home),
        engine=create_engine(config.state_url),
        tablename=JOB_TABLE,
        removes=True,
    )
    scheduler = BackgroundScheduler(
        jobstores={
            "default": jobs,
            "internal": MemoryJobStore(),
        },
        executors={"default": MarkingExecutor()},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": config.main.scheduler.misfire_grace_seconds,
        },
        timezone=UTC,
    )
    scheduler.add_listener(listener(config, scheduler), HEARD)
    return scheduler


def serve(
    config: Config,
    run: Run,
    stop: threading.Event | None = None,
    standby: bool = False,
    reload: Callable[[], Config] | None = None,
    refuse: Refuse | None = None,
) -> list[str]:
    """Serve until SIGTERM or SIGINT (or `stop` is set), then ask running runs to end
    resumably, wait for them at most STOP_SECONDS and return the triggers still going
    (their runs are taken back when serve starts again). Runs a scheduler left
    running when it ended are taken back first. With `standby`, wait for the scheduler
    that serves the store to end instead of refusing to start. `reload` reads the
    config again: each trigger runs on what its files hold then, and files that no
    longer load run none: `refuse` stores and notifies each such trigger."""
    stop = stop or threading.Event()
    with stopped_by_signals(stop), _store(config) as store:
        leadership = Leadership(store)
        try:
            if not leadership.take(store, standby, stop):
                return []
            left = _serve(config, run, stop, store, leadership, (reload, refuse))
        finally:
            leadership.release(store)
    leadership.check_kept()
    return left


def _serve(
    config: Config,
    run: Run,
    stop: threading.Event,
    store: StateStore,
    leadership: Leadership,
    reading: tuple[Callable[[], Config] | None, Refuse | None] = (None, None),
) -> list[str]:
    global _serving
    try:
        reload, refuse = reading
        watch = ConfigWatch(config, reload) if reload is not None else None
        scheduler = _scheduler(config)
        _serving = _Serving(config, run, stop, leadership, scheduler, watch=watch, refuse=refuse)
        scheduler.start(paused=True)
        reconcile(scheduler, config, store)
        take_up(scheduler, store)
        scheduler.add_job(
            reconcile,
            "interval",
            seconds=RECONCILE_SECONDS,
            args=[scheduler, config],
            jobstore="internal",
            id=RECONCILE,
        )
        _monitor(scheduler, config)
        _take_back_on_start(scheduler, store)
        where = config.state_location  # its password hidden, in the query too
        logger.info("serving %d schedule(s) from %s", len(store.list_schedules()), where)
        leadership.watch(stop)
        scheduler.resume()
        try:
            stop.wait()
        finally:
            logger.info(
                "stopping: running steps end resumably (waiting at most %s)",
                took(STOP_SECONDS, None),
            )
            scheduler.pause()  # no new run from here on
            _stop_running(store)
            left = _wait_for_triggers(_serving)  # a trigger ending settles its job's mark
            scheduler.shutdown(wait=False)
            logger.info("stopped")
        return left
    finally:
        _serving = None


def _monitor(scheduler: BackgroundScheduler, config: Config) -> None:
    """The alert rules, evaluated every monitoring.interval_seconds when there are any."""
    monitoring = config.main.monitoring
    if monitoring.enabled and monitoring.alerts:
        scheduler.add_job(
            alerts.evaluate_now,
            "interval",
            seconds=monitoring.interval_seconds,
            args=[config],
            jobstore="internal",
            id=alerts.JOB_ID,
            next_run_time=datetime.now(UTC),
        )


def _take_back_on_start(scheduler: BackgroundScheduler, store: StateStore) -> None:
    """A trigger now for each target that has runs a scheduler started and left running
    when its process ended: they are marked interrupted and resumed before new work."""
    targets = {run["target"]: run["schedule"] for run in store.orphaned_runs()}
    for name in targets.values():
        scheduler.add_job(
            "aishell.scheduling.serve:fire",
            args=[name, "recover"],
            id=f"{RECOVER_PREFIX}{name}",
            jobstore="internal",
        )


def _wait_for_triggers(serving: _Serving) -> list[str]:
    deadline = time.monotonic() + STOP_SECONDS
    with serving.idle:
        while serving.active and time.monotonic() < deadline:
            serving.idle.wait(max(0.0, min(0.5, deadline - time.monotonic())))
        left = sorted(serving.active)
    if left:
        # Under --fleet a trigger runs nothing here: what is left is a send to the queue
        # (a broker that took the tasks and did not answer), due again (due.py).
        logger.warning(
            "stopping: %s still running after %s; when serve starts again, a run it left "
            "interrupted is resumed, and a trigger whose send to the fleet's queue had not "
            "ended sends again what of its fleet job has not begun (never a second job)",
            ", ".join(left),
            took(STOP_SECONDS, None),
        )
    return left


def reconcile(
    scheduler: BackgroundScheduler, config: Config, store: StateStore | None = None
) -> None:
    """Make APScheduler's jobs match the schedules table, keeping each job's next fire
    time (a missed trigger must survive a restart); report runs that are stuck."""
    if store is None:
        with _store(config) as own:
            reconcile(scheduler, config, own)
        return
    report_stuck(config, store)
    wanted = {s["name"]: s for s in store.list_schedules()}
    jobs = {job.id: job for job in scheduler.get_jobs(jobstore="default")}
    for name in jobs:
        if name not in wanted:
            scheduler.remove_job(name, jobstore="default")
            logger.info("schedule %s: removed", name)
    for name, schedule in wanted.items():
        if schedule["seal_error"]:  # changed in the store since it was added: runs nothing
            _refused(scheduler, (config, store), name, name in jobs, schedule["seal_error"])
            continue
        try:
            wanted_trigger = trigger(schedule["cron"], schedule["timezone"])
        except UsageError as exc:
            _not_served(scheduler, name, name in jobs, str(exc))
            continue
        job = jobs.get(name)
        if job is not None:
            job = job_of(scheduler, job, schedule)
        if job is None:
            job = scheduler.add_job(
                "aishell.scheduling.serve:fire",
                wanted_trigger,
                args=[name],
                kwargs={ADDED: str(schedule["created_at"])},  # which schedule: job_of
                id=name,
                name=name,
                jobstore="default",
                **first_run(schedule, wanted_trigger, config.main.scheduler.misfire_grace_seconds),
            )
            logger.info("schedule %s: added, %s", name, _first_said(_next_run(job)))
        elif str(job.trigger) != str(wanted_trigger):
            job = scheduler.reschedule_job(name, jobstore="default", trigger=wanted_trigger)
            logger.info("schedule %s: changed, next run %s", name, _when(_next_run(job)))
        if schedule["paused"] and _next_run(job) is not None:
            scheduler.pause_job(name, jobstore="default")
            logger.info("schedule %s: paused", name)
        elif not schedule["paused"] and _next_run(job) is None:
            job = scheduler.resume_job(name, jobstore="default")
            logger.info("schedule %s: resumed", name)


def _store(config: Config) -> StateStore:
    """The state store with the home's key: each schedule is checked against its seal."""
    return signed_store(config)


def _first_said(first: datetime | None) -> str:
    """A new job's first fire as its line says it: one in the past is due now."""
    if first is not None and first <= datetime.now(UTC):
        return f"due since {_when(first)}"
    return f"next run {_when(first)}"


def _next_run(job: Any) -> Any:
    """A job's next fire time; None for one added while the scheduler stops (APScheduler
    leaves such a pending job without it)."""
    return getattr(job, "next_run_time", None)


def _not_served(scheduler: BackgroundScheduler, name: str, has_job: bool, why: str) -> None:
    """A stored schedule whose cron is no longer taken (six fields, from before --cron
    meant crontab) never fires with a meaning it no longer has; said once per serve."""
    if has_job:
        scheduler.remove_job(name, jobstore="default")
    refused = _serving.refused if _serving is not None else set()
    if name not in refused:
        refused.add(name)
        logger.warning("schedule %s: not served: %s; remove it and add it again", name, why)


def _refused(
    scheduler: BackgroundScheduler,
    where: tuple[Config, StateStore],
    name: str,
    has_job: bool,
    why: str,
) -> None:
    """A schedule whose row is not what the home's key signed (changed in the store since
    it was added, or stored by an older aishell) never fires; reported once per serve:
    kept for `schedule list`, logged and notified."""
    if has_job:
        scheduler.remove_job(name, jobstore="default")
    refused = _serving.refused if _serving is not None else set()
    if name not in refused:
        refused.add(name)
        alert(*where, name, "refused", {"error": why})


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M %Z}"


def _stop_running(store: StateStore) -> None:
    """Stop the runs this process started: their running statements are cancelled (and
    cut off after the target's read_timeout_seconds if the server answers neither), so
    they end interrupted within the bound, and `aishell resume` (or the next trigger)
    goes on."""
    stop_all(SCHEDULER_STOP)
    for run in store.list_runs(status="running", limit=100):
        if run["pid"] == os.getpid() and run["hostname"] == socket.gethostname():
            store.request_stop(run["run_id"], "aishell schedule serve (stopping)")
            logger.info("run %s: asked to stop", run["run_id"])
