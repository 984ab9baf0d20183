"""Reading a YAML config file, and pydantic's complaints as messages that name the key.

Below the config (which defines the models) and the registry (which reads tool files
with the same loader).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from aishell.config.numbers import float_range_lost
from aishell.config.sources import read_source
from aishell.errors import ConfigError
from aishell.terminal import printable

# Aliases may repeat at most this many nodes in all: a file with a few anchors shares a
# block or two, while a "billion laughs" of a few hundred bytes expands to millions of
# nodes, which every later walk of the data (checks, pickling, printing) would follow.
MAX_ALIAS_NODES = 10_000
_MERGE_TAG = "tag:yaml.org,2002:merge"

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAML_LOADER(_Base):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml's when PyYAML has it, ten times faster) that also refuses
    aliases expanding past MAX_ALIAS_NODES or into themselves, a key given twice in one
    mapping, and NUL in a string; each a YAMLError with the line."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and self._may_alias:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            self._refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)

    def construct_scalar(self, node: Any) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and "\x00" in value:
            raise yaml.constructor.ConstructorError(
                None, None, "a NUL character in a string", node.start_mark
            )
        return value

    def _refuse_duplicate_keys(self, node: Any) -> None:
        # Before merge keys (<<) are flattened: a key of the mapping itself may override
        # a merged one, but not another of its own.
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the constructor says so itself
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {printable_key(key)} "
                    f"(first given on line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )

    # Set by parse_yaml: without an anchor (`&`) in the text no alias can expand.
    _may_alias = True


def _scalar_or_refusal(construct: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A scalar's constructor whose refusal (a date with month 13, an integer of more
    digits than Python converts) is a YAMLError at the scalar's line."""

    def checked(loader: Any, node: Any) -> Any:
        try:
            value = construct(loader, node)
        except (ValueError, OverflowError) as exc:
            problem = str(exc).split(":")[0]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"not a usable {node.tag.rsplit(':', 1)[-1]}: {problem}",
                node.start_mark,
            ) from None
        unusable = float_range_lost(node.value, value) if isinstance(value, float) else None
        if unusable:
            raise yaml.constructor.ConstructorError(
                None, None, f"not a usable float: {unusable}", node.start_mark
            )
        return value

    return checked


for _scalar in ("int", "float", "timestamp"):
    _tag = f"tag:yaml.org,2002:{_scalar}"
    YAML_LOADER.add_constructor(_tag, _scalar_or_refusal(YAML_LOADER.yaml_constructors[_tag]))

# Booleans and numbers as YAML 1.2 reads them, not 1.1: `on`, `yes`, `y` are words, not
# true (`retention_days: on` was a retention of 1 day); `010` is not octal 8, `1:30` not
# 90, `1_000` not 1000, `0x10` not 16. Each of those is now a string, which a number's
# field refuses, and the message shows it as written.
_PLAIN_SCALARS = {
    "bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    "int": (r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    "float": (
        r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
}
YAML_LOADER.yaml_implicit_resolvers = {
    first: [
        (tag, pattern) for tag, pattern in resolvers if tag.rsplit(":", 1)[-1] not in _PLAIN_SCALARS
    ]
    for first, resolvers in YAML_LOADER.yaml_implicit_resolvers.items()
}
for _scalar, (_pattern, _first) in _PLAIN_SCALARS.items():
    YAML_LOADER.add_implicit_resolver(
        f"tag:yaml.org,2002:{_scalar}", re.compile(_pattern), list(_first)
    )


def printable_key(key: Any) -> str:
    """A key as a message shows it: quoted, control characters escaped, cut short."""
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _children(node: Any) -> list[Any]:
    """A collection's nodes: a mapping's keys and values, a sequence's items."""
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


