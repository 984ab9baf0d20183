"""Times of day a policy speaks of: whether a moment is in allowed hours, when the
allowed period around it ends, hours as a reason says them (a span of time in
units.age_words), and why a step waits for the maintenance window."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aishell.config.models import WEEKDAYS, MaintenanceWindow
from aishell.risk import RiskLevel
from aishell.units import age_words


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


def window_defer(
    constraint: MaintenanceWindow,
    now: datetime | None,
    risk: RiskLevel,
    expected: tuple[float | None, str],
) -> str | None:
    """Why a step above low risk as judged (`risk`: a low tool's step running user code
    is high) waits for the window, if it does; `expected`: how long it is expected to
    take, and from what."""
    if risk.rank <= RiskLevel.LOW.rank or now is None:
        return None
    zone = ZoneInfo(constraint.timezone)
    local = now.astimezone(zone)
    hours, days = set(constraint.allowed_hours), set(constraint.days)
    described = f"hours {hours_text(constraint.allowed_hours)} {constraint.timezone}"
    if not allowed_at(local, hours, days):
        return (
            f"outside the maintenance window ({described}; it is {local:%a %H:%M}): "
            f"{risk.value}-risk steps wait for the window"
        )
    closes = window_end(local, hours, days)
    seconds, basis = expected
    if closes is None or seconds is None:
        return None
    left = seconds_between(local, closes)
    if seconds > left:
        return (
            f"expected to take {age_words(seconds)} ({basis}), "
            f"but the maintenance window closes at {closes:%H:%M} {constraint.timezone} "
            f"(in {age_words(left)})"
        )
    return None
