"""rebuild_fragmented_indexes on MySQL and MariaDB: an online ALTER TABLE ... FORCE
(InnoDB) or OPTIMIZE TABLE (other engines) of a table over the threshold. The orphaned
`#sql` tables an interrupted rebuild leaves behind are found and dropped before a retry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aishell.handlers import measured, read_once_in_dry_run, rebuilding, rows_or_none, skip_table
from aishell.handlers.mysql.catalog import (
    ROW_READING,
    SIZE_READING,
    is_mariadb,
    table_row,
    table_size,
)
from aishell.handlers.mysql.engines import OFFLINE_INDEXES, offline_indexes, optimize_refusal
from aishell.handlers.mysql.fragmentation import measure, not_rebuilt_because, rebuild_reason
from aishell.handlers.mysql.privileges import REBUILD_NEEDS, require_privileges, run_checked
from aishell.handlers.shared import STEP_KEY, shared_step
from aishell.sqltext import text
from aishell.tool.context import ToolContext

_ORPHANS_MARIADB = (
    "SELECT NAME FROM information_schema.INNODB_SYS_TABLES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/#sql%')"
)
_ORPHANS_MYSQL = (
    "SELECT NAME FROM information_schema.INNODB_TABLES WHERE NAME LIKE CONCAT(DATABASE(), '/#sql%')"
)


def orphans(conn: Connection) -> list[str]:
    """Tables an interrupted ALTER left behind (InnoDB names them #sql-...)."""
    # A catalog this account may not read is "no leftovers".
    sql = text(_ORPHANS_MARIADB if is_mariadb(conn) else _ORPHANS_MYSQL)
    rows = rows_or_none(conn, lambda: list(conn.execute(sql)))
    return [str(r[0]).split("/", 1)[1] for r in rows]


def _refusal(ctx: ToolContext, table: str, engine: str | None) -> str | None:
    """Why the table is not rebuilt, though over the threshold: its engine has no
    OPTIMIZE TABLE, or it is InnoDB with a FULLTEXT or SPATIAL index, which InnoDB does
    not rebuild online (ALTER TABLE ... LOCK=NONE is refused): only holding off every
    write, a lock this step does not take. As the step's render found it."""
    refusal = optimize_refusal(table, engine)
    if refusal is not None or (engine or "").lower() != "innodb":
        return refusal
    # The step's key: one read for all its tables (shared.STEP_KEY).
    found = measured(ctx, f"{STEP_KEY}offline", lambda: offline_indexes(ctx.connection)).get(table)
    if not found:
        return None
    return (
        f"{table} not rebuilt online: it has {', '.join(found)}, and InnoDB rebuilds such "
        "a table only holding off its writes until the rebuild ends"
    )


def _rebuild_statement(ctx: ToolContext, table: str, engine: str | None) -> str:
    if (engine or "").lower() == "innodb":
        return f"ALTER TABLE {ctx.quote(table)} FORCE, ALGORITHM=INPLACE, LOCK=NONE"
    return f"OPTIMIZE TABLE {ctx.quote(table)}"


def _rebuild_table(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    before, total, space = _measured_row(params, ctx)
    reason = rebuild_reason(params, before, total, space)
    found = _orphans(ctx, table)
    if reason is None and not found:
        return _not_rebuilt(table, not_rebuilt_because(params, before, total, space), [])
    needed = REBUILD_NEEDS | ({"DROP"} if found else set())
    require_privileges(conn, table, needed, "Rebuild", ctx.run_cache)
    dropped = []
    for orphan in found:
        # "#mysql50#" makes the server take the name as written, not as an encoded file name.
        conn.execute(text(f"DROP TABLE IF EXISTS {ctx.quote('#mysql50#' + orphan)}"))
        dropped.append(orphan)
    if reason is None:
        return _not_rebuilt(table, not_rebuilt_because(params, before, total, space), dropped)
    refusal = _refusal(ctx, table, before["engine"])
    if refusal is not None:
        skip_table(table, refusal, {"leftovers_dropped": dropped})
    size_before = table_size(conn, table, before)
    indexes = _index_count(conn, table)
    started = time.monotonic()
    run_checked(conn, _rebuild_statement(ctx, table, before["engine"]), table, "Rebuild")
    after = table_row(conn, table)
    size_after = table_size(conn, table, after)
    # The next step on the table (optimize_table) starts from these.
    ctx.table_readings.after_writes(table, ROW_READING, after)
    ctx.table_readings.after_writes(table, SIZE_READING, size_after)
    return {
        "table": table,
        # The table is rewritten whole: its rows and every one of its indexes.
        "tables_rebuilt": 1,
        "indexes_rebuilt": indexes,
        "rebuilt": [
            {
                "table": table,
                "reason": reason,
                "bytes_before": size_before["bytes"],
                "bytes_after": size_after["bytes"],
                "size_method": size_after["method"],
                "free_before": before["free_bytes"],
                "free_after": after["free_bytes"],
                "seconds": round(time.monotonic() - started, 3),
            }
        ],
        "skipped": [],
        "leftovers_dropped": dropped,
    }


def _not_rebuilt(table: str, why: str, dropped: list[str]) -> dict[str, Any]:
    """A table under the threshold is not rebuilt; the orphans it had are dropped."""
    return {
        "table": table,
        "tables_rebuilt": 0,
        "indexes_rebuilt": 0,
        "rebuilt": [],
        "skipped": [{"table": table, "reason": why}],
        "leftovers_dropped": dropped,
    }


def _measured_row(
    params: Mapping[str, Any], ctx: ToolContext
) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
    """The table's row, its bytes on disk where its file can be read (on_disk), and
    what a rebuild would give back, as the preview, the estimate and the first attempt
    see them (as analyze_table_fragmentation just read them, if it did)."""
    table = params["table"]
    return measured(ctx, f"rebuild:{table}", lambda: measure(ctx, table))


_INDEXES = (
    "SELECT count(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
)


def _index_count(conn: Connection, table: str) -> int:
    """The table's indexes (its primary key among them), each rebuilt with it."""
    return int(conn.execute(text(_INDEXES), {"t": table}).scalar() or 0)


def _orphans(ctx: ToolContext, table: str) -> list[str]:
    """The orphans as the preview and the first attempt see them; a retry looks again
    for those its failed ALTER left. They are the database's, not the table's: the
    first table that looks (in a step over many tables, in a dry run or a preview,
    where nothing drops them) drops them, the others find none."""
    found: tuple[str, list[str]] = read_once_in_dry_run(
        ctx, f"{STEP_KEY}rebuild-orphans", lambda: (table, orphans(ctx.connection))
    )
    return found[1] if found[0] == table else []


def _rebuild_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    row, total, space = _measured_row(params, ctx)
    sql = [
        f"DROP TABLE IF EXISTS {ctx.quote('#mysql50#' + o)}" for o in _orphans(ctx, params["table"])
    ]
    if rebuild_reason(params, row, total, space):
        refusal = _refusal(ctx, params["table"], row["engine"])
        sql.append(
            _rebuild_statement(ctx, params["table"], row["engine"])
            if refusal is None
            else f"-- {refusal}"
        )
    return sql or [f"-- {ctx.quote(params['table'])} is under the threshold"]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row, total, space = _measured_row(params, ctx)
    will = rebuild_reason(params, row, total, space) is not None
    will = will and _refusal(ctx, params["table"], row["engine"]) is None
    return {
        "tables_to_rebuild": [params["table"]] if will else [],
        "bytes_to_rewrite": row["data_bytes"] + row["index_bytes"] if will else 0,
        "free_bytes_to_reclaim": space["bytes"] if will else 0,
    }


rebuild_fragmented_indexes = shared_step(
    rebuilding(
        ("ALTER TABLE {table} FORCE, ALGORITHM=INPLACE, LOCK=NONE", OFFLINE_INDEXES),
        _rebuild_table,
        _rebuild_sql,
        _rebuild_estimate,
        effect="rebuilds a table",
    ),
    "ALTER TABLE ... FORCE",
)
