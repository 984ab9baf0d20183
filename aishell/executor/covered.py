"""What a step that needs approval acts on, measured when it is asked about (and again
when a resume or a late answer would use that approval): each table's identity, its
rows and bytes as measured (measured.py: its files' size, its rows counted up to a
bound where the size does not bound them), and the code the server may run for it.
resume.outgrown compares two such measures; anything new is a fact a person has not
seen."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.results import StepResult
from aishell.guard.connection import Guard
from aishell.policy.measured import (
    CatalogSizes,
    GuardedRead,
    Measure,
    measure_rows,
    measurer,
    read_sizes,
)
from aishell.registry import ToolDefinition
from aishell.targets.fingerprints import code_digests, identity_change, table_identities
from aishell.tool.context import ToolContext
from aishell.tool.unmeasured import UNMEASURED_KEY

_T = TypeVar("_T")

# How much a table may grow past what was approved and still be the table approved:
# tables keep being written.
_TABLE_SLACK = {"rows": (1.1, 1_000), "bytes": (1.1, 8 * 1024 * 1024)}
# Rows counted, where a table's size does not bound them, when it is first asked about
# without a row limit: a figure a later measure compares with, at a bounded cost.
_SUBJECT_ROWS = 100_000


def step_reads(run: RunContext, ctx: ToolContext, index: int, label: str) -> GuardedRead:
    """Reads on the step's connection, each audited as the step's measuring (attempt 0)
    and passed by a guard that lets no write through."""
    return _StepReads(run, ctx, index, label)


class _StepReads:
    def __init__(self, run: RunContext, ctx: ToolContext, index: int, label: str) -> None:
        self.run, self.ctx, self.index, self.label = run, ctx, index, label

    def __call__(self, read: Callable[[Connection], _T]) -> _T:
        guard = Guard(label=self.label, memory=self.run.guard_memory)
        with audited(self.run, self.ctx, self.index, 0, guard):
            return read(self.ctx.connection)


def step_measure(
    run: RunContext, ctx: ToolContext, index: int, tool: ToolDefinition, catalog: CatalogSizes
) -> Measure:
    """The step's tables measured for a row limit (policy.gather_facts), their sizes
    read with the plan's other tables (ctx.table_readings)."""
    read = step_reads(run, ctx, index, f"step {index} ({tool.name})")
    held: dict[str, Any] = {}
    ctx.step_cache[UNMEASURED_KEY] = held  # what the step may then not do: prepare.py
    return measurer(run.target.dialect, read, catalog, ctx.table_readings, held)


def measure_subject(
    run: RunContext, result: StepResult, tool: ToolDefinition, ctx: ToolContext
) -> dict[str, Any]:
    """The step's tables (identity, rows, bytes) and code, read now (audited as the
    step's measuring, read-only)."""
    catalog = run.catalog
    guard = Guard(label=f"{result.step_id} ({tool.name})", memory=run.guard_memory)
    with audited(run, ctx, result.index, 0, guard):
        tables = tool.tables_in(result.params) + _besides(tool, result, ctx)
        if catalog is not None and tables:
            catalog.changed(tables)  # the answer may have come long after the catalog
            catalog.current(ctx.connection, tables)
        identities = table_identities(ctx.connection, tables)
        code = code_digests(ctx.connection)
        # Whole, indexes and TOAST with the heap: a table grown only in its indexes
        # since it was approved is not the table approved.
        sizes = {}
        if catalog is not None:
            sizes = read_sizes(ctx.connection, tables, catalog)
    measured: dict[str, Any] = {}
    read = step_reads(run, ctx, result.index, guard.label)
    for name in tables:
        found: dict[str, Any] = {"rows": None, "bytes": None}
        if catalog is not None:
            cap = _rows_cap(run, result, name)
            rows = measure_rows(run.target.dialect, read, catalog, name, sizes.get(name), cap)
            found = rows.to_dict()
        measured[name] = {"id": identities.get(name), **found}
    return {"tables": measured, "code": code}


def _besides(tool: ToolDefinition, result: StepResult, ctx: ToolContext) -> tuple[str, ...]:
    """The tables the step acts on besides its params' (a restore's replaced tables)."""
    impl = tool.implementation(ctx.dialect)
    subject = getattr(impl, "subject_tables", None)
    return tuple(subject(result.params, ctx)) if callable(subject) else ()


def _rows_cap(run: RunContext, result: StepResult, table: str) -> int:
    """How far the table's rows are counted: one past the growth the step's earlier
    approval (or question) allows, so that the count decides it; asked about for the
    first time, far enough for a later measure to compare with."""
    factor, plus = _TABLE_SLACK["rows"]
    for earlier in (
        run.store.last_approval(run.run_id, result.index),
        run.store.last_request(run.run_id, result.index),
    ):
        most = _most_rows(_subject_table(earlier, table))
        if most is not None:
            return int(most * factor + plus)
    return _SUBJECT_ROWS


def _subject_table(earlier: Mapping[str, Any] | None, table: str) -> Mapping[str, Any]:
    given = (earlier or {}).get("given_for")
    subject = given.get("subject") if isinstance(given, Mapping) else None
    tables = subject.get("tables") if isinstance(subject, Mapping) else None
    found = tables.get(table) if isinstance(tables, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def _most_rows(table: Mapping[str, Any]) -> int | None:
    """The most rows a subject's table was measured to have (None: no bound)."""
    rows, most = table.get("rows"), table.get("rows_at_most")
    if isinstance(rows, int) and not table.get("rows_at_least"):
        return rows
    return most if isinstance(most, int) else None


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
            change = identity_change(before.get("id"), after.get("id"), "it was approved")
            changes.append(f"table {name} {change}")
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
    """A table's rows or bytes past the slack over what was approved: the most it was
    measured to have then against the fewest it is measured to have now (an exact
    count, or at least the count that stopped at its bound)."""
    grown = []
    figures = {
        "rows": (_most_rows(before), after.get("rows"), _shown_rows),
        "bytes": (before.get("bytes"), after.get("bytes"), _shown_bytes),
    }
    for key, (factor, plus) in _TABLE_SLACK.items():
        was, is_now, shown = figures[key]
        if isinstance(was, int) and isinstance(is_now, int) and is_now > was * factor + plus:
            grown.append(f"table {name}: {key} {shown(before)} -> {shown(after)}")
    return grown


def _shown_rows(table: Mapping[str, Any]) -> str:
    rows, most = table.get("rows"), table.get("rows_at_most")
    if isinstance(rows, int):
        return f"{'at least ' if table.get('rows_at_least') else ''}{rows:,}"
    return f"at most {most:,}" if isinstance(most, int) else "unmeasured"


def _shown_bytes(table: Mapping[str, Any]) -> str:
    size = table.get("bytes")
    about = "about " if table.get("bytes_estimated") else ""
    return f"{about}{size:,}" if isinstance(size, int) else "unmeasured"
