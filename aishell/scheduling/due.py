"""Triggers that came due while nothing served: a new schedule's too (first_run), as
a trigger of a schedule serve already knew is, runs on start when its newest is within
scheduler.misfire_grace_seconds and is reported missed otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


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
