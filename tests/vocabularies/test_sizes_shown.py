"""Sizes as aishell writes them (units.binary_size): a size just under a unit's 1024 is
shown in the next unit once its one decimal rounds up to it, never as "1024.0 KiB"; a
figure that is no size (NaN, infinity, as a float column may hold) is shown unknown.
Pure function with the byte counts a backup file or a table may have; a database's own
pages cannot produce these (they come in whole pages)."""

from __future__ import annotations

from aishell.units import binary_size


def test_each_size_is_shown_in_the_unit_its_rounding_reaches() -> None:
    shown = {
        n: binary_size(n)
        for n in (0, 1, 1023, 1024, 1_048_524, 1_048_575, 2**30 - 1, 2**40 - 1, 2**40 * 3)
    }
    assert shown == {
        0: "0 B",
        1: "1 B",
        1023: "1023 B",
        1024: "1.0 KiB",
        1_048_524: "1023.9 KiB",
        1_048_575: "1.0 MiB",
        2**30 - 1: "1.0 GiB",
        2**40 - 1: "1.0 TiB",
        2**40 * 3: "3.0 TiB",
    }
    assert binary_size(-1_048_575) == "-1.0 MiB"
    assert [binary_size(v) for v in (float("nan"), float("inf"))] == ["-", "-"]


def test_sizes_past_a_thousand_tebibytes_take_their_own_units() -> None:
    """A storage array's or a data lake's total: 1 PiB is never "1024.0 TiB"."""
    assert binary_size(2**50 - 1) == "1.0 PiB"
    assert binary_size(2**50 * 5) == "5.0 PiB"
    assert binary_size(2**60 * 2) == "2.0 EiB"
    assert binary_size(2**80) == "1.0 YiB"
    assert binary_size(2**90) == "1024.0 YiB"
