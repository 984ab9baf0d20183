"""optimize_table (OPTIMIZE TABLE) and update_table_statistics (ANALYZE TABLE) on MySQL
and MariaDB, with the table's size before and after."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed
from aishell.handlers import Handler, cached, measured, skip_table
from aishell.handlers.held import GONE
from aishell.handlers.mysql.catalog import FILE_SIZE, TABLE, recent_table_size, table_size
from aishell.handlers.mysql.checkrows import DENIED_TEXT, raise_if_retryable
from aishell.handlers.mysql.engines import (
    ENGINES,
    OFFLINE_INDEXES,
    analyze_lock,
    analyze_refusal,
    engines_of,
    offline_indexes,
    optimize_refusal,
    whole_table_lock,
)
from aishell.handlers.mysql.fragmentation import (
    COLUMNS,
    SAMPLE,
    measure,
    not_rebuilt_because,
    rebuild_reason,
)
from aishell.handlers.mysql.privileges import (
    OPTIMIZE_NEEDS,
    denied,
    not_done,
    refusals,
    require_privileges,
    run_checked,
)
from aishell.handlers.shared import STEP_KEY, shared_step
from aishell.handlers.statistics import Engine, Refusals, statistics_handler
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.tool.context import ToolContext


def _measured(
    params: Mapping[str, Any], ctx: ToolContext
) -> tuple[dict[str, Any], dict[str, Any], str | None, str]:
    """The table's size, why it is worth a rebuild (None: it is not) and why not, as the
    preview and the first attempt see them (as a rebuild of the table just left them, if
    one did): its free space measured as the fragmentation step measures it, half-empty
    pages counted, not its DATA_FREE alone."""
    table = params["table"]
    always = {**params, "min_pages": 1}

    def read() -> tuple[dict[str, Any], dict[str, Any], str | None, str]:
        row, total, space = measure(ctx, table)
        size = recent_table_size(ctx, table, row)
        why_not = not_rebuilt_because(always, row, total, space)
        return row, size, rebuild_reason(always, row, total, space), why_not

    return measured(ctx, f"optimize:{table}", read)


# A rebuild recalculates the table's statistics (InnoDB's persistent ones whatever its
# STATS_AUTO_RECALC; MyISAM's and Aria's key statistics): no OPTIMIZE leaves them.
_KEEPS_STATISTICS = (
    "not optimized: OPTIMIZE TABLE would recalculate its statistics (update_stats is false)"
)


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    if not params.get("update_stats", True):
        return {
            "table": table,
            "vacuumed": False,
            "reason": _KEEPS_STATISTICS,
            "reclaimed_bytes": 0,
        }
    row, size, reason, why_not = _measured(params, ctx)
    if reason is None:
        return {
            "table": table,
            "vacuumed": False,
            "reason": why_not,
            "size_before": size["bytes"],
            "size_after": size["bytes"],
            "size_method": size["method"],
            "reclaimed_bytes": 0,
        }
    refusal = optimize_refusal(table, row["engine"])
    if refusal is not None:
        skip_table(table, refusal, {"vacuumed": False, "reclaimed_bytes": 0})
    require_privileges(conn, table, OPTIMIZE_NEEDS, "OPTIMIZE TABLE", ctx.run_cache)
    before = size
    if before["method"] != FILE_SIZE:
        # The statistics lag behind the table; OPTIMIZE refreshes them, so refresh them
        # first too, or the difference is the statistics catching up.
        analyze = f"ANALYZE TABLE {ctx.quote(table)}"
        run_checked(conn, analyze, table, "ANALYZE TABLE", must_be_done=False)
        before = table_size(conn, table)
    messages = run_checked(conn, f"OPTIMIZE TABLE {ctx.quote(table)}", table, "OPTIMIZE TABLE")
    after = table_size(conn, table)
    result: dict[str, Any] = {
        "table": table,
        "vacuumed": True,
        "size_before": before["bytes"],
        "size_after": after["bytes"],
        "size_method": after["method"],
        "reclaimed_bytes": max(before["bytes"] - after["bytes"], 0),
        "messages": messages,
    }
    if after["bytes"] > before["bytes"]:
        result["size_note"] = (
            f"the table grew by {after['bytes'] - before['bytes']} bytes while it was rebuilt "
            "(other sessions' writes, or the new file's preallocation)"
        )
    return result


def _optimize_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    table = params["table"]
    if not params.get("update_stats", True):
        return [f"-- {ctx.quote(table)} {_KEEPS_STATISTICS}"]
    row, size, reason, why_not = _measured(params, ctx)
    if reason is None:
        return [f"-- {ctx.quote(table)} is under the threshold: {why_not}"]
    refusal = optimize_refusal(table, row["engine"])
    if refusal is not None:
        return [f"-- {refusal}"]
    sql = [f"OPTIMIZE TABLE {ctx.quote(table)}"]
    if size["method"] != FILE_SIZE:
        sql.insert(0, f"ANALYZE TABLE {ctx.quote(table)}")
    held = whole_table_lock(table, row["engine"], _offline(ctx, table, row["engine"]))
    return [f"-- {held}", *sql] if held else sql


def _offline(ctx: ToolContext, table: str, engine: str | None) -> list[str]:
    """An InnoDB table's FULLTEXT and SPATIAL indexes, for what its OPTIMIZE TABLE holds."""
    if (engine or "").lower() != "innodb":
        return []
    # The step's key: one read for all its tables (shared.STEP_KEY).
    every = measured(ctx, f"{STEP_KEY}offline", lambda: offline_indexes(ctx.connection))
    return every.get(table, [])


