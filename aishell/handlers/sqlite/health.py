"""analyze_database_health on SQLite: the file's pages and free pages, per table its
rows, sizes (with dbstat) and statistics, and the corruption check when asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import Handler, step_tables
from aishell.handlers.held import is_gone
from aishell.handlers.integrity import health_integrity
from aishell.handlers.sqlite.appcode import app_code, count_statement, needs_app_code
from aishell.handlers.sqlite.catalog import database_pages, dbstat_available, percent
from aishell.handlers.sqlite.corruption import NOT_CHECKED, corruption_check, read_as_a_limit
from aishell.sqltext import text
from aishell.targets.appcode import SCHEMA as APP_SCHEMA
from aishell.targets.appcode import stops_check
from aishell.targets.catalog import sqlite_name, sqlite_text_as_bytes
from aishell.tool.context import ToolContext

# Indexes with their tables, and the tables (to name those whose names are not UTF-8).
_SCHEMA = (
    "SELECT type, name, tbl_name, rootpage FROM sqlite_schema WHERE type IN ('index', 'table')"
)
# What a virtual table's statistics are: SQLite's ANALYZE gathers none for it.
NO_STATISTICS = "none kept (virtual table)"


# A table dropped since the plan, as _rows says.
_GONE = -1


def _rows(
    conn: Connection, ctx: ToolContext, table: str, skipped: list[dict[str, str]]
) -> int | None:
    """The table's rows; None (the table added to `skipped`, with why) when only the
    application's code could count them; _GONE when it was dropped since the plan."""
    count, not_counted = count_statement(ctx, table)
    try:
        if count is not None:
            return int(conn.execute(text(count)).scalar_one())
    except DBAPIError as exc:
        # SQLite locks the file, not a table: only a table dropped since the plan is
        # one table's trouble; a lock is every table's and fails the step.
        not_counted = needs_app_code(exc, table, "rows not counted")
        if not_counted is None and not is_gone(exc):
            raise
        if not_counted is None:
            return _GONE
    skipped.append({"table": table, "reason": str(not_counted)})
    return None


def _table_health(
    conn: Connection,
    ctx: ToolContext,
    tables: list[str],
    has_dbstat: bool,
    unreadable: list[str],
    gone: list[str],
    skipped: list[dict[str, str]],
) -> list[dict[str, Any]]:
    """Per table its rows, indexes, sizes (with dbstat) and whether it has statistics;
    most urgent first: the largest share of the file, then missing statistics."""
    sizes: dict[str, int] = {}
    analyzed: set[str | None] = set()
    # Names as bytes, each decoded: one that is not UTF-8 must not fail the report.
    with sqlite_text_as_bytes(conn):
        if has_dbstat:
            for row in conn.execute(
                text("SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name")
            ):
                sizes[sqlite_name(row.name) or ""] = row.bytes
        schema_rows = conn.execute(text(_SCHEMA)).all()
        if conn.execute(
            text("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'")
        ).scalar_one():
            analyzed = {
                sqlite_name(r[0])
                for r in conn.execute(text("SELECT DISTINCT tbl FROM sqlite_stat1"))
            }
    indexes_of: dict[str, list[str]] = {}
    virtual: set[str | None] = set()
    for row in schema_rows:
        if row.type == b"table":
            name = sqlite_name(row.name, unreadable)
            if row.rootpage == 0:
                virtual.add(name)
            continue
        index, table = sqlite_name(row.name), sqlite_name(row.tbl_name)
        if index is not None and table is not None:
            indexes_of.setdefault(table, []).append(index)
    report: list[dict[str, Any]] = []
    for table in tables:
        rows = _rows(conn, ctx, table, skipped)
        if rows == _GONE:
            gone.append(table)
            continue
        index_bytes = sum(sizes.get(i, 0) for i in indexes_of.get(table, []))
        report.append(
            {
                "table": table,
                "rows": rows,
                "indexes": len(indexes_of.get(table, [])),
                "table_bytes": sizes.get(table),
                "index_bytes": index_bytes if has_dbstat else None,
                "statistics": _statistics(table, virtual, analyzed),
            }
        )
    report.sort(key=lambda t: (-(t["table_bytes"] or 0) - (t["index_bytes"] or 0), t["table"]))
    return report


