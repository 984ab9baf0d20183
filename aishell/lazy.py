"""Packages whose names are imported when first used, not when the package is.

`aishell --help` must not pay for SQLAlchemy, the model client or the metrics library:
the packages every command module names (commands, render, executor) hand out each name
from its submodule on first use instead of importing them all up front. Each such package
imports its names for real under TYPE_CHECKING, so type checking sees them as before.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def exports(
    package: str, public: Sequence[str], where: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose `public` names (its `__all__`)
    live in the modules `where` maps them from (module -> its names)."""
    home = {name: module for module, names in where.items() for name in names}
    if sorted(home) != sorted(public):
        # A name added to __all__ and not here (or the reverse) fails every import of
        # the package, not the first command that happens to use it.
        raise ImportError(
            f"{package}: __all__ and its lazy names differ: {sorted(set(home) ^ set(public))}"
        )

    def getattr_(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Found once: later uses read the package's own attribute, as after an eager import.
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(home) | set(vars(sys.modules[package])))

    return getattr_, dir_