optimize_table = shared_step(
    Handler(
        # ANALYZE TABLE first only where the file's size cannot be read: it brings the
        # statistics the size is then measured from up to date.
        sql_templates=(
            "ANALYZE TABLE {table}",
            "OPTIMIZE TABLE {table}",
            TABLE,
            COLUMNS,
            SAMPLE,
            OFFLINE_INDEXES,
        ),
        run_fn=_optimize,
        render_fn=_optimize_sql,
        risk=RiskLevel.MEDIUM,
        effect="rebuilds a table",
        reads_when_it_renders_reads=True,
    ),
    "OPTIMIZE TABLE",
)


def _refused(conn: Connection, tables: list[str], ctx: ToolContext) -> Refusals:
    """The tables the role may not analyze, and those whose engine keeps no statistics
    ANALYZE TABLE refreshes (or that aishell does not know): none of them is sent."""
    found = refusals(conn, tables, OPTIMIZE_NEEDS, "ANALYZE TABLE", ctx.run_cache)
    for table, engine in _engines(conn, tables, ctx).items():
        why = analyze_refusal(table, engine)
        if why is not None and table not in found:
            found[table] = why
    return found


def _engines(conn: Connection, tables: list[str], ctx: ToolContext) -> dict[str, str | None]:
    """The step's tables' engines, read once for its refusals and its preview's note."""
    found: dict[str, str | None] = cached(ctx, "analyze_engines", lambda: engines_of(conn, tables))
    return found


def _notes(tables: list[str], ctx: ToolContext) -> list[str]:
    """Beside the ANALYZE TABLE: the tables whose engine holds off writes meanwhile."""
    held = analyze_lock(tables, _engines(ctx.connection, tables, ctx))
    return [f"-- {held}"] if held else []


def _statements(tables: list[str], ctx: ToolContext) -> list[str]:
    return [f"ANALYZE TABLE {', '.join(ctx.quote(t) for t in tables)}"]


def _send(conn: Connection, statements: list[str], tables: list[str]) -> Refusals:
    """Each table's result rows: a refusal is a skip, any other error fails the step."""
    skipped: Refusals = {}
    for sql in statements:
        try:
            rows = list(conn.execute(text(sql)).mappings())
        except DBAPIError as exc:
            message = denied(exc)
            if message is None:
                raise
            return {t: f"ANALYZE TABLE of {t} refused by the server: {message}" for t in tables}
        said: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
            for table in _named(str(row["Table"]), tables):
                said.setdefault(table, []).append((kind, message))
            if kind != "error":
                continue
            named = _named(str(row["Table"]), tables)
            if _GONE_TEXT.search(message):
                skipped.update(dict.fromkeys(named, GONE))  # dropped since the plan
                continue
            if not DENIED_TEXT.search(message):
                raise_if_retryable(sql, message)
                raise StepFailed(f"{', '.join(named)}: {message}")
            for table in named:
                skipped[table] = f"ANALYZE TABLE of {table} refused by the server: {message}"
        # A table the server answered with a note alone was not analyzed (its engine
        # keeps no statistics ANALYZE TABLE refreshes): not one of the tables done.
        for table, answer in said.items():
            why = not_done(answer)
            if why is not None and table not in skipped:
                skipped[table] = f"ANALYZE TABLE of {table} not done: {why}"
    return skipped


# ANALYZE TABLE's error row for a table that is not there (error 1146's text).
_GONE_TEXT = re.compile(r"^Table '.*' doesn't exist$")


def _named(reported: str, tables: list[str]) -> list[str]:
    """The step's table a result row names (`database.table`, its case as the server
    keeps names); a row naming none of them counts against them all."""
    found = [t for t in tables if reported.lower().endswith("." + t.lower())]
    return [max(found, key=len)] if found else tables


# One line: a dry run shows each step on one line, this read among its statements where
# the step's inputs are only previewed.
_ROW_ESTIMATES = (
    "SELECT TABLE_NAME AS name, coalesce(TABLE_ROWS, 0) AS row_estimate FROM "
    "information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :tables"
)


def _estimates(conn: Connection, tables: list[str]) -> dict[str, int]:
    query = text(_ROW_ESTIMATES).bindparams(bindparam("tables", expanding=True))
    return {str(name): int(n) for name, n in conn.execute(query, {"tables": tables})}


# What it declares it may send: its statement for one table, and its read.
update_table_statistics = statistics_handler(
    Engine(
        _refused,
        _statements,
        _send,
        _estimates,
        ("ANALYZE TABLE {table}", _ROW_ESTIMATES, ENGINES),
        _notes,
    )
)
