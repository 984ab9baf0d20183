"""When each schedule runs next, as `schedule list`, `doctor` and the fleet view say it:
from the scheduler's own job table when it holds the schedule, else from its cron."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, inspect

from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.scheduling.crontab import CrontabTrigger
from aishell.scheduling.jobstore import SignedJobStore
from aishell.scheduling.serve import JOB_TABLE, next_fire, trigger
from aishell.state.signing import load_key


def next_runs(
    config: Config, schedules: list[dict[str, Any]] | None = None
) -> dict[str, datetime | None]:
    """Each job's next fire time as the scheduler holds it (None: paused or never).
    Only jobs whose trigger reads the cron as crontab does count (one stored before is
    replaced when `serve` next starts), and with `schedules`, only those whose trigger
    is still the schedule's cron and time zone. A job whose row this home's key did not
    sign is not read (jobstore.py)."""
    engine = create_engine(config.state_url)
    try:
        # A store nothing has served has no job table, and the job store's start would
        # make it: a write, which waits out another process's write transaction.
        served = inspect(engine).has_table(JOB_TABLE)
    except Exception:  # an unreadable store: the schedules' own triggers say when
        served = False
    if not served:
        engine.dispose()
        return {}
    # Only jobs this home's key signed are read: a listing never unpickles what anyone
    # who can write to the store wrote there; without the key, the crons say when.
    store = SignedJobStore(
        load_key(config.home, create=False), engine=engine, tablename=JOB_TABLE, removes=False
    )
    try:
        store.start(None, "default")
        jobs = [job for job in store.get_all_jobs() if isinstance(job.trigger, CrontabTrigger)]
    except Exception:  # no table yet: nothing has served this store
        return {}
    finally:
        store.shutdown()
    held = {job.id: job for job in jobs}
    if schedules is not None:
        current = {s["name"]: _trigger_text(s["cron"], s["timezone"]) for s in schedules}
        held = {name: job for name, job in held.items() if str(job.trigger) == current.get(name)}
    return {name: job.next_run_time for name, job in held.items()}


def upcoming(
    schedule: dict[str, Any], held: dict[str, datetime | None]
) -> tuple[datetime | None, str | None]:
    """When a schedule runs next (None: paused or never), from `held` (next_runs) when
    the scheduler holds it, else as its trigger says; and why it never runs, if so."""
    at, cron_error = None, None
    if schedule["name"] in held:
        at = held[schedule["name"]]
    else:  # not served yet
        try:
            at = next_fire(schedule["cron"], schedule["timezone"])
        except UsageError as exc:  # stored before --cron meant crontab
            cron_error = str(exc)
    return (None if schedule["paused"] else at), cron_error


def _trigger_text(cron: str, timezone: str) -> str | None:
    try:
        return str(trigger(cron, timezone))
    except UsageError:
        return None
