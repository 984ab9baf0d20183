"""The config models' fields made from the option table (aishell.config.options): an
option's default and bounds. Apart from options.py because it imports pydantic, which
`aishell --help` must not pay for."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict
from pydantic_core import PydanticCustomError

from aishell.config.numbers import DECIMAL_NUMBER, WHOLE_NUMBER, float_range_lost
from aishell.config.options import LOG_CLEANUP_OPTIONS, Option, by_key

# The log cleanup's options by key: the agent config's purge section is made of them.
PURGE = by_key(LOG_CLEANUP_OPTIONS)


def setting(option: Option, **extra: Any) -> Any:
    """A field with the option's default and bounds; `extra` adds or overrides what the
    config alone asks (a description, a cap on every count)."""
    return Field(**{"default": option.default, "ge": option.minimum, "le": option.maximum, **extra})


def _plain_number(value: Any) -> Any:
    """A config's number: a number, or digits as text; never true or false (YAML's
    `on`, once), never NaN or infinity (NaN compares false with every limit)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "input should be a number, not true or false")
    # A number written as text ("2000", quoted in YAML): ASCII digits as YAML 1.2 writes
    # them, nothing else (aishell.config.numbers).
    if isinstance(value, str):
        if WHOLE_NUMBER.fullmatch(value):
            return int(value)
        if DECIMAL_NUMBER.fullmatch(value):
            number = float(value)
            lost = float_range_lost(value, number)
            if lost and math.isfinite(number):
                raise PydanticCustomError(
                    "float_range", "input should be a number: {lost}", {"lost": lost}
                )
            return number
        raise PydanticCustomError("number_type", "input should be a number in the digits 0-9")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "input should be a finite number")
    return value


# The config's numbers: an integer refuses 1.5 and 1000.0 alike, as a plan's parameter does.
Integer = Annotated[int, BeforeValidator(_plain_number), Strict()]
Number = Annotated[float, BeforeValidator(_plain_number), Strict()]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank_text", "input is blank; give a value or leave it out")
    return value


# A config's text that names something (a column, a tool, a target): never blank, which
# no such thing is called and which would fail only when a run came to use it.
Text = Annotated[str, AfterValidator(_not_blank)]
