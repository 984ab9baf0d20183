"""MySQL and MariaDB implementations of the maintenance tools.

Fragmentation is InnoDB's DATA_FREE against the table's size. A rebuild is an
online ALTER TABLE ... FORCE (InnoDB) or OPTIMIZE TABLE (other engines); the
orphaned `#sql` tables an interrupted rebuild leaves behind are found and dropped
before a retry. Corruption comes from CHECK TABLE.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell.catalog import mysql_urgency, user_tables
from aishell.errors import StepFailed
from aishell.handlers import Handler, corruption_report, each_table
from aishell.registry import RiskLevel, ToolContext

_TABLES = """
SELECT TABLE_NAME AS name, ENGINE AS engine, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) AS data_bytes, coalesce(INDEX_LENGTH, 0) AS index_bytes,
       coalesce(DATA_FREE, 0) AS free_bytes, UPDATE_TIME AS updated
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
ORDER BY TABLE_NAME
"""
_TABLE = """
SELECT TABLE_NAME AS name, ENGINE AS engine, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) AS data_bytes, coalesce(INDEX_LENGTH, 0) AS index_bytes,
       coalesce(DATA_FREE, 0) AS free_bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t
"""
_STATUS_MARIADB = """
SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value FROM information_schema.GLOBAL_STATUS
WHERE VARIABLE_NAME IN ('THREADS_CONNECTED', 'THREADS_RUNNING',
                        'INNODB_BUFFER_POOL_READ_REQUESTS', 'INNODB_BUFFER_POOL_READS')
"""
_STATUS_MYSQL = """
SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value FROM performance_schema.global_status
WHERE VARIABLE_NAME IN ('Threads_connected', 'Threads_running',
                        'Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads')
"""
_LONG_TRANSACTIONS = """
SELECT trx_mysql_thread_id AS id, trx_state AS state,
       TIMESTAMPDIFF(SECOND, trx_started, NOW()) AS seconds
FROM information_schema.INNODB_TRX
WHERE trx_started < NOW() - INTERVAL 5 MINUTE
ORDER BY trx_started
"""


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with the server's DECIMAL sums as Python integers."""
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in row.items()}


def _free_percent(row: Mapping[str, Any]) -> float:
    total = row["data_bytes"] + row["index_bytes"] + row["free_bytes"]
    return round(100.0 * row["free_bytes"] / total, 2) if total else 0.0


def urgency(row: Mapping[str, Any]) -> float:
    """How soon a table needs work (the same ranking the planner uses)."""
    return mysql_urgency(row["data_bytes"] + row["index_bytes"], row["free_bytes"])


def table_row(conn: Connection, table: str) -> dict[str, Any]:
    row = conn.execute(text(_TABLE), {"t": table}).mappings().first()
    if row is None:
        raise StepFailed(f"Table {table!r} is not in the current database")
    return _plain(row)


# --- analyze_database_health ------------------------------------------------------------


def _status(conn: Connection) -> dict[str, int]:
    mariadb = getattr(conn.dialect, "is_mariadb", False)
    rows = conn.execute(text(_STATUS_MARIADB if mariadb else _STATUS_MYSQL))
    return {str(r.name).lower(): int(r.value) for r in rows}


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    wanted = set(params.get("tables") or [])
    rows = [_plain(r) for r in conn.execute(text(_TABLES)).mappings()]
    rows = [r for r in rows if not wanted or r["name"] in wanted]
    status = _status(conn)
    requests = status.get("innodb_buffer_pool_read_requests", 0)
    misses = status.get("innodb_buffer_pool_reads", 0)
    report = sorted(
        (
            {
                "table": r["name"],
                "engine": r["engine"],
                "rows": r["row_count"],
                "table_bytes": r["data_bytes"],
                "index_bytes": r["index_bytes"],
                "data_free_bytes": r["free_bytes"],
                "free_percent": _free_percent(r),
                "urgency": urgency(r),
            }
            for r in rows
        ),
        key=lambda t: (-t["urgency"], t["table"]),
    )
    long_running = [_plain(r) for r in conn.execute(text(_LONG_TRANSACTIONS)).mappings()]
    recommendations = [
        f"{t['table']}: {t['free_percent']}% of its space is free (data_free); a rebuild "
        "would return it"
        for t in report
        if t["free_percent"] >= 20 and t["data_free_bytes"] >= 4 * 2**20
    ]
    recommendations += [
        f"connection {tx['id']} has held a transaction open for {tx['seconds']}s; "
        "it holds back purge and may block a rebuild"
        for tx in long_running
    ]
    return {
        "database_size_bytes": sum(r["data_bytes"] + r["index_bytes"] for r in rows),
        "connections": status.get("threads_connected"),
        "active_connections": status.get("threads_running"),
        "cache_hit_percent": round(100.0 * (1 - misses / requests), 2) if requests else None,
        "long_running_transactions": long_running,
        "tables": report,
        "integrity": None,
        "integrity_note": "checked by check_table_corruption (CHECK TABLE), not here",
        "recommendations": recommendations,
    }


