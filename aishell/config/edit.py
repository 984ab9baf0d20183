"""Adding a target to a config file as a person would: the new lines under `targets:`,
every other line (comments included) as it was."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aishell.errors import ConfigError

_TARGETS = re.compile(r"^targets:[ \t]*(#.*)?$")
_EMPTY_TARGETS = re.compile(r"^targets:[ \t]*\{[ \t]*\}[ \t]*(#.*)?$")
_ENTRY = re.compile(r"^([ \t]+)[^\s#]")


# A field's value: text, or a list of texts (a target's tags).
Value = str | list[str]


def with_target(text: str, name: str, fields: Mapping[str, Value]) -> str:
    """`text` (a config file) with target `name` added under `targets:`."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for i, line in enumerate(lines):
        if _EMPTY_TARGETS.match(line):
            return "".join([*lines[:i], "targets:\n", *_block(name, fields, "  "), *lines[i + 1 :]])
        if _TARGETS.match(line):
            indent = _indent_after(lines, i) or "  "
            return "".join([*lines[: i + 1], *_block(name, fields, indent), *lines[i + 1 :]])
    if any(line.startswith("targets:") for line in lines):
        raise ConfigError(
            "the file's targets are written in a form aishell does not edit; "
            f"add target '{name}' under targets: by hand"
        )
    return "".join([*lines, "targets:\n", *_block(name, fields, "  ")])


def _indent_after(lines: list[str], at: int) -> str | None:
    """The indent of the first entry under `targets:` (comments do not count)."""
    for line in lines[at + 1 :]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _ENTRY.match(line)
        return found.group(1) if found else None
    return None


def _block(name: str, fields: Mapping[str, Value], indent: str) -> list[str]:
    # JSON strings are YAML's double-quoted scalars, and JSON lists YAML's flow
    # sequences: any name, URL or tag is written safely.
    inner = indent * 2 if indent.strip(" ") == "" else indent + "  "
    lines = [f"{indent}{json.dumps(name)}:\n"]
    lines += [f"{inner}{key}: {json.dumps(value)}\n" for key, value in fields.items()]
    return lines
