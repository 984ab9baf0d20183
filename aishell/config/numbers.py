"""Numbers as a person writes them, in a config file or on the command line: the digits
0-9, with a sign, a decimal point and an exponent where a number may have them. Python's
int() and float() (which click's and pydantic's numbers follow) also take "1_000",
" 12 " and Arabic-Indic or fullwidth digits (U+0661, U+FF11); neither a config nor a
command means any of those as a number. At most 31 digits: past that a number is a
typo, and its text stays far below the length int() refuses (4300 digits).

Plain data: `aishell --help` reads it (the command line's options do), so it imports
nothing but re.
"""

from __future__ import annotations

import math
import re

# No leading zero: YAML 1.1 reads 010 as eight, and a person means ten.
_DIGITS = r"(?:0|[1-9][0-9]{0,30})"
# An amount: digits, with a decimal point or not (".5", "5.", "2.5"); no sign, no exponent.
AMOUNT = re.compile(rf"(?:\.[0-9]{{1,30}}|{_DIGITS}(?:\.[0-9]{{0,30}})?)")
WHOLE_NUMBER = re.compile(rf"[-+]?{_DIGITS}")
DECIMAL_NUMBER = re.compile(rf"[-+]?{AMOUNT.pattern}(?:[eE][-+]?[0-9]{{1,3}})?")


def float_range_lost(written: str, value: float) -> str | None:
    """Why a number written in digits lost its value as a float (`value`): beyond the
    largest (it became infinite: `1e400`) or nearer to 0 than the smallest (it became 0:
    `1e-400`, which a retention or a share would read as none). None when it kept it, or
    when it was written as no number (.inf, nan: each reader refuses those itself)."""
    digits = written.strip().lower().lstrip("+-").split("e")[0]
    if not digits or not all(c.isdigit() or c == "." for c in digits):
        return None
    if math.isinf(value):
        return f"{written} is beyond the largest number a float holds"
    if value == 0.0 and any(c in "123456789" for c in digits):
        return f"{written} is too near 0 for a float to tell it from 0"
    return None


class FloatRangeLost(ValueError):
    """A number in JSON text that a float cannot hold (float_range_lost says why)."""


def json_float(written: str) -> float:
    """A JSON number with a fraction or an exponent, as json.loads' parse_float: refused
    (FloatRangeLost) where a float would hold it as 0 or infinity."""
    value = float(written)
    lost = float_range_lost(written, value)
    if lost:
        raise FloatRangeLost(lost)
    return value
