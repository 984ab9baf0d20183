"""optimize_table (VACUUM of the whole file: SQLite has no per-table equivalent) and
update_table_statistics (ANALYZE) on SQLite."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell.handlers import Handler
from aishell.handlers.sqlite.catalog import btree_stats, database_pages, dbstat_available
from aishell.handlers.sqlite.fragmentation import needs_rebuild
from aishell.handlers.sqlite.privileges import require_writable, write
from aishell.risk import RiskLevel
from aishell.toolcontext import ToolContext


def _optimize_reason(params: Mapping[str, Any], conn: Connection) -> str | None:
    pages = database_pages(conn)
    if pages["freelist_count"]:
        return f"{pages['freelist_count']} free pages ({pages['free_bytes']} bytes) in the file"
    if dbstat_available(conn):
        stats = btree_stats(conn, params["table"])
        return needs_rebuild(stats, params.get("fragmentation_threshold", 30), 8)
    return None


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    before = database_pages(conn)
    reason = _optimize_reason(params, conn)
    if reason is None:
        return {
            "table": params["table"],
            "scope": "database",
            "vacuumed": False,
            "reason": "the file has no free pages and the table is not fragmented",
            "size_before": before["size_bytes"],
            "size_after": before["size_bytes"],
            "reclaimed_bytes": 0,
        }
    require_writable(conn, params["table"], "VACUUM")
    # VACUUM rebuilds the whole file: SQLite has no per-table equivalent.
    write(conn, "VACUUM", params["table"], "VACUUM")
    after = database_pages(conn)
    return {
        "table": params["table"],
        "scope": "database",
        "vacuumed": True,
        "reason": reason,
        "size_before": before["size_bytes"],
        "size_after": after["size_bytes"],
        # The same measure both sides; VACUUM never grows the file, but a writer between
        # the two measures could.
        "reclaimed_bytes": max(before["size_bytes"] - after["size_bytes"], 0),
    }


def _optimize_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    if _optimize_reason(params, ctx.connection) is None:
        return ["-- nothing to do: no free pages and the table is not fragmented"]
    return ["VACUUM"]


def _optimize_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pages = database_pages(ctx.connection)
    return {
        "database_bytes_to_rewrite": pages["size_bytes"],
        "free_bytes_to_reclaim": pages["free_bytes"],
        "will_vacuum": _optimize_reason(params, ctx.connection) is not None,
    }


optimize_table = Handler(
    sql_templates=("VACUUM",),
    run_fn=_optimize,
    render_fn=_optimize_sql,
    estimate_fn=_optimize_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rewrites the database file",
)


# --- update_table_statistics ----------------------------------------------------------

_STAT_ROWS = "SELECT count(*) AS stat_rows FROM sqlite_stat1 WHERE tbl = :table"


def _analyze(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn, table = ctx.connection, params["table"]
    require_writable(conn, table, "ANALYZE")
    write(conn, f"ANALYZE {ctx.quote(table)}", table, "ANALYZE")
    rows = conn.execute(text(_STAT_ROWS), {"table": table}).scalar_one()
    return {"table": table, "statistics_updated": True, "stat_rows": rows}


update_table_statistics = Handler(
    sql_templates=("ANALYZE {table}", _STAT_ROWS),
    run_fn=_analyze,
    risk=RiskLevel.LOW,
    effect="updates statistics",
)
