"""crontab(5) schedules, read and fired as Debian's cron reads and fires them.

Five fields, minute hour day-of-month month day-of-week: `*`, numbers, ranges `a-b`,
steps `*/n` and `a-b/n`, comma lists of these, month and weekday names (jan..dec,
sun..sat, any case), 0 and 7 both Sunday, and the macros @yearly @annually @monthly
@weekly @daily @midnight @hourly. When both day fields are restricted (neither starts
with `*`) a day matches if either matches, as cron has it. Anything else is refused
with one line naming the field and what it takes; where cron would silently accept a
line that never matches (a range written backwards, trailing characters it skips),
aishell refuses it instead.

Times are the wall clock of the schedule's time zone, with cron's rule for clock
changes of less than three hours: a job at a fixed time (neither minute nor hour
starts with `*`) that falls in skipped time runs when the clock has jumped, and runs
once in repeated time; other jobs follow the clock as it reads.

The trigger is pickled into APScheduler's job table by its class path,
`aishell.scheduling.crontab:CrontabTrigger`, and its state is the expression and the time zone
name only: keep the class at that path, or stored jobs cannot be read back.
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from aishell.errors import UsageError

# The schedules table's column holds at most this much.
MAX_LENGTH = 128
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FIVE = "five fields: minute hour day-of-month month day-of-week"
FORMS = "as *, n, a-b, */n, a-b/n or a comma list of these"
# The most days each month has (February in a leap year).
LONGEST = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# cron's special handling of clock changes covers changes shorter than this.
CLOCK_CHANGE = timedelta(hours=3)
# Every weekday of every month-day recurs within this many years (the calendar's cycle).
SEARCH_YEARS = 400
_ITEM = re.compile(
    r"(?:(?P<star>\*)|(?P<first>[0-9A-Za-z]+)(?:-(?P<last>[0-9A-Za-z]+))?)"
    r"(?:/(?P<step>[0-9A-Za-z]*))?"
)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    allowed: str = ""

    def takes(self) -> str:
        return f"{self.name} takes {self.allowed or f'{self.low}-{self.high}'}"


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, "1-12 or jan-dec"),
    _Field("day of week", 0, 7, DAY_NAMES, "0-7 (0 and 7 are Sunday) or sun-sat"),
)


class CrontabError(UsageError):
    """A --cron that crontab would refuse, or that could never run."""


@dataclass(frozen=True)
class Crontab:
    """One parsed expression: the values each field matches (weekdays 0-6, Sunday 0)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    either_day: bool  # both day fields restricted: a day matches if either does
    fixed_time: bool  # neither minute nor hour starts with '*'

    def matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_month = day.day in self.days
        by_week = (day.isoweekday() % 7) in self.weekdays
        return (by_month or by_week) if self.either_day else (by_month and by_week)

    def never_fires(self) -> bool:
        """No date ever matches: only possible when both day fields must match and no
        month of the expression has any of its days (31 February)."""
        if self.either_day:
            return False
        return not any(day <= LONGEST[month - 1] for month in self.months for day in self.days)

    def next_fire(self, start: datetime, zone: ZoneInfo) -> datetime | None:
        """The first instant at or after `start` (aware) at which cron would run it."""
        if self.never_fires():
            return None
        steady = self._steady_next(start, zone)
        return steady if steady is not None else self._next_near_change(start, zone)

    def _steady_next(self, start: datetime, zone: ZoneInfo) -> datetime | None:
        """The next fire found field by field, when the clock changes neither near `start`
        nor near that fire: then wall time and instant go together and it is the first
        wall time it names from `start`'s on. None: a clock change is near, or none is
        found within the search years."""
        if not _steady(start, zone):
            return None
        wall = start.astimezone(zone).replace(tzinfo=None)
        if wall.second or wall.microsecond:
            wall = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
        first = next(self._walls(wall), None)
        if first is None:
            return None
        when = first.replace(tzinfo=zone)
        return when if _steady(when, zone) else None

    def _next_near_change(self, start: datetime, zone: ZoneInfo) -> datetime | None:
        """As next_fire, each wall time within a clock change of `start` weighed."""
        # A wall-clock time up to a clock change before `start` may still come after
        # it, and one that long after the best found so far can no longer come before.
        earliest = start.astimezone(zone).replace(tzinfo=None) - CLOCK_CHANGE
        # Compared in UTC: two times of one zone compare as wall clocks, fold ignored, and
        # the second 02:40 of the night the clocks go back would not come after the first.
        after = start.astimezone(UTC)
        best: datetime | None = None
        for wall in self._walls(earliest):
            if best is not None and wall > best.replace(tzinfo=None) + CLOCK_CHANGE:
                break
            for when in _resolve(wall, zone, self.fixed_time):
                real = when.astimezone(UTC)
                if real >= after and (best is None or real < best.astimezone(UTC)):
                    best = when
        return best

    def _walls(self, earliest: datetime) -> Iterator[datetime]:
        """The wall-clock times it names, in order, from `earliest` on: each field
        jumps to its next value, so no time it does not name is looked at."""
        first = earliest.date()
        for year in range(first.year, first.year + SEARCH_YEARS + 1):
            for month in sorted(self.months):
                if (year, month) < (first.year, first.month):
                    continue
                start = first.day if (year, month) == (first.year, first.month) else 1
                for number in range(start, calendar.monthrange(year, month)[1] + 1):
                    if self.matches(day := date(year, month, number)):
                        yield from self._times(day, earliest)

    def _times(self, day: date, earliest: datetime) -> Iterator[datetime]:
        """The day's wall-clock times it names, from `earliest` on."""
        hours: tuple[int, ...] = self.hours
        if day == earliest.date():
            hours = hours[bisect.bisect_left(hours, earliest.hour) :]
        for hour in hours:
            minutes: tuple[int, ...] = self.minutes
            if (day, hour) == (earliest.date(), earliest.hour):
                minutes = minutes[bisect.bisect_left(minutes, earliest.minute) :]
            for minute in minutes:
                wall = datetime.combine(day, time(hour, minute))
                if wall >= earliest:
                    yield wall


