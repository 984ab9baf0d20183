"""analyze_database_health on MySQL and MariaDB: sizes and free space per table (what a
rebuild would give back, measured as the fragmentation step measures it), the buffer
pool's hit rate, long transactions, and the corruption check when asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import Handler, step_tables
from aishell.handlers.held import Tablewise, one_at_a_time, tablewise_output
from aishell.handlers.integrity import health_integrity
from aishell.handlers.mysql.catalog import (
    FILES_MARIADB,
    SIZE_READING,
    TABLE,
    TABLES,
    database_size,
    is_mariadb,
    plain,
    table_size,
)
from aishell.handlers.mysql.corruption import check_statements, corruption_check
from aishell.handlers.mysql.engines import ENGINES
from aishell.handlers.mysql.fragmentation import COLUMNS, SAMPLE, space_of
from aishell.handlers.mysql.privileges import denied
from aishell.sqltext import text
from aishell.targets.catalog import mysql_urgency
from aishell.tool.context import ToolContext
from aishell.units import took

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


def urgency(row: Mapping[str, Any], space: Mapping[str, Any] | None) -> float:
    """How soon a table needs work, ranked as the planner ranks it (mysql_urgency) by
    the free space measured here (DATA_FREE alone where the table was held)."""
    if space is None:
        size = row["data_bytes"] + row["index_bytes"] + row["free_bytes"]
        return mysql_urgency(size, row["free_bytes"])
    return mysql_urgency(space["size_bytes"], space["bytes"])


def _status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text(_STATUS_MARIADB if is_mariadb(conn) else _STATUS_MYSQL))
    return {str(r.name).lower(): int(r.value) for r in rows}


def _table_health(row: Mapping[str, Any], space: Mapping[str, Any] | None) -> dict[str, Any]:
    """A table's figures; its free space as the fragmentation step measures it (None
    where the table was held: not measured)."""
    return {
        "table": row["name"],
        "engine": row["engine"],
        "rows": row["row_count"],
        "table_bytes": row["data_bytes"],
        "index_bytes": row["index_bytes"],
        "data_free_bytes": row["free_bytes"],
        "free_bytes": None if space is None else space["bytes"],
        "free_percent": None if space is None else space["percent"],
        "free_method": "not measured: held" if space is None else space["method"],
        "urgency": urgency(row, space),
    }


def _free_space(ctx: ToolContext, rows: list[dict[str, Any]]) -> Tablewise[dict[str, Any]]:
    """What a rebuild would give back of each table (fragmentation.space_of: DATA_FREE
    and the room of half-empty pages), read one table at a time: a table another
    session holds is named held, and the others are measured. Each size as
    database_size just kept it."""
    conn = ctx.connection
    by_name = {r["name"]: r for r in rows}

    def one(table: str) -> dict[str, Any]:
        row = by_name[table]
        size = ctx.table_readings.get(table, SIZE_READING, lambda: table_size(conn, table, row))
        return space_of(ctx, row, size, keep=False)[1]

    return one_at_a_time(conn, list(by_name), one, "Measuring the free space", ctx.table_readings)


def _long_transactions(conn: Connection) -> list[dict[str, Any]] | None:
    """Transactions open over five minutes; None when INNODB_TRX may not be read."""
    try:
        return [plain(r) for r in conn.execute(text(_LONG_TRANSACTIONS)).mappings()]
    except DBAPIError as exc:
        if denied(exc) is None:
            raise
        return None


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    wanted = set(params.get("tables") or [])
    every = [plain(r) for r in conn.execute(text(TABLES)).mappings()]
    rows = [r for r in every if not wanted or r["name"] in wanted]
    status = _status(conn)
    requests = status.get("innodb_buffer_pool_read_requests", 0)
    misses = status.get("innodb_buffer_pool_reads", 0)
    # First: it keeps each table's size for _free_space.
    size = database_size(conn, ctx, every)
    found = _free_space(ctx, rows)
    report = sorted(
        (_table_health(r, found.done.get(r["name"])) for r in rows if r["name"] not in found.gone),
        key=lambda t: (-t["urgency"], t["table"]),
    )
    recommendations = [
        f"{t['table']}: about {t['free_percent']}% of its space ({t['free_bytes']:,} bytes) "
        f"would be given back by a rebuild ({t['free_method']})"
        for t in report
        if (t["free_percent"] or 0) >= 20 and (t["free_bytes"] or 0) >= 4 * 2**20
    ]
    long_running = _long_transactions(conn)
    if long_running is None:
        recommendations.append(
            "Long transactions were not looked at: INNODB_TRX needs the PROCESS privilege"
        )
    recommendations += [
        f"connection {tx['id']} has held a transaction open for {took(float(tx['seconds']), 0)}; "
        "it holds back purge and may block a rebuild"
        for tx in long_running or []
    ]
    check = (
        corruption_check(conn, ctx, [t["table"] for t in report])
        if params.get("check_corruption")
        else None
    )
    return {
        **tablewise_output(found),
        "database_size_bytes": size["size_bytes"],
        "size_method": size["method"],
        "connections": status.get("threads_connected"),
        "active_connections": status.get("threads_running"),
        "cache_hit_percent": round(100.0 * (1 - misses / requests), 2) if requests else None,
        "long_running_transactions": long_running,
        **health_integrity(report, check, recommendations, "CHECK TABLE"),
    }


_CATALOG_READS = (TABLES, _STATUS_MARIADB, _STATUS_MYSQL, _LONG_TRANSACTIONS, FILES_MARIADB)


def _health_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """Its catalog reads, then (with check_corruption) a CHECK TABLE per table, each named."""
    if not params.get("check_corruption"):
        return list(_CATALOG_READS)
    return [*_CATALOG_READS, *check_statements(ctx, step_tables(params, ctx))]


analyze_database_health = Handler(
    sql_templates=(
        *_CATALOG_READS,
        TABLE,
        COLUMNS,
        SAMPLE,
        "SHOW GRANTS",
        ENGINES,
        "CHECK TABLE {table}",
    ),
    run_fn=_health,
    render_fn=_health_sql,
)
