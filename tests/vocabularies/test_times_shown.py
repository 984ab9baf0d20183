"""How long a step or run took, as the progress lines and the runs list show it: a time
the shown decimals would round to nothing is shown in milliseconds, never as 0.00 s, and
a long one in minutes, then hours, then days, never as a count of minutes in the hundreds;
in the units an age is shown in, whichever a person reads."""

from __future__ import annotations

import pytest

from aishell import units


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