def _steady(instant: datetime, zone: ZoneInfo) -> bool:
    """The zone's offset from UTC stays the same from a clock change's span before
    `instant` to one after (looked at hourly: clock changes are months apart)."""
    at = instant.astimezone(UTC)
    offsets = {(at + timedelta(hours=hours)).astimezone(zone).utcoffset() for hours in range(-3, 4)}
    return len(offsets) == 1


def _resolve(wall: datetime, zone: ZoneInfo, fixed_time: bool) -> list[datetime]:
    """The instants at which cron runs a job due at this wall-clock time."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    before, after = first.utcoffset(), second.utcoffset()
    assert before is not None and after is not None
    if before == after:
        return [first]
    if before > after:  # the clock went back: this wall time comes twice
        if fixed_time and before - after < CLOCK_CHANGE:
            return [first]
        return [first, second]
    if fixed_time and after - before < CLOCK_CHANGE:  # skipped: run once the clock jumped
        return [_jump(wall, before, after, zone)]
    return []


def _jump(wall: datetime, before: timedelta, after: timedelta, zone: ZoneInfo) -> datetime:
    """The instant the clock jumped over `wall` (found to the second)."""
    low = (wall - after).replace(tzinfo=UTC)  # still the old offset
    high = (wall - before).replace(tzinfo=UTC)  # already the new one
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0).astimezone(zone)


def parse(text: str) -> Crontab:
    """An expression as crontab takes it; anything else raises CrontabError."""
    if len(text) > MAX_LENGTH:
        raise _refuse(text, f"at most {MAX_LENGTH} characters")
    stripped = text.strip(" \t")
    if not stripped:
        raise _refuse(
            text,
            f"empty; give {FIVE}, or a macro such as @daily",
        )
    if stripped.startswith("@"):
        return _macro(text, stripped)
    fields = re.split(r"[ \t]+", stripped)
    if len(fields) == 6:
        raise _refuse(
            text,
            f"6 fields, but crontab has no seconds; give {FIVE}",
        )
    if len(fields) != 5:
        raise _refuse(text, f"{len(fields)} field(s); give {FIVE}")
    minutes, hours, days, months, weekdays = (
        _values(text, field, spec) for field, spec in zip(FIELDS, fields, strict=True)
    )
    return Crontab(
        text=stripped,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(value % 7 for value in weekdays),
        either_day=not fields[2].startswith("*") and not fields[4].startswith("*"),
        fixed_time=not fields[0].startswith("*") and not fields[1].startswith("*"),
    )


def _macro(text: str, stripped: str) -> Crontab:
    word, *rest = re.split(r"[ \t]+", stripped)
    if word == "@reboot":
        raise _refuse(
            text,
            "@reboot runs when cron starts, which a schedule cannot mean; "
            "give a time, such as @daily or '0 2 * * *'",
        )
    if word not in MACROS:
        raise _refuse(text, f"unknown macro {word!r}; the macros are {', '.join(MACROS)}")
    if rest:
        raise _refuse(text, f"{word} stands alone; give either a macro or five fields")
    return parse(MACROS[word])


def _values(text: str, field: _Field, spec: str) -> set[int]:
    values: set[int] = set()
    for item in spec.split(","):
        values |= _item(text, field, item)
    return values


def _item(text: str, field: _Field, item: str) -> set[int]:
    found = _ITEM.fullmatch(item)
    if found is None:
        problem = "an empty list item" if not item else f"{item!r} is not crontab syntax"
        raise _refuse(text, f"{field.name}: {problem}; {field.takes()}, {FORMS}")
    step = 1
    if found["step"] is not None:
        if not found["step"].isdigit() or int(found["step"]) < 1:
            raise _refuse(text, f"{field.name} {item!r}: a step is a whole number from 1")
        step = int(found["step"])
    if found["star"]:
        return _stepped(text, field, item, field.low, field.high, step)
    first = _number(text, field, found["first"])
    if found["last"] is None:
        if found["step"] is not None:
            raise _refuse(text, f"{field.name} {item!r}: a step needs a range, as */n or a-b/n")
        return {first}
    last = _number(text, field, found["last"])
    if last < first:
        hint = " (Sunday is also 7)" if field.names == DAY_NAMES else ""
        raise _refuse(
            text,
            f"{field.name} {item!r} runs backwards and matches nothing; "
            f"write the smaller end first{hint}",
        )
    return _stepped(text, field, item, first, last, step)


def _stepped(text: str, field: _Field, item: str, first: int, last: int, step: int) -> set[int]:
    """first..last every `step`. A step past the range's width leaves its first value
    alone: cron takes `*/90` in the minute field as minute 0 (hourly), which is not
    every 90 minutes, so it is refused."""
    if step > 1 and step > last - first:
        raise _refuse(
            text,
            f"{field.name} {item!r}: a step of {step} is past the width of {first}-{last}, "
            f"so it would match {first} alone; give a step up to {max(last - first, 1)}, or "
            f"write {first}",
        )
    return set(range(first, last + 1, step))


def _number(text: str, field: _Field, word: str) -> int:
    if word.lower() in field.names:
        return field.names.index(word.lower()) + field.low
    if not word.isdigit():
        raise _refuse(text, f"{field.name} {word!r} is not a number or a name; {field.takes()}")
    value = int(word)
    if not field.low <= value <= field.high:
        raise _refuse(text, f"{field.name} {value} is out of range; {field.takes()}")
    return value


def _refuse(text: str, problem: str) -> CrontabError:
    return CrontabError(f"--cron {text!r}: {problem}")


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler 3 trigger that fires when cron would."""

    __slots__ = ("crontab", "timezone")

    def __init__(self, expression: str, timezone: str) -> None:
        self.crontab = parse(expression)
        self.timezone = ZoneInfo(timezone)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # As APScheduler's own triggers: just after the previous fire time when there is
        # one (so that times missed while nothing ran are seen), else from now.
        # In UTC: a time of the zone plus a microsecond loses its fold (the second 02:40
        # of the night the clocks go back would become the first, and fire again).
        if previous_fire_time is None:
            return self.crontab.next_fire(now, self.timezone)
        following = self.crontab.next_fire(
            previous_fire_time.astimezone(UTC) + timedelta(microseconds=1), self.timezone
        )
        if following is None or following.astimezone(UTC) >= now.astimezone(UTC):
            return following
        # Missed fire times (serve was down): APScheduler asks for each in turn up to
        # `now`, and the jobs coalesce them into the newest. Straight to that one, so a
        # minutely schedule down for a month takes a few steps, not one per minute.
        return self._newest_by(following, now)

    def _newest_by(self, missed: datetime, now: datetime) -> datetime:
        """The newest fire time at or before `now`, given `missed`, one such: halving
        the time between, never stepping through each fire time."""
        newest, low = missed, missed.astimezone(UTC)
        high = now.astimezone(UTC) + timedelta(microseconds=1)
        # `low` is a fire time, and none comes from `high` to `now`.
        while high - low > timedelta(microseconds=1):
            middle = low + (high - low) / 2
            fire = self.crontab.next_fire(middle, self.timezone)
            if fire is not None and fire.astimezone(UTC) <= now.astimezone(UTC):
                newest, low = fire, fire.astimezone(UTC)
            else:
                high = middle
        return newest

    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, "expression": self.crontab.text, "timezone": self.timezone.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(
                f"crontab trigger state version {state['version']} is newer than this aishell"
            )
        self.crontab = parse(state["expression"])
        self.timezone = ZoneInfo(state["timezone"])

    def __str__(self) -> str:
        return f"crontab[{self.crontab.text!r}, {self.timezone.key}]"

    def __repr__(self) -> str:
        return f"<CrontabTrigger ({self.crontab.text!r}, timezone={self.timezone.key!r})>"
