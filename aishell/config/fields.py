"""The config models' fields made from the option table (aishell.config.options): an
option's default and bounds. Apart from options.py because it imports pydantic, which
`aishell --help` must not pay for."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aishell.config.options import LOG_CLEANUP_OPTIONS, Option, by_key

# The log cleanup's options by key: the agent config's purge section is made of them.
PURGE = by_key(LOG_CLEANUP_OPTIONS)


def setting(option: Option, **extra: Any) -> Any:
    """A field with the option's default and bounds; `extra` adds or overrides what the
    config alone asks (a description, a cap on every count)."""
    return Field(**{"default": option.default, "ge": option.minimum, "le": option.maximum, **extra})
