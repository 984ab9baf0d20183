"""`aishell targets add`: a new target written into the config file, checked first."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aishell.config.checks import (
    TAG,
    check_env_name,
    check_one_line,
    check_target_name,
    check_target_url,
)
from aishell.config.dburl import resolve_url
from aishell.config.edit import with_target
from aishell.config.files import validate
from aishell.config.home import read_layers
from aishell.config.models import CONSTRAINT_TYPES, Config, MainConfig
from aishell.config.resources import bundled_config_dir
from aishell.errors import ConfigError, UsageError
from aishell.files import write_beside
from aishell.targets.locations import driver_replaced, target_url


@dataclasses.dataclass(frozen=True)
class NewTarget:
    """What `targets add` is told: where the target is and how it is described."""

    name: str
    location: str | None = None
    service: str | None = None
    environment: str = "development"
    password_env: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()


def add_target(config: Config, new: NewTarget, check: bool = True) -> dict[str, Any]:
    """Add `new` to the config file the home reads, after checking that aishell can log
    in to it (unless not `check`); nothing is written when either fails."""
    from aishell.commands.servers import check_target

    try:
        check_target_name(new.name)
    except ValueError as exc:
        raise UsageError(f"T{str(exc)[1:]}") from None
    for tag in new.tags:
        if not TAG.fullmatch(tag):
            raise UsageError(
                f"Tag {tag!r} may hold lower-case letters, digits, '-' and '_' only (at most "
                "32), and starts with a letter or digit"
            )
    if new.name in config.main.targets:
        raise UsageError(f"Target '{new.name}' exists in {config.path}; pick another name")
    fields: dict[str, str | list[str]] = {
        "url": _checked_url(new),
        "environment": new.environment,
    }
    _check_password_env(new.password_env)
    _check_description(new.description)
    path = config.path
    if path.resolve().is_relative_to(bundled_config_dir().resolve()):
        raise ConfigError(
            "This home has no config file to add a target to; `aishell init` makes one"
        )
    if new.password_env:
        fields["password_env"] = new.password_env
    if new.description:
        fields["description"] = new.description
    if new.tags:
        fields["tags"] = list(dict.fromkeys(new.tags))
    text = with_target(path.read_text(encoding="utf-8"), new.name, fields)
    server: dict[str, Any] = {}

    def verify(candidate: Path) -> None:
        layers = tuple(candidate if p == path else p for p in config.files)
        data, read_from = read_layers(layers)
        origin = _named_as(read_from, candidate, path)
        main = validate(MainConfig, data, path, tags=CONSTRAINT_TYPES, origin=origin)
        if check:
            server.update(check_target(dataclasses.replace(config, main=main), new.name))

    # Checked as the config it becomes before it replaces the file, in one rename, with
    # the file's own mode: a crash leaves the old file or the new.
    mode = path.stat().st_mode & 0o7777
    write_beside(path, text.encode(), "The config file", ConfigError, mode=mode, check=verify)
    shown = resolve_url(str(fields["url"]), config.home)
    return {
        "name": new.name,
        "file": str(path),
        "url": shown,
        "environment": new.environment,
        "tags": list(dict.fromkeys(new.tags)),
        "checked": server or None,
        "warnings": [said for said in [driver_replaced(new.location)] if said],
    }


def _checked_url(new: NewTarget) -> str:
    """The target's URL, refused as what was typed (LOCATION or --service) when a config
    would refuse it: the file is not yet touched, so its key is not to blame."""
    url = target_url(new.location, new.service)
    try:
        check_target_url(url)
    except ValueError as exc:
        # Not repeated: the location may hold what a person took for a password.
        given = "--service" if new.service is not None else "The location"
        raise UsageError(f"{given} is not one aishell can use: {exc}") from None
    return url


def _check_password_env(variable: str | None) -> None:
    """--password-env refused as the option, before the file is read."""
    try:
        check_env_name(variable)
    except ValueError as exc:
        # Not repeated: a password typed where its variable's name goes is still secret.
        raise UsageError(
            f"--password-env: {exc}; give the name of the variable that holds the password"
        ) from None


def _check_description(description: str) -> None:
    """--description refused as the option, before the file is read."""
    try:
        check_one_line(description)
    except ValueError as exc:
        raise UsageError(f"--description: {exc}") from None


def _named_as(
    read_from: Callable[[Sequence[str]], Path], copy: Path, path: Path
) -> Callable[[Sequence[str]], Path]:
    """Where a key came from, the checked copy named as the config file it becomes: an
    error names the file a person edits."""

    def origin(location: Sequence[str]) -> Path:
        found = read_from(location)
        return path if found == copy else found

    return origin
