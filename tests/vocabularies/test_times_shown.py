"""How long a step or run took, as the progress lines and the runs list show it: a time
the shown decimals would round to nothing is shown in milliseconds, never as 0.00s, and
a long one in minutes, then hours, never as a count of minutes in the hundreds."""

from __future__ import annotations

import pytest

from aishell import units


@pytest.mark.parametrize(
    ("seconds", "places", "shown"),
    [
        (0.0032, 2, "3.2ms"),
        (0.00499, 2, "5.0ms"),
        (0.005, 2, "0.01s"),
        (0.00001, 2, "<0.1ms"),
        (0.0, 2, "0.00s"),
        (0.04, 1, "40.0ms"),
        (0.05, 1, "0.1s"),
        (1.234, 2, "1.23s"),
        (119.99, 1, "120.0s"),
        (150.0, 2, "2.5m"),
        (7199.0, 2, "120.0m"),
        (12600.0, 2, "3.5h"),
        (36000.0, 1, "10.0h"),
    ],
)
def test_a_time_is_shown_so_that_any_time_taken_reads_as_some(
    seconds: float, places: int, shown: str
) -> None:
    assert units.took(seconds, places) == shown
