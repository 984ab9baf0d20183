"""Times of day a policy speaks of: whether a moment is in allowed hours, when the
allowed period around it ends, and hours as a reason says them (a span of time in
units.age_words)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from aishell.config.models import WEEKDAYS


def allowed_at(local: datetime, hours: set[int], days: Collection[str]) -> bool:
    return local.hour in hours and WEEKDAYS[local.weekday()] in days


def window_end(local: datetime, hours: set[int], days: Collection[str]) -> datetime | None:
    """When the allowed period that contains `local` ends; None if it never does. Hours
    are stepped in real time (UTC), read on the local clock: a night the clocks change
    has an hour less or more, and arithmetic on a local time would count wall hours."""
    zone = local.tzinfo
    moment = local.replace(minute=0, second=0, microsecond=0)
    if zone is not None:
        moment = moment.astimezone(UTC)
    for _ in range(24 * 7 + 2):
        moment += timedelta(hours=1)
        seen = moment.astimezone(zone) if zone is not None else moment
        if not allowed_at(seen, hours, days):
            return seen
    return None


def seconds_between(earlier: datetime, later: datetime) -> float:
    """Real seconds between two aware times (of one zone, Python subtracts wall clocks)."""
    return (later.astimezone(UTC) - earlier.astimezone(UTC)).total_seconds()


def hours_text(hours: Sequence[int]) -> str:
    """[0, 1, 2, 22, 23] -> '00-03,22-24'."""
    spans: list[list[int]] = []
    for hour in sorted(set(hours)):
        if spans and hour == spans[-1][1]:
            spans[-1][1] = hour + 1
        else:
            spans.append([hour, hour + 1])
    return ",".join(f"{a:02d}-{b:02d}" for a, b in spans)
