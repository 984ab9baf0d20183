"""Sizes and times as aishell writes them everywhere: sizes in binary units (KiB, MiB,
GiB, TiB), so a report's bytes reclaimed and its database sizes read alike; times in
ISO 8601 with their offset, to the millisecond, in the state store, manifests, --json
and the scheduler's log alike."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def stamp(moment: datetime | None = None) -> str:
    """A time (now, in UTC, when none is given): 2026-11-25T02:00:00.000+00:00."""
    return (moment or datetime.now(UTC)).isoformat(timespec="milliseconds")


def binary_size(n: Any, unknown: str = "-") -> str:
    """Bytes in B, KiB, MiB, GiB, TiB, PiB, EiB, ZiB or YiB; `unknown` when n is not a
    number."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return unknown
    value = float(n)
    if not math.isfinite(value):
        return unknown
    for unit in _BINARY_UNITS[:-1]:
        # Judged as shown: 1,048,575 bytes is 1.0 MiB, never "1024.0 KiB".
        if abs(round(value, 0 if unit == "B" else 1)) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_BINARY_UNITS[-1]}"


_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def age_words(seconds: float | None) -> str:
    """An age or a span of time as a person reads it: 45 s, 12 min, 5.2 h, 3.1 d; "-" for
    none. The units of took, whole seconds and minutes."""
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f} min"
    return _long(seconds)


def _long(seconds: float) -> str:
    """Two hours and more: in hours, from two days in days."""
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def took(seconds: float, places: int | None = 2) -> str:
    """How long a step or run took: 0.12 s with `places` decimals, 12.5 min from two
    minutes, 3.5 h from two hours, 3.1 d from two days (age_words' units); a time those
    decimals would round to nothing in milliseconds (3.2 ms), so a step that took any
    time never reads as 0.00 s. `places` None: a time a setting or a person gave, as
    every message says one: exactly, in the largest unit it is a whole number of from
    two of them (10 s, 0.25 s, 125 s, 5 min, 6 h, 7 d)."""
    if places is None:
        return _given(seconds)
    if 0 < seconds < 0.5 * 10**-places:
        return f"{seconds * 1000:.1f} ms" if seconds >= 0.00005 else "<0.1 ms"
    if seconds < 120:
        return f"{seconds:.{places}f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return _long(seconds)


def _given(seconds: float) -> str:
    """A setting's time, every digit kept: a retention of 125 s never reads 2.1 min."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= 2 * size and seconds % size == 0:
            return f"{exact(seconds // size)} {unit}"
    return f"{exact(seconds)} s"


def exact(value: object) -> str:
    """A number a person or a config gave, echoed as they wrote it: every digit kept,
    no ".0" on a whole one, no exponent from a millionth up (30, 6.9999999, 0.00001,
    2592000). Not `:g`, which keeps six digits: a retention of 6.9999999 days read "7
    days is under 7", and a run time of 1000001 s "1e+06s"."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or 0 < abs(value) < 1e-6:
        return repr(value)  # hundreds of zeros would hide the digits that count
    # repr is the shortest text that reads back as the same float; Decimal spells it out.
    shown = f"{Decimal(repr(value)):f}"
    if "." in shown:
        shown = shown.rstrip("0").rstrip(".")
    return "0" if shown == "-0" else shown


def percent(share: float) -> str:
    """A share (0.5) as a percent as exact as it was given: 50%, 0.5%, 12.25%. Two
    decimals, or as many more as keep a share that is not none or all from reading as
    0% or 100% (0.001%, 99.999%); "-" for no number (NaN, infinity)."""
    if not math.isfinite(share):
        return "-"
    value = share * 100
    places = 2
    while places < 12 and float(f"{value:.{places}f}") in (0, 100) and value not in (0, 100):
        places += 1
    shown = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return f"{shown}%"


def percent_up(share: float) -> str:
    """A share a person is asked to approve, in whole percent rounded up: never less
    than it is, and what the approval of it allows (purge/share.py's shown percent)."""
    return f"{min(100, math.ceil(round(share * 100, 9)))}%"


def plain_zeros(value: Any) -> Any:
    """`value` with every -0.0 in it made 0.0 (a job given `-0` says 0 in its plan, its
    JSON and its reasons)."""
    if type(value) is float:
        return value + 0.0
    if isinstance(value, dict):
        return {key: plain_zeros(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_zeros(item) for item in value]
    return value
