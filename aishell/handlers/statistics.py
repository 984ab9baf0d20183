"""update_table_statistics on every engine: the planner statistics of one table, or of
many in one step.

A quick maintenance of thousands of small tables would otherwise pay a step (its
checks, its checkpoint in state.db) for each statement that costs the server about a
millisecond. Each engine says which tables the role may not analyze (found before
anything is sent), the statements for the rest, how to send them (hearing which tables
the server skipped) and the row estimates afterwards; the step's tables, its preview
and its output (the same keys on every engine) are made here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepSkipped
from aishell.handlers import Handler, cached
from aishell.risk import RiskLevel
from aishell.toolcontext import ToolContext

# Tables the role may not analyze, and why: table -> reason.
Refusals = dict[str, str]


@dataclass(frozen=True)
class Engine:
    """What one engine does for the tool; see the module's docstring."""

    # Before anything is sent: the tables the server would refuse or skip.
    refused: Callable[[Connection, list[str], ToolContext], Refusals]
    # The statements that analyze these tables (all of them are sent, in order).
    statements: Callable[[list[str], ToolContext], list[str]]
    # Sends the statements; the tables the server said it skipped, and why.
    send: Callable[[Connection, list[str], list[str]], Refusals]
    # table -> the row count the statistics now hold, for the tables analyzed.
    estimates: Callable[[Connection, list[str]], dict[str, int]]
    # What the tool declares it may send (its statements for one table, its reads).
    templates: tuple[str, ...]


def tables_of(params: Mapping[str, Any]) -> list[str]:
    """The step's tables, in order, each once: `tables`, or the one `table`."""
    if params.get("tables") is not None:
        return list(dict.fromkeys(str(t) for t in params["tables"]))
    return [str(params["table"])]


def statistics_handler(engine: Engine) -> Handler:
    """The update_table_statistics handler of one engine."""

    def split(params: Mapping[str, Any], ctx: ToolContext) -> tuple[list[str], Refusals]:
        def compute() -> tuple[list[str], Refusals]:
            tables = tables_of(params)
            refused = engine.refused(ctx.connection, tables, ctx)
            return [t for t in tables if t not in refused], refused

        # The preview and the run send the same statements: one answer per step.
        found: tuple[list[str], Refusals] = cached(ctx, "statistics_split", compute)
        return found

    def render(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        todo, refused = split(params, ctx)
        skipped = [f"-- {reason}" for reason in refused.values()]
        return [*skipped, *engine.statements(todo, ctx)] if todo else skipped

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        todo, refused = split(params, ctx)
        skipped = dict(refused)
        if todo:
            skipped.update(engine.send(conn, engine.statements(todo, ctx), todo))
        analyzed = [t for t in todo if t not in skipped]
        output: dict[str, Any] = {
            "tables": tables_of(params),
            "statistics_updated": bool(analyzed),
            "tables_analyzed": len(analyzed),
            "row_estimates": engine.estimates(conn, analyzed) if analyzed else {},
        }
        if "table" in params:
            output["table"] = params["table"]
        if skipped:
            output["skipped_tables"] = [{"table": t, "reason": r} for t, r in skipped.items()]
        if not analyzed:
            # The server did none of the step's work: the step says so.
            raise StepSkipped(next(iter(skipped.values())), output)
        return output

    return Handler(
        sql_templates=engine.templates,
        run_fn=run,
        render_fn=render,
        risk=RiskLevel.LOW,
        effect="updates statistics",
        changes_tables=False,
    )
