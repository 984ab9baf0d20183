"""How long a step or run took, as the progress lines and the runs list show it: a time
the shown decimals would round to nothing is shown in milliseconds, never as 0.00 s, and
a long one in minutes, then hours, then days, never as a count of minutes in the hundreds;
in the units an age is shown in, whichever a person reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aishell import units

PACKAGE = Path(units.__file__).parent


@pytest.mark.parametrize(
    ("seconds", "places", "shown"),
    [
        (0.0032, 2, "3.2 ms"),
        (0.00499, 2, "5.0 ms"),
        (0.005, 2, "0.01 s"),
        (0.00001, 2, "<0.1 ms"),
        (0.0, 2, "0.00 s"),
        (0.04, 1, "40.0 ms"),
        (0.05, 1, "0.1 s"),
        (1.234, 2, "1.23 s"),
        (119.99, 1, "120.0 s"),
        (150.0, 2, "2.5 min"),
        (7199.0, 2, "120.0 min"),
        (12600.0, 2, "3.5 h"),
        (36000.0, 1, "10.0 h"),
        (259200.0, 1, "3.0 d"),
    ],
)
def test_a_time_is_shown_so_that_any_time_taken_reads_as_some(
    seconds: float, places: int, shown: str
) -> None:
    assert units.took(seconds, places) == shown


@pytest.mark.parametrize("seconds", [0.5, 45, 119, 150, 3600, 7199, 7200, 12600, 172800, 10**6])
def test_a_time_taken_and_an_age_read_in_the_same_units(seconds: float) -> None:
    """A run's "took" read "3.5h" where the backup beside it was "5.2 h old": one span of
    time, one unit word, a space before it, wherever aishell shows one."""
    shown = {units.took(seconds, 1).split(" ")[1], units.age_words(seconds).split(" ")[1]}
    assert len(shown) == 1, shown
    assert shown <= {"s", "min", "h", "d"}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (10, "10 s"),
        (0.25, "0.25 s"),
        (1.5, "1.5 s"),
        (90.0, "90 s"),
        (150, "150 s"),
        (300, "5 min"),
        (7260.0, "121 min"),
        (21600, "6 h"),
        (172800, "2 d"),
    ],
)
def test_a_time_a_setting_gave_keeps_its_digits_in_the_same_units(
    seconds: float, shown: str
) -> None:
    """A timeout of 0.25 s reads so, not "0.25s" beside a run that "took 12.5 min"; a
    retention of 150 s never "2.5 min", which reads back as another figure."""
    assert units.took(seconds, None) == shown


# An f-string or %-placeholder followed by a bare "s": "within 10s", "waited {wait}s",
# a log's "at most %gs".
SECONDS_GLUED = re.compile(r"\{[^{}\n]*\}s\b|%[\d.]*[gdf]s\b")
# Words that end in "s" after a placeholder and are no time: "({mode}s a file)".
NOT_A_TIME = ("{mode}s", '"{table}s"')


def test_no_message_glues_a_time_to_its_unit() -> None:
    """Every message shows a time with units.took, as the progress lines and lists do;
    none echoes a setting as the command line's "10s"."""
    glued = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(m.group() not in NOT_A_TIME for m in SECONDS_GLUED.finditer(line))
        and not any(word in line for word in NOT_A_TIME)
    ]
    assert not glued, "\n".join(glued)
