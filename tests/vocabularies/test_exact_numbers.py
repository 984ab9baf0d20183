"""A number a person or a config gave, as aishell echoes it in a message or a line of
output (units.exact): every digit it has, never six significant digits and an exponent
as `:g` gives them."""

from __future__ import annotations

import pytest

from aishell import units
from aishell.render.figures import step_figures


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (30.0, "30"),
        (30, "30"),
        (6.9999999, "6.9999999"),  # :g said 7
        (0.00001, "0.00001"),  # :g said 1e-05
        (1000001.0, "1000001"),  # :g said 1e+06
        (2592000.0, "2592000"),  # :g said 2.592e+06
        (1234567.8, "1234567.8"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-0.0, "0"),
        (2**63 - 1, "9223372036854775807"),
        (1e-9, "1e-09"),  # past a millionth: the digits, not a line of zeros
    ],
)
def test_a_number_is_echoed_with_every_digit_and_no_exponent(value: float, shown: str) -> None:
    assert units.exact(value) == shown


def test_a_purge_whose_batch_took_minutes_says_so_in_milliseconds_without_an_exponent() -> None:
    line = step_figures({"rows_deleted": 5, "batches": 1, "longest_batch_ms": 1234567.8})
    assert line.endswith("longest batch 1234567.8 ms"), line
