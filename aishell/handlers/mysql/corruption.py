"""check_table_corruption and repair_corrupted_tables on MySQL and MariaDB: CHECK TABLE
per table (checked, or why not); a repair copies the table, then rebuilds it
(ALTER TABLE ... FORCE on InnoDB, REPAIR TABLE on other engines) and checks it again."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.catalog import user_tables
from aishell.handlers import Handler, each_table
from aishell.handlers.integrity import (
    checked_or_skipped,
    corruption_summary,
    repair_each,
    repairing,
)
from aishell.handlers.mysql.catalog import table_row
from aishell.handlers.mysql.privileges import (
    DENIED_TEXT,
    current_account,
    denied,
    privileges_on,
    require_privileges,
    run_checked,
    session_grants,
)
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.toolcontext import ToolContext


def _check_table(
    conn: Connection, ctx: ToolContext, table: str, have: set[str] | None
) -> dict[str, Any]:
    if have is not None and not have:
        return {
            "table": table,
            "status": "not checked",
            "reason": f"{current_account(conn)} has no privilege on {table} "
            "(CHECK TABLE needs one, such as SELECT)",
        }
    try:
        rows = conn.execute(text(f"CHECK TABLE {ctx.quote(table)}")).mappings().all()
    except DBAPIError as exc:
        message = denied(exc)
        if message is None:
            raise
        return {"table": table, "status": "not checked", "reason": message}
    problems, unsupported, ok = [], None, False
    for row in rows:
        kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
        if kind == "status" and message.upper() == "OK":
            ok = True
        elif kind == "note" and "support" in message.lower():
            unsupported = message
        elif kind == "error" and DENIED_TEXT.search(message):
            return {"table": table, "status": "not checked", "reason": message}
        elif kind == "error" or kind == "status":
            problems.append(message)
    if problems:
        return {"table": table, "status": "corrupted", "issues": problems}
    if not ok:
        return {
            "table": table,
            "status": "not checked",
            "reason": unsupported or "CHECK TABLE gave no verdict",
        }
    return {"table": table, "status": "ok", "issues": []}


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """CHECK TABLE of each table; per table, checked or why not."""
    granted, database = session_grants(conn, ctx.run_cache)

    def have(table: str) -> set[str] | None:
        return None if granted is None else privileges_on(granted, database, table)

    results = [_check_table(conn, ctx, t, have(t)) for t in tables]
    return corruption_summary("CHECK TABLE", results)


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    return checked_or_skipped(corruption_check(conn, ctx, tables))


check_table_corruption = Handler(
    sql_templates=("SHOW GRANTS", "CHECK TABLE {table}"), run_fn=_check
)


def _repair(tables: list[str], params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    for table in tables:
        require_privileges(
            conn,
            table,
            {"SELECT", "INSERT", "CREATE", "ALTER"},
            "Repair (copy, then rebuild)",
            ctx.run_cache,
        )
    backups: list[str] = []

    def repair(table: str) -> list[str] | None:
        row = table_row(conn, table)
        if params.get("create_backup", True):
            copy = f"{table[:40]}_aishell_bak_{time.strftime('%Y%m%d%H%M%S')}"
            conn.execute(text(f"CREATE TABLE {ctx.quote(copy)} LIKE {ctx.quote(table)}"))
            conn.execute(text(f"INSERT INTO {ctx.quote(copy)} SELECT * FROM {ctx.quote(table)}"))
            backups.append(copy)
        if (row["engine"] or "").lower() == "innodb":
            run_checked(conn, f"ALTER TABLE {ctx.quote(table)} FORCE", table, "ALTER TABLE")
        else:
            run_checked(conn, f"REPAIR TABLE {ctx.quote(table)}", table, "REPAIR TABLE")
        after = _check_table(conn, ctx, table, None)
        return after["issues"] if after["status"] == "corrupted" else None

    repaired = repair_each(tables, repair, "Could not repair")
    return {"repaired_tables": repaired, "backup_tables": backups, "backup_path": None}


repair_corrupted_tables = Handler(
    sql_templates=("ALTER TABLE {table} FORCE", "REPAIR TABLE {table}"),
    run_fn=repairing(_repair),
    render_fn=each_table("ALTER TABLE {table} FORCE  -- REPAIR TABLE for MyISAM and Aria"),
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables",
)