analyze_database_health = Handler(
    sql_templates=(_TABLES, _STATUS_MARIADB, _STATUS_MYSQL, _LONG_TRANSACTIONS),
    run_fn=_health,
)


# --- analyze_table_fragmentation ----------------------------------------------------------


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row = table_row(ctx.connection, params["table"])
    threshold = params.get("fragmentation_threshold", 30)
    percent = _free_percent(row)
    return {
        "table": params["table"],
        "method": "data_free",
        "engine": row["engine"],
        "fragmentation_percent": percent,
        "free_space_percent": percent,
        "size_bytes": row["data_bytes"] + row["index_bytes"],
        "data_free_bytes": row["free_bytes"],
        "indexes": [],
        "estimated_benefit_bytes": row["free_bytes"],
        "recommendation": (
            f"rebuild (ALTER TABLE ... FORCE) to return {row['free_bytes']:,} bytes"
            if percent >= threshold
            else "No optimization needed"
        ),
    }


analyze_table_fragmentation = Handler(sql_templates=(_TABLE,), run_fn=_fragmentation)


# --- rebuild_fragmented_indexes / optimize_table ---------------------------------------------

_ORPHANS_MARIADB = (
    "SELECT NAME FROM information_schema.INNODB_SYS_TABLES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/#sql%')"
)
_ORPHANS_MYSQL = (
    "SELECT NAME FROM information_schema.INNODB_TABLES WHERE NAME LIKE CONCAT(DATABASE(), '/#sql%')"
)


def orphans(conn: Connection) -> list[str]:
    """Tables an interrupted ALTER left behind (InnoDB names them #sql-...)."""
    mariadb = getattr(conn.dialect, "is_mariadb", False)
    try:
        rows = conn.execute(text(_ORPHANS_MARIADB if mariadb else _ORPHANS_MYSQL))
    except Exception:
        return []
    return [str(r[0]).split("/", 1)[1] for r in rows]


def _rebuild_statement(ctx: ToolContext, table: str, engine: str | None) -> str:
    if (engine or "").lower() == "innodb":
        return f"ALTER TABLE {ctx.quote(table)} FORCE, ALGORITHM=INPLACE, LOCK=NONE"
    return f"OPTIMIZE TABLE {ctx.quote(table)}"


