"""The tables a drafted plan of a job may work on: only those the job names.

A table named in a step is checked against the job's list as it stands (vet.py). Two
ways around that list are closed here: a step of a tool that takes tables but is
given none, or an empty list (the catalog's tools then work on every table), and a
table given as a ${...} reference, whose value is known only when the plan runs. A
reference is taken only from an earlier step that was itself given the job's tables
alone: what a tool reports of the tables it was given names no other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aishell.errors import ToolNotFound
from aishell.plan.model import Step, clip
from aishell.plan.references import find_references
from aishell.registry import Registry, ToolDefinition
from aishell.tool import params as schema


def scope_problems(
    step: Step,
    steps: Sequence[Step],
    tool: ToolDefinition,
    registry: Registry,
    scope: frozenset[str] | None,
    where: str,
) -> list[str]:
    """Where the step may work on a table the job does not name (None: no limit)."""
    if scope is None or not _table_params(tool):
        return []
    named = f"the job names only: {_listing(scope)}"
    values = list(_table_values(step, tool))
    if not values:
        return [
            f"{where}: names no table, so it works on every table of the target; {named}; "
            f"give {' or '.join(_table_params(tool))}"
        ]
    earlier = steps[: steps.index(step)] if step in steps else list(steps)
    kept = _kept_in(earlier, registry, scope)
    problems = []
    for value in values:
        source = _whole_reference(value)
        if source is not None and source not in kept:
            problems.append(
                f"{where}: {clip(value)} may name tables the job does not; {named}: name "
                "them, or refer to an earlier step given only them"
            )
    return problems


def _kept_in(steps: Sequence[Step], registry: Registry, scope: frozenset[str]) -> set[str]:
    """The steps given tables, each one of `scope` or a reference to such a step: only
    the tables their outputs name are the job's. In one pass, in order (a reference
    points back)."""
    kept: set[str] = set()
    for step in steps:
        try:
            tool = registry.get(step.tool)
        except ToolNotFound:
            continue
        values = list(_table_values(step, tool))
        if values and all(_kept(value, kept, scope) for value in values):
            kept.add(step.id)
    return kept


def _kept(value: str, kept: set[str], scope: frozenset[str]) -> bool:
    source = _whole_reference(value)
    return value in scope if source is None else source in kept


def _table_params(tool: ToolDefinition) -> list[str]:
    return [
        name for name, (kind, _) in schema.identifier_params(tool.params).items() if kind == "table"
    ]


def _table_values(step: Step, tool: ToolDefinition) -> Iterable[str]:
    """Each table the step gives, as written: a name, or a ${...} reference (a whole
    list given as one is one value)."""
    for name in _table_params(tool):
        given: Any = step.params.get(name)
        for value in given if isinstance(given, list) else [given]:
            if isinstance(value, str) and value:
                yield value


def _whole_reference(value: str) -> str | None:
    """The step a value that is one whole ${...} reference refers to; None for a name.
    A name that mixes a reference with text is refused by vet.py, and counted here as
    refused too."""
    found = find_references(value)
    if not found:
        return None
    return found[0].step_id if len(found) == 1 and found[0].text == value else ""


def _listing(names: Iterable[str], most: int = 20) -> str:
    shown = sorted(names)
    return ", ".join(shown[:most]) + (" ..." if len(shown) > most else "")