def _statistics(table: str, virtual: set[str | None], analyzed: set[str | None]) -> str:
    """Whether the table has planner statistics (sqlite_stat1's rows for it)."""
    if table in virtual:
        return NO_STATISTICS
    return "present" if table in analyzed else "missing"


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    pages = database_pages(conn)
    tables = step_tables(params, ctx)
    has_dbstat = dbstat_available(conn)
    unreadable: list[str] = []
    gone: list[str] = []
    skipped: list[dict[str, str]] = []
    report = _table_health(conn, ctx, tables, has_dbstat, unreadable, gone, skipped)
    tables = [t for t in tables if t not in gone]
    check = corruption_check(conn, ctx, tables) if params.get("check_corruption") else None
    freelist_percent = percent(pages["freelist_count"], pages["page_count"])
    recommendations = []
    if freelist_percent >= 10:
        recommendations.append(
            f"{freelist_percent}% of the file ({pages['free_bytes']} bytes) is free pages; "
            "optimize_table (VACUUM) would return them to the file system"
        )
    if unreadable:
        recommendations.append(
            "Left out, their names are not valid UTF-8: "
            f"{', '.join(unreadable)}; rename them (ALTER TABLE ... RENAME TO)"
        )
    missing = [t["table"] for t in report if t["statistics"] == "missing" and t["rows"]]
    if missing:
        recommendations.append(
            f"No planner statistics for {', '.join(missing)}; run update_table_statistics"
        )
    return {
        "database_size_bytes": pages["size_bytes"],
        "size_method": "page_count x page_size",
        "page_size": pages["page_size"],
        "page_count": pages["page_count"],
        "freelist_count": pages["freelist_count"],
        "freelist_percent": freelist_percent,
        "journal_mode": conn.execute(text("PRAGMA journal_mode")).scalar_one(),
        "dbstat": has_dbstat,
        **({"tables_gone": gone} if gone else {}),
        # A table whose rows only the application's code can count (its key's collation).
        **({"skipped_tables": skipped} if skipped else {}),
        **health_integrity(report, check, recommendations, "integrity_check"),
    }


_CATALOG_READS = (
    "PRAGMA page_size",
    "PRAGMA page_count",
    "PRAGMA freelist_count",
    "SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name",
    _SCHEMA,
    "SELECT DISTINCT tbl FROM sqlite_stat1",
    APP_SCHEMA,
)
_PER_TABLE = ("PRAGMA integrity_check({table})", "PRAGMA foreign_key_check({table})")


def _health_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """Its catalog reads, then each table's count and (with check_corruption) checks;
    where one needs the application's code, why it is left out."""
    shown = list(_CATALOG_READS)
    for table in step_tables(params, ctx):
        count, not_counted = count_statement(ctx, table)
        shown.append(count or f"-- {not_counted}")
        if params.get("check_corruption"):
            unchecked = read_as_a_limit(table) or app_code(ctx).reason(
                table, NOT_CHECKED, stops_check
            )
            shown.append(
                f"-- {unchecked}"
                if unchecked
                else _PER_TABLE[0].replace("{table}", ctx.quote(table))
            )
            shown.append(_PER_TABLE[1].replace("{table}", ctx.quote(table)))
    return shown


analyze_database_health = Handler(
    sql_templates=(
        *_CATALOG_READS,
        "SELECT count(*) FROM {table}",
        "SELECT count(*) FROM {table} NOT INDEXED",
        *_PER_TABLE,
    ),
    run_fn=_health,
    render_fn=_health_sql,
)
