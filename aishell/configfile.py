"""Reading a YAML config file, and pydantic's complaints as messages that name the key.

Below the config (which defines the models) and the registry (which reads tool files
with the same loader).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from aishell.errors import ConfigError

# libyaml's safe loader when PyYAML was built with it: ten times faster, same result.
YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, empty_ok: bool = False) -> dict[str, Any]:
    """The mapping at the top of a config file; anything else is a ConfigError (a file
    of comments alone is an empty mapping when empty_ok)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def validate(
    model: type[BaseModel],
    data: Any,
    path: Path,
    prefix: str = "",
    tags: tuple[str, ...] = (),
    origin: Callable[[Sequence[str]], Path] | None = None,
) -> Any:
    """data as a `model`, or a ConfigError naming the file and the key. `tags` are the
    discriminators of tagged unions (constraint types), left out of the key's name;
    `origin` tells which file a key came from, when data merges several."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        # A discriminated union puts the tag in the location; the user never wrote it.
        loc = [str(p) for p in err["loc"] if p not in tags]
        if origin is not None:
            path = origin(loc)
        key = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
            raise ConfigError(f"{path}: {key}: unknown key{hint}") from None
        if err["type"] == "union_tag_invalid":
            tag = (err.get("ctx") or {}).get("tag")
            raise ConfigError(
                f"{path}: {key}: unknown constraint type '{tag}'; "
                f"expected one of: {', '.join(tags)}"
            ) from None
        if err["type"] == "union_tag_not_found":
            raise ConfigError(f"{path}: {key}: a constraint needs a type") from None
        if err["type"] == "missing":
            raise ConfigError(f"{path}: {key}: required key is missing") from None
        msg = err["msg"].removeprefix("Value error, ")
        expected = msg[0].lower() + msg[1:]
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        raise ConfigError(f"{path}: {key}: {expected}{shown}") from None


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys a model accepts at a location, to list them in an 'unknown key' error."""
    current: Any = model
    skip_free_key = False
    for part in loc:
        if skip_free_key:  # the key of a dict[str, Model], such as a target's name
            skip_free_key = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field_info = current.model_fields.get(part)
        if field_info is None:
            return []
        current = _model_in(field_info.annotation)
        if current is None:
            return []
        if isinstance(current, tuple):
            current, skip_free_key = current[0], True
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        inner = _model_in(args[1])
        return None if inner is None else (inner,)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _model_in(arg)
            if found is not None:
                return found
    return None
