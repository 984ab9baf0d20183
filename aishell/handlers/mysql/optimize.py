"""optimize_table (OPTIMIZE TABLE) and update_table_statistics (ANALYZE TABLE) on MySQL
and MariaDB, with the table's size before and after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.handlers import Handler
from aishell.handlers.mysql.catalog import FILE_SIZE, free_percent, table_row, table_size
from aishell.handlers.mysql.fragmentation import rebuild_reason
from aishell.handlers.mysql.privileges import OPTIMIZE_NEEDS, require_privileges, run_checked
from aishell.risk import RiskLevel
from aishell.toolcontext import ToolContext


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    row = table_row(conn, table)
    if rebuild_reason({**params, "min_pages": 1}, row) is None:
        size = table_size(conn, table, row)
        return {
            "table": table,
            "vacuumed": False,
            "reason": f"{free_percent(row)}% free: under the threshold",
            "size_before": size["bytes"],
            "size_after": size["bytes"],
            "size_method": size["method"],
            "reclaimed_bytes": 0,
        }
    require_privileges(conn, table, OPTIMIZE_NEEDS, "OPTIMIZE TABLE")
    before = table_size(conn, table, row)
    if before["method"] != FILE_SIZE:
        # The statistics lag behind the table; OPTIMIZE refreshes them, so refresh them
        # first too, or the difference is the statistics catching up.
        run_checked(conn, f"ANALYZE TABLE {ctx.quote(table)}", table, "ANALYZE TABLE")
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
    conn, table = ctx.connection, params["table"]
    row = table_row(conn, table)
    if rebuild_reason({**params, "min_pages": 1}, row) is None:
        return [f"-- {ctx.quote(table)} is under the threshold"]
    sql = [f"OPTIMIZE TABLE {ctx.quote(table)}"]
    if table_size(conn, table, row)["method"] != FILE_SIZE:
        sql.insert(0, f"ANALYZE TABLE {ctx.quote(table)}")
    return sql


optimize_table = Handler(
    # ANALYZE TABLE first only where the file's size cannot be read: it brings the
    # statistics the size is then measured from up to date.
    sql_templates=("ANALYZE TABLE {table}", "OPTIMIZE TABLE {table}"),
    run_fn=_optimize,
    render_fn=_optimize_sql,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds a table",
)


def _analyze(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn, table = ctx.connection, params["table"]
    require_privileges(conn, table, OPTIMIZE_NEEDS, "ANALYZE TABLE")
    messages = run_checked(conn, f"ANALYZE TABLE {ctx.quote(table)}", table, "ANALYZE TABLE")
    return {"table": table, "statistics_updated": True, "messages": messages}


update_table_statistics = Handler(
    sql_templates=("ANALYZE TABLE {table}",),
    run_fn=_analyze,
    risk=RiskLevel.LOW,
    effect="updates statistics",
)
