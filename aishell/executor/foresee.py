"""A dry run's step after one it needs that was only previewed: its params as far as
they are known (executor/prepare.preview_offline renders them).

The steps that ran gave their outputs; one only previewed gives its output when it runs,
so a reference to it stands as a Pending value, which a tool's render names or reasons
about (Handler.render_sql) rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.plan.references import find_references, substitute
from aishell.tool.context import Pending


def foreseen(
    value: Any,
    outputs: Mapping[str, Any],
    pending: frozenset[str],
    step_id: str,
    absent: frozenset[str],
) -> Any:
    """value with its references substituted; one to a step only previewed is Pending
    (within a longer string, its placeholder's text)."""
    if isinstance(value, str):
        waiting = [r for r in find_references(value) if r.step_id in pending]
        if waiting and waiting[0].text == value:
            return Pending(value, waiting[0].step_id)
        for ref in waiting:
            value = value.replace(ref.text, str(Pending(ref.text, ref.step_id)))
        return substitute(value, outputs, step_id, absent)
    if isinstance(value, Mapping):
        return {k: foreseen(v, outputs, pending, step_id, absent) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [foreseen(v, outputs, pending, step_id, absent) for v in value]
    return value


def as_shown(value: Any) -> Any:
    """Params as a dry run stores and prints them: a Pending value as its reference."""
    if isinstance(value, Pending):
        return value.reference
    if isinstance(value, Mapping):
        return {k: as_shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_shown(v) for v in value]
    return value