def _rebuild_reason(params: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    threshold = params.get("fragmentation_threshold", 30)
    percent = _free_percent(row)
    pages = (row["data_bytes"] + row["index_bytes"]) // 16384
    if pages < params.get("min_pages", 8):
        return None
    if percent >= threshold:
        return f"{percent}% of its space is free"
    return None


def _rebuild_table(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    dropped = []
    for orphan in orphans(conn):
        # "#mysql50#" makes the server take the name as written, not as an encoded file name.
        conn.execute(text(f"DROP TABLE IF EXISTS {ctx.quote('#mysql50#' + orphan)}"))
        dropped.append(orphan)
    before = table_row(conn, table)
    reason = _rebuild_reason(params, before)
    if reason is None:
        return {
            "table": table,
            "indexes_rebuilt": 0,
            "rebuilt": [],
            "skipped": [
                {"table": table, "reason": f"{_free_percent(before)}% free: under the threshold"}
            ],
            "leftovers_dropped": dropped,
        }
    started = time.monotonic()
    result = conn.execute(text(_rebuild_statement(ctx, table, before["engine"])))
    _raise_on_error(result, table)
    after = table_row(conn, table)
    return {
        "table": table,
        "indexes_rebuilt": 1,
        "rebuilt": [
            {
                "table": table,
                "reason": reason,
                "bytes_before": before["data_bytes"] + before["index_bytes"],
                "bytes_after": after["data_bytes"] + after["index_bytes"],
                "free_before": before["free_bytes"],
                "free_after": after["free_bytes"],
                "seconds": round(time.monotonic() - started, 3),
            }
        ],
        "skipped": [],
        "leftovers_dropped": dropped,
    }


def _rebuild_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    conn = ctx.connection
    row = table_row(conn, params["table"])
    sql = [f"DROP TABLE IF EXISTS {ctx.quote('#mysql50#' + o)}" for o in orphans(conn)]
    if _rebuild_reason(params, row):
        sql.append(_rebuild_statement(ctx, params["table"], row["engine"]))
    return sql or [f"-- {ctx.quote(params['table'])} is under the threshold"]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row = table_row(ctx.connection, params["table"])
    will = _rebuild_reason(params, row) is not None
    return {
        "tables_to_rebuild": [params["table"]] if will else [],
        "bytes_to_rewrite": row["data_bytes"] + row["index_bytes"] if will else 0,
        "free_bytes_to_reclaim": row["free_bytes"] if will else 0,
    }


rebuild_fragmented_indexes = Handler(
    sql_templates=("ALTER TABLE {table} FORCE, ALGORITHM=INPLACE, LOCK=NONE",),
    run_fn=_rebuild_table,
    render_fn=_rebuild_sql,
    estimate_fn=_rebuild_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds a table",
)


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    before = table_row(conn, table)
    if _rebuild_reason({**params, "min_pages": 1}, before) is None:
        size = before["data_bytes"] + before["index_bytes"]
        return {
            "table": table,
            "vacuumed": False,
            "reason": f"{_free_percent(before)}% free: under the threshold",
            "size_before": size,
            "size_after": size,
            "reclaimed_bytes": 0,
        }
    result = conn.execute(text(f"OPTIMIZE TABLE {ctx.quote(table)}"))
    _raise_on_error(result, table)
    after = table_row(conn, table)
    return {
        "table": table,
        "vacuumed": True,
        "size_before": before["data_bytes"] + before["index_bytes"] + before["free_bytes"],
        "size_after": after["data_bytes"] + after["index_bytes"] + after["free_bytes"],
        "reclaimed_bytes": before["free_bytes"] - after["free_bytes"],
    }


optimize_table = Handler(
    sql_templates=("OPTIMIZE TABLE {table}",),
    run_fn=_optimize,
    render_fn=lambda params, ctx: [f"OPTIMIZE TABLE {ctx.quote(params['table'])}"],
    risk=RiskLevel.MEDIUM,
    effect="rebuilds a table",
)


def _analyze(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    result = ctx.connection.execute(text(f"ANALYZE TABLE {ctx.quote(params['table'])}"))
    messages = _raise_on_error(result, params["table"])
    return {"table": params["table"], "statistics_updated": True, "messages": messages}


update_table_statistics = Handler(
    sql_templates=("ANALYZE TABLE {table}",),
    run_fn=_analyze,
    risk=RiskLevel.LOW,
    effect="updates statistics",
)


def _raise_on_error(result: Any, table: str) -> list[str]:
    """Maintenance statements report per table in rows (Table, Op, Msg_type, Msg_text)."""
    messages: list[str] = []
    if not result.returns_rows:  # ALTER TABLE reports by raising, not in rows
        return messages
    for row in result.mappings():
        kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
        messages.append(f"{kind}: {message}")
        if kind == "error":
            raise StepFailed(f"{table}: {message}")
    return messages


# --- check_table_corruption / repair_corrupted_tables ---------------------------------------


def _check_rows(conn: Connection, ctx: ToolContext, table: str) -> list[str]:
    problems = []
    for row in conn.execute(text(f"CHECK TABLE {ctx.quote(table)}")).mappings():
        kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
        if kind == "error" or (kind == "status" and message.upper() != "OK"):
            problems.append(message)
    return problems


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    issues = []
    for table in tables:
        issues += [{"table": table, "message": m} for m in _check_rows(conn, ctx, table)]
    return corruption_report(tables, issues, method="CHECK TABLE")


check_table_corruption = Handler(sql_templates=("CHECK TABLE {table}",), run_fn=_check)


def _repair(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    if not tables:
        return {"repaired_tables": [], "backup_path": None, "note": "no corrupted tables given"}
    backups, repaired, still = [], [], {}
    for table in tables:
        row = table_row(conn, table)
        if params.get("create_backup", True):
            copy = f"{table[:40]}_aishell_bak_{time.strftime('%Y%m%d%H%M%S')}"
            conn.execute(text(f"CREATE TABLE {ctx.quote(copy)} LIKE {ctx.quote(table)}"))
            conn.execute(text(f"INSERT INTO {ctx.quote(copy)} SELECT * FROM {ctx.quote(table)}"))
            backups.append(copy)
        if (row["engine"] or "").lower() == "innodb":
            conn.execute(text(f"ALTER TABLE {ctx.quote(table)} FORCE"))
        else:
            _raise_on_error(conn.execute(text(f"REPAIR TABLE {ctx.quote(table)}")), table)
        remaining = _check_rows(conn, ctx, table)
        if remaining:
            still[table] = remaining
        else:
            repaired.append(table)
    if still:
        detail = "; ".join(f"{t}: {m[0]}" for t, m in still.items())
        raise StepFailed(f"Could not repair {', '.join(still)}: {detail}")
    return {"repaired_tables": repaired, "backup_tables": backups, "backup_path": None}


repair_corrupted_tables = Handler(
    sql_templates=("ALTER TABLE {table} FORCE", "REPAIR TABLE {table}"),
    run_fn=_repair,
    render_fn=each_table("ALTER TABLE {table} FORCE  -- REPAIR TABLE for MyISAM and Aria"),
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables",
)
