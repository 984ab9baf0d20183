"""What a step that needs approval acts on, measured when it is asked about (and again
when a resume or a late answer would use that approval): each table's identity, its
rows and bytes, and the code the server may run for it. resume.outgrown compares two
such measures; anything new is a fact a person has not seen."""

from __future__ import annotations

from typing import Any

from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.results import StepResult
from aishell.guard.connection import Guard
from aishell.registry import ToolDefinition
from aishell.targets.fingerprints import code_digests, table_identities
from aishell.tool.context import ToolContext

# How much a table may grow past what was approved and still be the table approved:
# two estimates of one table differ a little, and tables keep being written.
_TABLE_SLACK = {"rows": (1.1, 1_000), "bytes": (1.1, 8 * 1024 * 1024)}


def measure_subject(
    run: RunContext, result: StepResult, tool: ToolDefinition, ctx: ToolContext
) -> dict[str, Any]:
    """The step's tables (identity, rows, bytes) and code, read now (audited as the
    step's measuring, read-only)."""
    tables = tool.tables_in(result.params)
    catalog = run.catalog
    guard = Guard(label=f"{result.step_id} ({tool.name})", memory=run.guard_memory)
    with audited(run, ctx, result.index, 0, guard):
        if catalog is not None and tables:
            catalog.changed(tables)  # the answer may have come long after the catalog
            catalog.current(ctx.connection, tables)
        identities = table_identities(ctx.connection, tables)
        code = code_digests(ctx.connection, tables)
    measured = {
        name: {
            "id": identities.get(name),
            "rows": catalog.rows(name) if catalog is not None else None,
            "bytes": catalog.size(name) if catalog is not None else None,
        }
        for name in tables
    }
    return {"tables": measured, "code": code}


def subject_changes(then: Any, now: Any) -> list[str]:
    """What differs between the subject an approval was given for and the one now."""
    if not isinstance(then, dict) or not isinstance(now, dict):
        return []
    changes = []
    before_tables, after_tables = then.get("tables") or {}, now.get("tables") or {}
    for name, after in sorted(after_tables.items()):
        before = before_tables.get(name)
        if not isinstance(before, dict):
            continue
        if before.get("id") != after.get("id"):
            changes.append(
                f"table {name} is not the table it was approved for (dropped and created "
                "again, rebuilt, or another renamed to its name since)"
            )
            continue
        changes += _grown(name, before, after)
    before_code, after_code = then.get("code") or {}, now.get("code") or {}
    for what in sorted(set(before_code) | set(after_code)):
        was, is_now = before_code.get(what), after_code.get(what)
        if was == is_now:
            continue
        change = "added" if was is None else "dropped" if is_now is None else "changed"
        changes.append(f"{what} {change} since it was approved")
    return changes


def _grown(name: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    grown = []
    for key, (factor, plus) in _TABLE_SLACK.items():
        was, is_now = before.get(key), after.get(key)
        if isinstance(was, int) and isinstance(is_now, int) and is_now > was * factor + plus:
            shown = f"{was:,} -> {is_now:,}"
            grown.append(f"table {name}: {key} {shown}")
    return grown
