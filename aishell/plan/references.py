"""${step_N.output.key} references between plan steps.

A reference that is a whole string value is replaced by the referenced value with
its type (a list stays a list); one embedded in a longer string is replaced by its
text (JSON for lists and objects). Paths reach nested keys (`.a.b`) and list items
(`[0]` or `.0`). `${steps.<id>.output.key}` names a step by id instead of index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aishell.errors import SubstitutionError

_REFERENCE = re.compile(
    r"\$\{(?:step_(?P<index>\d+)|steps\.(?P<id>[A-Za-z0-9_-]+))\.output"
    r"(?P<path>(?:\.[A-Za-z0-9_-]+|\[\d+\])*)\}"
)
_PATH_PART = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Reference:
    text: str
    step_id: str
    path: tuple[str | int, ...]

    @property
    def key(self) -> str:
        """What it names in its step's output, as a person reads it: `corrupted_tables`,
        `rows[0]`, or `output` for the whole of it."""
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        return path.lstrip(".") or "output"


def find_references(value: Any) -> list[Reference]:
    """Every reference anywhere inside value (nested dicts and lists included)."""
    found: list[Reference] = []
    if isinstance(value, str):
        if "${" in value:  # most values hold none: a plan may have thousands of them
            found += [_reference(match) for match in _REFERENCE.finditer(value)]
    elif isinstance(value, Mapping):
        for item in value.values():
            found += find_references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str) or "${" in item:
                found += find_references(item)
    return found


def unmet(condition: str, values: Mapping[str, Any] | None = None) -> str:
    """Why a step whose condition did not hold was skipped, in words a person reads:
    `${step_1.output.corrupted_tables}` as "step_1 found no corrupted_tables"; an
    expression with each reference as `key of step_N` and, given `values` (each
    reference's value by its text), what they were."""
    refs = find_references(condition)
    if len(refs) == 1 and refs[0].text == condition.strip():
        return f"{refs[0].step_id} found no {refs[0].key}: nothing to do"
    for ref in refs:
        condition = condition.replace(ref.text, f"{ref.key} of {ref.step_id}")
    condition = " ".join(condition.split())
    shown = values or {}
    were = "; ".join(
        f"{ref.key} of {ref.step_id} is {_clipped(shown[text])}"
        for text, ref in {r.text: r for r in refs}.items()
        if text in shown
    )
    return f"its condition ({condition}) is false{f' ({were})' if were else ''}: nothing to do"


def _clipped(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def has_references(value: Any) -> bool:
    """Whether value holds a reference anywhere (find_references, without parsing each)."""
    if isinstance(value, str):
        return "${" in value and _REFERENCE.search(value) is not None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return any(
            has_references(item) for item in value if not isinstance(item, str) or "${" in item
        )
    return False


def substitute(
    value: Any,
    outputs: Mapping[str, Any],
    step_id: str,
    absent: frozenset[str] = frozenset(),
) -> Any:
    """A copy of value with every reference replaced from outputs (step id -> output).

    References to steps in `absent` (steps that did not run, for a step that runs
    regardless) resolve to None instead of failing.
    """
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return _resolve(_reference(whole), outputs, step_id, absent)
        return _REFERENCE.sub(
            lambda m: _as_text(_resolve(_reference(m), outputs, step_id, absent)), value
        )
    if isinstance(value, Mapping):
        return {k: substitute(v, outputs, step_id, absent) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, outputs, step_id, absent) for v in value]
    return value


def _reference(match: re.Match[str]) -> Reference:
    step_id = f"step_{int(match.group('index'))}" if match.group("index") else match.group("id")
    path: list[str | int] = []
    for key, index in _PATH_PART.findall(match.group("path")):
        path.append(int(index) if index else key)
    return Reference(text=match.group(0), step_id=step_id, path=tuple(path))


def _resolve(
    ref: Reference, outputs: Mapping[str, Any], step_id: str, absent: frozenset[str]
) -> Any:
    if ref.step_id in absent and ref.step_id not in outputs:
        return None
    if ref.step_id not in outputs:
        raise SubstitutionError(
            f"{step_id}: {ref.text} refers to {ref.step_id}, which has no output "
            "(it has not run, or did not succeed)"
        )
    current: Any = outputs[ref.step_id]
    walked = f"{ref.step_id}.output"
    for part in ref.path:
        if isinstance(current, Mapping):
            key = str(part)
            if key not in current:
                keys = ", ".join(sorted(map(str, current))) or "(none)"
                raise SubstitutionError(
                    f"{step_id}: {ref.text}: {walked} has no key '{key}'; keys are: {keys}"
                )
            current = current[key]
        elif isinstance(current, list | tuple):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise SubstitutionError(
                    f"{step_id}: {ref.text}: {walked} is a list of {len(current)} items; "
                    f"no item [{part}]"
                ) from None
        else:
            raise SubstitutionError(
                f"{step_id}: {ref.text}: {walked} is a {type(current).__name__}, "
                f"not an object or list, so it has no '{part}'"
            )
        walked += f"[{part}]" if isinstance(part, int) else f".{part}"
    return current


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
