"""--cron means crontab(5): what it takes, what it refuses, and when it fires, as Debian's
cron would. Every expected time below was worked out from the calendar (2026-11-25 is a
Wednesday; Berlin's clocks jump from 02:00 to 03:00 on 2026-03-29 at 01:00 UTC and fall
back from 03:00 to 02:00 on 2026-10-25 at 01:00 UTC), not by running the code."""

from __future__ import annotations

import pickle
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aishell.cli import cli
from aishell.scheduling import serve as scheduling
from aishell.scheduling.crontab import CrontabError, CrontabTrigger, parse

REPO = Path(__file__).resolve().parents[2]
WEDNESDAY = datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC)
FRIDAY = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
THURSDAY = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# (expression, time zone, after, the next fire time in UTC)
FIRES = [
    # every minute and hour, steps, lists
    ("* * * * *", "UTC", WEDNESDAY, utc(2026, 11, 25, 12, 35)),
    ("0 * * * *", "UTC", WEDNESDAY, utc(2026, 11, 25, 13, 0)),
    ("*/15 * * * *", "UTC", WEDNESDAY, utc(2026, 11, 25, 12, 45)),
    ("5-20/5 * * * *", "UTC", WEDNESDAY, utc(2026, 11, 25, 13, 5)),
    ("10,40 * * * *", "UTC", WEDNESDAY, utc(2026, 11, 25, 12, 40)),
    ("0 8-18/4,20 * * *", "UTC", WEDNESDAY, utc(2026, 11, 25, 16, 0)),
    ("00 02 * * *", "UTC", WEDNESDAY, utc(2026, 11, 26, 2, 0)),
    (" 0\t2   * * * ", "UTC", WEDNESDAY, utc(2026, 11, 26, 2, 0)),
    ("0 12 * * 3", "UTC", utc(2026, 11, 25, 12, 0), utc(2026, 11, 25, 12, 0)),  # at, or after
    ("59 23 31 12 *", "UTC", WEDNESDAY, utc(2026, 12, 31, 23, 59)),
    # Sunday is 0 and 7, and weekdays count from it
    ("0 3 * * 0", "UTC", WEDNESDAY, utc(2026, 11, 29, 3, 0)),
    ("0 3 * * 7", "UTC", WEDNESDAY, utc(2026, 11, 29, 3, 0)),
    ("0 3 * * sun", "UTC", WEDNESDAY, utc(2026, 11, 29, 3, 0)),
    ("0 3 * * SUN", "UTC", WEDNESDAY, utc(2026, 11, 29, 3, 0)),
    ("0 9 * * 1-5", "UTC", FRIDAY, utc(2026, 11, 30, 9, 0)),
    ("0 9 * * mon-fri", "UTC", FRIDAY, utc(2026, 11, 30, 9, 0)),
    ("0 9 * * Mon-Fri", "UTC", utc(2026, 11, 28, 9, 0), utc(2026, 11, 30, 9, 0)),
    ("0 12 * * 5-7", "UTC", WEDNESDAY, utc(2026, 11, 27, 12, 0)),
    ("0 0 * * 1,3,5", "UTC", WEDNESDAY, utc(2026, 11, 27, 0, 0)),
    ("0 0 * * */2", "UTC", WEDNESDAY, utc(2026, 11, 26, 0, 0)),  # Sun Tue Thu Sat
    ("0 0 * * 1-7/3", "UTC", THURSDAY, utc(2026, 11, 29, 0, 0)),  # Mon Thu Sun
    ("0 6 * * mon-fri/2", "UTC", WEDNESDAY, utc(2026, 11, 27, 6, 0)),  # Mon Wed Fri
    # months and their names
    ("0 0 1 * *", "UTC", WEDNESDAY, utc(2026, 12, 1, 0, 0)),
    ("0 0 1 jan,jul *", "UTC", WEDNESDAY, utc(2027, 1, 1, 0, 0)),
    ("0 0 15 JUN-aug *", "UTC", WEDNESDAY, utc(2027, 6, 15, 0, 0)),
    # macros
    ("@yearly", "UTC", WEDNESDAY, utc(2027, 1, 1, 0, 0)),
    ("@annually", "UTC", WEDNESDAY, utc(2027, 1, 1, 0, 0)),
    ("@monthly", "UTC", WEDNESDAY, utc(2026, 12, 1, 0, 0)),
    ("@weekly", "UTC", WEDNESDAY, utc(2026, 11, 29, 0, 0)),
    ("@daily", "UTC", WEDNESDAY, utc(2026, 11, 26, 0, 0)),
    ("@midnight", "UTC", WEDNESDAY, utc(2026, 11, 26, 0, 0)),
    ("@hourly", "UTC", WEDNESDAY, utc(2026, 11, 25, 13, 0)),
    # both day fields restricted: either matches; one starting with '*': both must
    ("30 4 1,15 * 5", "UTC", WEDNESDAY, utc(2026, 11, 27, 4, 30)),  # crontab(5)'s example
    ("0 0 1 * mon", "UTC", WEDNESDAY, utc(2026, 11, 30, 0, 0)),
    ("0 0 1-7 * 0", "UTC", WEDNESDAY, utc(2026, 11, 29, 0, 0)),
    ("0 0 1-7 * */7", "UTC", WEDNESDAY, utc(2026, 12, 6, 0, 0)),  # the first Sunday
    ("0 0 31 2 1", "UTC", WEDNESDAY, utc(2027, 2, 1, 0, 0)),  # Mondays of February
    ("0 0 29 2 2", "UTC", WEDNESDAY, utc(2027, 2, 2, 0, 0)),
    # 29 February
    ("0 0 29 2 *", "UTC", WEDNESDAY, utc(2028, 2, 29, 0, 0)),
    ("0 0 29 feb */7", "UTC", WEDNESDAY, utc(2032, 2, 29, 0, 0)),  # on a Sunday
    # time zones and their clock changes (cron's rule for jumps under three hours)
    ("0 2 * * *", "Europe/Berlin", WEDNESDAY, utc(2026, 11, 26, 1, 0)),
    ("0 3 * * 0", "Europe/Berlin", WEDNESDAY, utc(2026, 11, 29, 2, 0)),
    ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 1, 0)),
    ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 29, 1, 0, 1), utc(2026, 3, 30, 0, 30)),
    ("15 2 * * 0", "Europe/Berlin", utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 1, 0)),
    ("15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 20), utc(2026, 3, 29, 1, 15)),
    ("*/30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 31), utc(2026, 3, 29, 1, 0)),
    ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30)),
    ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30, 1), utc(2026, 10, 26, 1, 30)),
    ("30 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30, 1), utc(2026, 10, 25, 1, 30)),
    ("0 9 * * 1-5", "America/New_York", FRIDAY, utc(2026, 11, 27, 14, 0)),  # 07:00 there
]


