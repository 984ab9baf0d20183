"""Times of day a policy speaks of: whether a moment is in allowed hours, when the
allowed period around it ends, and hours and durations as a reason says them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from aishell.config.models import WEEKDAYS


def allowed_at(local: datetime, hours: set[int], days: Collection[str]) -> bool:
    return local.hour in hours and WEEKDAYS[local.weekday()] in days


def window_end(local: datetime, hours: set[int], days: Collection[str]) -> datetime | None:
    """When the allowed period that contains `local` ends; None if it never does."""
    moment = local.replace(minute=0, second=0, microsecond=0)
    for _ in range(24 * 7 + 1):
        moment += timedelta(hours=1)
        if not allowed_at(moment, hours, days):
            return moment
    return None


def hours_text(hours: Sequence[int]) -> str:
    """[0, 1, 2, 22, 23] -> '00-03,22-24'."""
    spans: list[list[int]] = []
    for hour in sorted(set(hours)):
        if spans and hour == spans[-1][1]:
            spans[-1][1] = hour + 1
        else:
            spans.append([hour, hour + 1])
    return ",".join(f"{a:02d}-{b:02d}" for a, b in spans)


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"
