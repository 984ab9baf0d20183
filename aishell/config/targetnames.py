"""Targets a config names outside `targets:` (the default, an alert's, a purge's
replicas) are among its targets: a typo is refused when the file is read, in one line
naming the file and the key, not found half-way through a run or when an alert never
fires."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from aishell.errors import ConfigError
from aishell.terminal import printable


def check_named(targets: Mapping[str, object], named: Iterable[tuple[Path, str, str]]) -> None:
    """Each (file, key, name) of `named` names one of `targets`, else a ConfigError."""
    for path, key, name in named:
        if name not in targets:
            known = ", ".join(sorted(targets)) or "(none)"
            raise ConfigError(
                f"{path}: {key}: {printable(repr(name))} is not a target; targets are: {known}"
            )