@pytest.mark.parametrize(("cron", "zone", "after", "expected"), FIRES)
def test_fires_when_cron_would(cron, zone, after, expected):
    fire = scheduling.next_fire(cron, zone, after)
    assert fire is not None and fire.astimezone(UTC) == expected, (cron, fire)


def test_the_table_is_long_enough():
    assert len({cron for cron, *_ in FIRES}) >= 30


# (expression, the one line that refuses it)
REFUSED = [
    ("60 * * * *", "minute 60 is out of range; minute takes 0-59"),
    ("* 24 * * *", "hour 24 is out of range; hour takes 0-23"),
    ("* * 0 * *", "day of month 0 is out of range; day of month takes 1-31"),
    ("* * 32 * *", "day of month 32 is out of range; day of month takes 1-31"),
    ("* * * 13 *", "month 13 is out of range; month takes 1-12 or jan-dec"),
    ("* * * 0 *", "month 0 is out of range; month takes 1-12 or jan-dec"),
    (
        "* * * * 8",
        "day of week 8 is out of range; day of week takes 0-7 (0 and 7 are Sunday) or sun-sat",
    ),
    (
        "0 0 2 * * *",
        "6 fields, but crontab has no seconds; give five fields: minute hour day-of-month "
        "month day-of-week",
    ),
    ("@reboot", "@reboot runs when cron starts, which a schedule cannot mean"),
    ("", "empty; give five fields"),
    ("   ", "empty; give five fields"),
    ("hello", "1 field(s); give five fields: minute hour day-of-month month day-of-week"),
    ("0 2 * *", "4 field(s); give five fields"),
    ("a b c d e", "minute 'a' is not a number or a name; minute takes 0-59"),
    ("* * * * monday", "day of week 'monday' is not a number or a name"),
    ("* * * jan-mon *", "month 'mon' is not a number or a name; month takes 1-12 or jan-dec"),
    ("* * * * 1/2", "day of week '1/2': a step needs a range, as */n or a-b/n"),
    ("*/0 * * * *", "minute '*/0': a step is a whole number from 1"),
    ("*/x * * * *", "minute '*/x': a step is a whole number from 1"),
    ("5-1 * * * *", "minute '5-1' runs backwards and matches nothing"),
    ("* * * * fri-sun", "write the smaller end first (Sunday is also 7)"),
    ("1,,2 * * * *", "minute: an empty list item; minute takes 0-59"),
    ("*-5 * * * *", "minute: '*-5' is not crontab syntax"),
    ("0 0 L * *", "day of month 'L' is not a number or a name"),
    ("0 0 * * 1#2", "day of week: '1#2' is not crontab syntax"),
    ("? * * * *", "minute: '?' is not crontab syntax"),
    ("1.5 * * * *", "minute: '1.5' is not crontab syntax"),
    # A step past its range's width: cron would match the range's first value alone.
    ("*/90 * * * *", "minute '*/90': a step of 90 is past the width of 0-59, so it would match 0"),
    ("0 */24 * * *", "hour '*/24': a step of 24 is past the width of 0-23"),
    ("0 0 */31 * *", "day of month '*/31': a step of 31 is past the width of 1-31"),
    ("0 0 1 */12 *", "give a step up to 11, or write 1"),
    ("10-20/15 * * * *", "minute '10-20/15': a step of 15 is past the width of 10-20"),
    ("0 0 * * mon-fri/9", "day of week 'mon-fri/9': a step of 9 is past the width of 1-5"),
    ("*/" + "9" * 25 + " * * * *", "a step of " + "9" * 25 + " is past the width of 0-59"),
    ("@Daily", "unknown macro '@Daily'; the macros are @yearly, @annually, @monthly"),
    ("@daily 5", "@daily stands alone"),
    ("0 " * 80, "at most 128 characters"),
]


