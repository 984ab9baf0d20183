"""update_table_statistics on every engine: the planner statistics of one table, or of
many in one step.

A quick maintenance of thousands of small tables would otherwise pay a step (its
checks, its checkpoint in state.db) for each statement that costs the server about a
millisecond. Each engine says which tables the role may not analyze (found before
anything is sent), the statements for the rest, how to send them (hearing which tables
the server skipped), the row estimates afterwards and what the preview says beside the
statements (the MyISAM and Aria tables whose ANALYZE TABLE holds off writes); the
step's tables, its preview and its output (the same keys on every engine) are made here.

One table's trouble does not stop the others: when the grouped statements fail on a
lock the server could not get within the target's lock wait (an anti-wraparound
autovacuum, another session's LOCK TABLE) or on a table dropped since the plan, the
tables are sent one at a time; a table still held after a second try is skipped, named
with the sessions holding it, and a dropped one is reported gone. When every table
of the step is held the step raises the lock's error, so the executor retries it as
any step, and then ends it skipped with each table and its holders named (the tool
skips held tables: executor/heldtables.py). SQLite locks the whole file, never one
table: there a lock stops every table alike and the step waits and fails as a whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import Handler, cached
from aishell.handlers.held import (
    GONE,
    one_at_a_time,
    rollback,
    unless_none_done,
    worth_one_at_a_time,
)
from aishell.risk import RiskLevel
from aishell.tool.context import ToolContext
from aishell.tool.unmeasured import held_when_measured, unmeasured_tables

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
    # What the preview says beside the statements of these tables (comment lines): where
    # the engine holds a table more than the tool's usual lock (MyISAM's ANALYZE TABLE).
    notes: Callable[[list[str], ToolContext], list[str]] | None = None


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
        return [f"-- {reason}" for reason in refused.values()] + _shown(engine, todo, ctx)

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        todo, refused = split(params, ctx)
        skipped = dict(refused)
        unmeasured = unmeasured_tables(ctx)  # held when measured: left out
        held: Refusals = {t: held_when_measured(conn, t) for t in todo if t in unmeasured}
        todo = [t for t in todo if t not in held]
        if todo:
            # Without a table left out, the statement approved for all of them; with one,
            # each table's own, as after a lock wait.
            found, still_held = _send_each(engine, conn, todo, ctx, together=not held)
            skipped.update(found)
            held.update(still_held)
        gone = [t for t, why in skipped.items() if why == GONE]
        analyzed = [t for t in todo if t not in skipped and t not in held]
        others = {t: why for t, why in skipped.items() if why != GONE}
        entries: list[dict[str, str]] = [{"table": t, "reason": r} for t, r in others.items()]
        entries += [{"table": t, "reason": r, "cause": "locked"} for t, r in held.items()]
        # Every key the definition's `returns:` declares, on every engine, always: a
        # reference to one (${step_N.output.tables_gone}) never depends on the engine.
        output: dict[str, Any] = {
            "table": params.get("table"),
            "tables": tables_of(params),
            "statistics_updated": bool(analyzed),
            "tables_analyzed": len(analyzed),
            "tables_done": analyzed,
            "row_estimates": engine.estimates(conn, analyzed) if analyzed else {},
            "skipped_tables": entries,
            "tables_gone": gone,
        }
        # The server did none of the step's work: the step says so.
        return unless_none_done(bool(analyzed), entries, gone, output)

    return Handler(
        sql_templates=engine.templates,
        run_fn=run,
        render_fn=render,
        risk=RiskLevel.LOW,
        effect="updates statistics",
        changes_tables=False,
        shares_tables=True,
    )


def _shown(engine: Engine, todo: list[str], ctx: ToolContext) -> list[str]:
    """The statements of the tables to analyze, after what the engine says beside them."""
    if not todo:
        return []
    notes = engine.notes(todo, ctx) if engine.notes is not None else []
    return [*notes, *engine.statements(todo, ctx)]


def _send_each(
    engine: Engine, conn: Connection, todo: list[str], ctx: ToolContext, together: bool = True
) -> tuple[Refusals, Refusals]:
    """The tables sent together (unless not `together`); after a lock timeout or a
    dropped table, one at a time. The server's refusals, and the tables still held after
    a second try with who holds them. Every table held: the lock's error, for the
    executor's retry."""
    if together or len(todo) == 1:
        try:
            return engine.send(conn, engine.statements(todo, ctx), todo), {}
        except DBAPIError as exc:
            if len(todo) == 1 or not worth_one_at_a_time(exc):
                raise
            rollback(conn)
    found = one_at_a_time(
        conn,
        todo,
        lambda t: engine.send(conn, engine.statements([t], ctx), [t]),
        "ANALYZE",
        ctx.table_readings,
    )
    if found.lock_error is not None and len(found.held) == len(todo):
        raise found.lock_error
    skipped: Refusals = dict.fromkeys(found.gone, GONE)
    for refusals in found.done.values():
        skipped.update(refusals)
    return skipped, found.held
