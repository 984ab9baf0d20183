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

import re

# No leading zero: YAML 1.1 reads 010 as eight, and a person means ten.
_DIGITS = r"(?:0|[1-9][0-9]{0,30})"
# An amount: digits, with a decimal point or not (".5", "5.", "2.5"); no sign, no exponent.
AMOUNT = re.compile(rf"(?:\.[0-9]{{1,30}}|{_DIGITS}(?:\.[0-9]{{0,30}})?)")
WHOLE_NUMBER = re.compile(rf"[-+]?{_DIGITS}")
DECIMAL_NUMBER = re.compile(rf"[-+]?{AMOUNT.pattern}(?:[eE][-+]?[0-9]{{1,3}})?")
