"""Targets a config names outside `targets:` (the default, an alert's, a purge's
replicas) are among its targets: a typo is refused when the file is read, in one line
naming the file and the key, not found half-way through a run or when an alert never
fires. A name given on the command line that the config lacks is refused saying how to
add it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from aishell.config.checks import TARGET_NAME
from aishell.config.resources import bundled_config_dir
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


def unknown_target(name: str, known: Iterable[str], where: str | Path) -> str:
    """The line for a target name `where` (the config file read) lacks: the targets it
    has and how to add this one; first `aishell init` when the home has no config file
    of its own, so that `where` is the bundled default, which no command writes to."""
    listed = ", ".join(known) or "(none)"
    named = name if TARGET_NAME.fullmatch(name) else "NAME"
    add = f"`aishell targets add {named} LOCATION`"
    if "://" in name:  # not repeated: a URL given for a name may hold its password
        return (
            "Unknown target: a URL was given, not a target's name (not repeated: it may "
            f"hold a password); targets in {where} are: {listed}; "
            "`aishell targets add NAME URL` adds it as NAME"
        )
    if Path(where).resolve().is_relative_to(bundled_config_dir().resolve()):
        return (
            f"Unknown target '{name}': this home has no config file yet, only the bundled "
            f"default's targets ({listed}); `aishell init` makes one, then {add} adds it"
        )
    return f"Unknown target '{name}'; targets in {where} are: {listed}; {add} adds it"