def _check_expansion(root: Any) -> None:
    """Refuse a node graph whose aliases repeat more than MAX_ALIAS_NODES nodes, or
    refer to a collection that holds them. Linear in the distinct collections: a bomb is
    measured, never expanded. Scalars count one each where they stand (an alias to a
    scalar repeats one node, and the file's size bounds those)."""
    if isinstance(root, yaml.ScalarNode):
        return
    sizes: dict[int, int] = {}  # a collection's nodes, expanded, by id
    distinct = 0
    on_path: set[int] = set()
    stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        if children is not None:  # its children are measured
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in children)
            continue
        if id(node) in sizes:
            continue
        children = _children(node)
        distinct += 1 + sum(isinstance(child, yaml.ScalarNode) for child in children)
        on_path.add(id(node))
        stack.append((node, children))
        for child in children:
            if isinstance(child, yaml.ScalarNode) or id(child) in sizes:
                continue
            if id(child) in on_path:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to a node that holds it", child.start_mark
                )
            stack.append((child, None))
    repeated = sizes[id(root)] - distinct
    if repeated > MAX_ALIAS_NODES:
        # Named at the innermost collection already over the limit: where it blows up.
        over = _innermost_over(root, sizes)
        raise yaml.composer.ComposerError(
            None,
            None,
            f"aliases expand to {repeated} more nodes, over the limit of "
            f"{MAX_ALIAS_NODES} (an alias bomb?)",
            over.start_mark,
        )


def _innermost_over(root: Any, sizes: dict[int, int]) -> Any:
    """The smallest collection that expands past MAX_ALIAS_NODES: where a bomb goes off.
    Only on refusal, so the walk of an ordinary file keeps no list of its nodes."""
    best, seen, stack = root, set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen or sizes.get(id(node), 0) <= MAX_ALIAS_NODES:
            continue
        seen.add(id(node))
        if sizes[id(node)] < sizes[id(best)]:
            best = node
        stack.extend(_children(node))
    return best


def parse_yaml(raw: bytes, path: Path) -> Any:
    """The document in raw (a file's bytes): valid UTF-8, one document, refused as the
    loader says; any problem is a ConfigError `path:line: what`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[start : exc.start].decode("utf-8")) + 1
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})"
        ) from None
    loader = YAML_LOADER(raw if _Base is not yaml.SafeLoader else text)
    loader._may_alias = b"&" in raw
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, path)) from None
    except RecursionError:  # nesting deeper than Python's stack
        raise ConfigError(f"{path}: nested too deeply") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, path: Path) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    if isinstance(exc, yaml.MarkedYAMLError) and not isinstance(
        exc, yaml.constructor.ConstructorError | yaml.composer.ComposerError
    ):
        problem = f"invalid YAML: {problem}"
    return f"{where}: {printable(problem)}"


def read_yaml(path: Path, empty_ok: bool = False, raw: bytes | None = None) -> dict[str, Any]:
    """The mapping at the top of a config file (`raw`: its bytes, when already read);
    anything else is a ConfigError (a file of comments alone is an empty mapping when
    empty_ok)."""
    data = parse_yaml(read_source(path) if raw is None else raw, path)
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
        # A mapping's own key refused (a target's name): the message names the key, so
        # the error is about the mapping that holds it.
        key_refused = loc[-1:] == ["[key]"]
        if key_refused:
            loc = loc[:-2]
        key = key_name(loc, prefix) or "(top level)"
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
        got = err.get("input")
        if err["type"] in ("model_type", "dict_type"):
            raise ConfigError(
                f"{path}: {key}: expected a mapping of keys, not {_kind(got)}"
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        expected = msg[0].lower() + msg[1:]
        shown = "" if key_refused or (loc and _never_shown(loc[-1])) else _shown(got)
        raise ConfigError(f"{path}: {key}: {expected}{shown}") from None


def key_name(loc: Sequence[str | int], prefix: str = "", positions: bool = False) -> str:
    """The key a message names for a pydantic location: its parts joined by dots after
    the prefix; with positions, a list's item as [i] (params.tables[0])."""
    name = prefix
    for part in loc:
        if positions and isinstance(part, int):
            name += f"[{part}]"
        else:
            name = f"{name}.{part}" if name else str(part)
    return name


# Keys whose value may carry a password or a token: an error about them never repeats it.
# A key that names where a secret is (password_env, token_file) may hold the secret
# itself, typed there by mistake: the very value a wrong one is.
_NEVER_SHOWN = frozenset({"url", "webhook", "command", "host"})


def _never_shown(key: str | int) -> bool:
    name = str(key)
    return name in _NEVER_SHOWN or name.endswith(("_env", "_file"))


def _kind(value: Any) -> str:
    """What a value is, in words that never repeat it (a URL with its password)."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _shown(value: Any) -> str:
    """The value an error quotes back, or nothing: never a collection, nor text that may
    hold a secret (a URL, user@host, a long string)."""
    if isinstance(value, dict | list) or value is None:
        return ""
    if isinstance(value, str) and ("://" in value or "@" in value or len(value) > 80):
        return ""
    return f" (got {printable(repr(value))})"


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