@pytest.mark.parametrize(("cron", "message"), REFUSED)
def test_what_crontab_refuses_is_refused_naming_the_field(cron, message):
    with pytest.raises(CrontabError) as refused:
        scheduling.trigger(cron, "UTC")
    text = str(refused.value)
    assert text.startswith(f"--cron {cron!r}: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    "cron", ["60 * * * *", "0 0 2 * * *", "@reboot", "* * * * 8", "*/90 * * * *"]
)
def test_the_command_line_refuses_with_exit_code_2(home, cron):
    result = CliRunner().invoke(cli, ["schedule", "add", "x", "--cron", cron, "--", "maintenance"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and f"--cron {cron!r}: " in result.output


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 2 31 2 */2"])
def test_a_cron_that_no_date_matches_never_fires(cron):
    assert scheduling.next_fire(cron, "UTC", WEDNESDAY) is None
    with pytest.raises(CrontabError, match="never fires"):
        scheduling.first_fire(cron, "UTC", WEDNESDAY)


def test_a_stored_trigger_comes_back_from_its_pickle_with_the_same_meaning():
    trigger = scheduling.trigger("0 3 * * 0", "Europe/Berlin")
    back = pickle.loads(pickle.dumps(trigger))
    assert type(back) is CrontabTrigger and str(back) == str(trigger)
    # By its class path and the expression's text only, so it outlives changes inside.
    assert b"aishell.scheduling.crontab" in pickle.dumps(trigger)
    assert back.get_next_fire_time(None, WEDNESDAY) == utc(2026, 11, 29, 2, 0)


def test_a_trigger_goes_on_from_its_previous_fire_time():
    """As APScheduler asks: the next after the previous one, also across a clock jump."""
    trigger = scheduling.trigger("*/15 * * * *", "Europe/Berlin")
    fires, previous = [], None
    for _ in range(4):
        previous = trigger.get_next_fire_time(previous, utc(2026, 3, 29, 0, 30))
        fires.append(previous.astimezone(UTC))
    assert fires == [
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 0, 45),
        utc(2026, 3, 29, 1, 0),  # 02:00 to 02:45 never were
        utc(2026, 3, 29, 1, 15),
    ]


# --- the docs' examples run when their text says ------------------------------------------

EXAMPLE = re.compile(
    r"(?:schedule add (?P<name>\S+) )?--cron \"(?P<cron>[^\"]*)\"(?P<rest>[^\n`]*)"
)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
DAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
SAYS = re.compile(
    r"(?P<days>every\s+day|on\s+weekdays|on\s+(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)days)"
    r"\s+at\s+(?P<time>\d\d:\d\d)"
)


def _examples() -> list[tuple[str, str, str, str]]:
    """(file, expression, time zone, what the text says) for every --cron in the docs."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for example in EXAMPLE.finditer(text):
            zone = re.search(r"--timezone (\S+)", example["rest"])
            name = example["name"]
            if name and name != "NAME":  # said of it by name, wherever in the text
                said = re.search(rf"`{re.escape(name)}`[^`.;]*?{SAYS.pattern}", text)
            else:  # said of the example in the text that follows it
                said = SAYS.search(text, example.end())
            assert said, f"{path.name}: nothing says when {example[0]!r} runs"
            what = f"{said['days']} at {said['time']}"
            found.append((path.name, example["cron"], zone[1] if zone else "UTC", what))
    return found


def test_the_docs_have_cron_examples_to_check():
    files = {file for file, *_ in _examples()}
    assert {"README.md", "guide.md", "cli.md"} <= files
    assert any(cron == "0 3 * * 0" for _, cron, *_ in _examples())


@pytest.mark.parametrize(("file", "cron", "zone", "says"), _examples())
def test_each_docs_example_fires_when_its_text_says(file, cron, zone, says):
    days_said, _, clock = says.rpartition(" at ")
    days_said = " ".join(days_said.split())
    if days_said == "every day":
        days = set(range(7))
    elif days_said == "on weekdays":
        days = set(range(5))
    else:
        days = {DAYS.index(days_said.removeprefix("on "))}
    # Three weeks of fires from a Monday: each at the time said, on the days said.
    fires, moment = [], datetime(2026, 6, 1, tzinfo=UTC)
    while (fire := scheduling.next_fire(cron, zone, moment)) < datetime(2026, 6, 22, tzinfo=UTC):
        fires.append(fire.astimezone(ZoneInfo(zone)))
        moment = fire + timedelta(seconds=1)
    assert {f"{fire:%H:%M}" for fire in fires} == {clock}, (file, cron)
    assert {fire.weekday() for fire in fires} == days, (file, cron)
    assert len(fires) == 3 * len(days), (file, cron)


def test_parse_keeps_the_text_it_was_given():
    assert parse(" 0 3 * * 7 ").text == "0 3 * * 7"


# --- any expression, against a plain reading of crontab(5) ---------------------------------

LIMITS = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}
NAMES = {"month": MONTHS, "dow": WEEKDAYS}


@st.composite
def _field(draw: st.DrawFn, kind: str) -> str:
    low, high = LIMITS[kind]
    items = []
    for _ in range(draw(st.integers(1, 3))):
        first = draw(st.integers(low, high))
        last = draw(st.integers(first, high))
        # A step past the width of its range is refused (it would match the first alone).
        step = draw(st.integers(1, high - low))
        range_step = draw(st.integers(1, max(last - first, 1)))
        shown = [str(first), str(last)]
        # Names where a number could be (not Sunday as 7: `sun` is 0, and `fri-sun` runs
        # backwards), in any case.
        if kind in NAMES and last < 7 and draw(st.booleans()):
            offset = 1 if kind == "month" else 0
            shown = [NAMES[kind][value - offset] for value in (first, last)]
            shown = [name.upper() if draw(st.booleans()) else name for name in shown]
        items.append(
            draw(
                st.sampled_from(
                    [
                        "*",
                        f"*/{step}",
                        shown[0],
                        f"{shown[0]}-{shown[1]}",
                        f"{shown[0]}-{shown[1]}/{range_step}",
                    ]
                )
            )
        )
    return ",".join(items)


def _matches(spec: str, kind: str, value: int) -> bool:
    """crontab(5)'s words: a list of ranges, each with an optional step, names for numbers."""
    low, high = LIMITS[kind]
    for item in spec.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        else:
            ends = [
                NAMES[kind].index(end.lower()) + (kind == "month") if end.isalpha() else int(end)
                for end in span.split("-")
            ]
            first, last = ends[0], ends[-1]
        candidates = range(first, last + 1, int(step or 1))
        if value in candidates or (kind == "dow" and value == 0 and 7 in candidates):
            return True
    return False


def _reference(fields: list[str], after: datetime) -> datetime:
    """Minute by minute in UTC, skipping days that do not match."""
    minute, hour, dom, month, dow = fields
    moment = after.replace(second=0, microsecond=0)
    if moment < after:
        moment += timedelta(minutes=1)
    while True:
        by_month = _matches(dom, "dom", moment.day)
        by_week = _matches(dow, "dow", moment.isoweekday() % 7)
        either = not dom.startswith("*") and not dow.startswith("*")
        day_ok = _matches(month, "month", moment.month) and (
            (by_month or by_week) if either else (by_month and by_week)
        )
        if not day_ok:
            moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if _matches(hour, "hour", moment.hour) and _matches(minute, "minute", moment.minute):
            return moment
        moment += timedelta(minutes=1)


@settings(max_examples=150, deadline=None)
@given(
    fields=st.tuples(*(_field(kind) for kind in ("minute", "hour", "dom", "month", "dow"))),
    after=st.datetimes(datetime(2026, 1, 1), datetime(2030, 12, 31)),
)
def test_any_expression_fires_as_crontab_reads_it(fields, after):
    cron = " ".join(fields)
    after = after.replace(tzinfo=UTC)
    fire = scheduling.next_fire(cron, "UTC", after)
    _, _, dom, month, dow = fields
    if fire is None:  # refused when added: only when no date can ever match
        assert dow.startswith("*") and not dom.startswith("*"), cron
        longest = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        assert not any(
            _matches(month, "month", m) and _matches(dom, "dom", d)
            for m in range(1, 13)
            for d in range(1, longest[m] + 1)
        ), cron
        return
    assert fire == _reference(list(fields), after), cron


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # Europe/Berlin, 2027-10-31: 03:00 CEST becomes 02:00 CET; cron runs a wildcard
        # job at each of the repeated hour's times again.
        ("*/20 * * * *", ["00:00", "00:20", "00:40", "01:00", "01:20", "01:40", "02:00"]),
        ("0 * * * *", ["00:00", "01:00", "02:00"]),
        ("30 2 * * *", ["00:30"]),  # a fixed time in the repeated hour: once
    ],
)
def test_a_trigger_fires_through_the_repeated_hour_as_cron_does(cron, expected):
    """Chained as the scheduler chains them, each fire from the one before (a time of
    the schedule's zone): none of the repeated hour is skipped, and none fired twice."""
    from aishell.scheduling.crontab import CrontabTrigger

    trigger = CrontabTrigger(cron, "Europe/Berlin")
    now = datetime(2027, 10, 30, 23, 59, tzinfo=UTC)
    fired, previous = [], None
    while True:
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        if fire.astimezone(UTC) >= datetime(2027, 10, 31, 2, 1, tzinfo=UTC):
            break
        fired.append(fire.astimezone(UTC).strftime("%H:%M"))
        previous = fire
    assert fired == expected
