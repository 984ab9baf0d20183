"""The figures a step's approval shows, as they are when it is asked.

A step's estimate is made of the catalog's figures, and some of those are statistics
(PostgreSQL's reltuples, InnoDB's TABLE_ROWS) that only an ANALYZE or a VACUUM makes
current: after a purge that deleted most of a table, the VACUUM asked about next would
show the rows as they were before it. So a table an earlier step of the run wrote to is
shown with its bytes as measured just before the question (covered.measure_subject),
its rows counted then (a read bounded by _COUNTED_AT_MOST rows), and what those earlier
steps did to it; a table no step of the run wrote to keeps the catalog's figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import DBAPIError

from aishell.errors import StatementRefused
from aishell.executor.context import RunContext
from aishell.executor.covered import step_reads
from aishell.executor.results import StepResult
from aishell.policy.measured import bounded_count
from aishell.risk import RiskLevel
from aishell.targets.lockholders import is_lock_timeout
from aishell.tool.context import ToolContext

# A count at the question reads at most this many rows: a bounded cost, and past it
# the figure says "at least".
_COUNTED_AT_MOST = 1_000_000
# The statuses of an earlier step that may have written (a failed purge committed the
# batches before its failure).
_MAY_HAVE_WRITTEN = ("succeeded", "failed", "interrupted", "waiting_approval")


def figures_when_asked(run: RunContext, result: StepResult, ctx: ToolContext) -> dict[str, Any]:
    """The step's estimate as the question shows it: each table an earlier step of the
    run wrote to measured now, with what those steps did to it (`changed_since`)."""
    estimate = dict(result.estimate or {})
    tables = estimate.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        return estimate
    changes = earlier_changes(run, result.index)
    shown: dict[str, Any] = {}
    for table, figures in tables.items():
        now = dict(figures) if isinstance(figures, Mapping) else {}
        if table in changes:
            now.update(_measured_now(run, result, ctx, table))
            now["changed_since"] = changes[table]
        shown[table] = now
    estimate["tables"] = shown
    return estimate


def earlier_changes(run: RunContext, index: int) -> dict[str, list[str]]:
    """{table: what each earlier step of the run that may have written it did}, in words."""
    changes: dict[str, list[str]] = {}
    for earlier in run.results[:index]:
        tool = run.registry.tools.get(earlier.tool)
        if earlier.status not in _MAY_HAVE_WRITTEN or tool is None:
            continue
        if tool.risk_level is RiskLevel.SAFE:  # a safe tool only reads
            continue
        for table in tool.tables_in(earlier.params or {}):
            changes.setdefault(table, []).append(_what_it_did(earlier))
    return changes


def _what_it_did(earlier: StepResult) -> str:
    output = earlier.output if isinstance(earlier.output, Mapping) else {}
    deleted = output.get("rows_deleted")
    did = f"deleted {deleted:,} rows" if isinstance(deleted, int) else "may have changed it"
    ended = "" if earlier.status == "succeeded" else f" ({earlier.status})"
    return f"{earlier.step_id} {earlier.tool} {did}{ended}"


def _measured_now(
    run: RunContext, result: StepResult, ctx: ToolContext, table: str
) -> dict[str, Any]:
    """The table's bytes as measured for the question, and its rows counted now."""
    subject = ((result.subject or {}).get("tables") or {}).get(table) or {}
    found: dict[str, Any] = {"as_of": "now"}
    if subject.get("bytes") is not None:
        found["bytes"] = subject["bytes"]
    if subject.get("rows") is not None and not subject.get("rows_at_least"):
        found["rows"], found["counted"] = subject["rows"], True
        return found
    if run.catalog is None or table not in run.catalog:  # only a name it holds is quoted
        found["as_of"] = "statistics"
        return found
    read = step_reads(run, ctx, result.index, f"{result.step_id} ({result.tool})")
    try:
        counted = read(lambda conn: bounded_count(conn, table, _COUNTED_AT_MOST + 1))
    except StatementRefused:
        found["as_of"] = "statistics"  # its row policy may write: the figure stays
        return found
    except DBAPIError as exc:
        if exc.connection_invalidated or is_lock_timeout(exc):
            raise
        found["as_of"] = "statistics"
        return found
    found["rows"], found["counted"] = min(counted, _COUNTED_AT_MOST), True
    if counted > _COUNTED_AT_MOST:
        found["at_least"] = True
    return found
