"""What a target holds: tables, row estimates, sizes, indexes; per dialect, in a constant
number of round trips however many tables there are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import TargetError
from aishell.sqltext import quote_identifier

_PG_SNAPSHOT = """
SELECT c.relname AS name,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint
            ELSE coalesce(s.n_live_tup, 0) END AS rows,
       pg_total_relation_size(c.oid) AS bytes,
       coalesce(array_agg(i.relname ORDER BY i.relname)
                FILTER (WHERE i.relname IS NOT NULL), '{}') AS indexes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_index x ON x.indrelid = c.oid
LEFT JOIN pg_class i ON i.oid = x.indexrelid
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
GROUP BY c.oid, c.relname, c.reltuples, s.n_live_tup
ORDER BY c.relname
"""

_MYSQL_TABLES = """
SELECT TABLE_NAME AS name, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) + coalesce(INDEX_LENGTH, 0) AS bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
ORDER BY TABLE_NAME
"""
_MYSQL_INDEXES = """
SELECT DISTINCT TABLE_NAME AS tbl, INDEX_NAME AS name
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, INDEX_NAME
"""


def snapshot(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every user table: {name: {rows, bytes, indexes}}."""
    dialect = conn.dialect.name
    tables: dict[str, dict[str, Any]] = {}
    if dialect == "postgresql":
        for row in conn.execute(text(_PG_SNAPSHOT)):
            tables[row.name] = {
                "rows": int(row.rows),
                "bytes": int(row.bytes),
                "indexes": list(row.indexes),
            }
    elif dialect in ("mysql", "mariadb"):
        for row in conn.execute(text(_MYSQL_TABLES)):
            tables[row.name] = {"rows": int(row.row_count), "bytes": int(row.bytes), "indexes": []}
        for row in conn.execute(text(_MYSQL_INDEXES)):
            if row.tbl in tables:
                tables[row.tbl]["indexes"].append(row.name)
    else:
        rows = conn.execute(
            text(
                "SELECT name, type, tbl_name FROM sqlite_schema "
                "WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "ORDER BY name"
            )
        ).all()
        for row in rows:
            if row.type == "table":
                tables[row.name] = {"rows": None, "bytes": None, "indexes": []}
        for row in rows:
            if row.type == "index" and row.tbl_name in tables:
                tables[row.tbl_name]["indexes"].append(row.name)
        for row in conn.execute(
            text(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' "
                "AND name LIKE 'sqlite\\_autoindex%' ESCAPE '\\'"
            )
        ):
            if row.tbl_name in tables:
                tables[row.tbl_name]["indexes"].append(row.name)
        estimates = _sqlite_stat1(conn)
        for name, info in tables.items():
            info["indexes"].sort()
            info["rows"] = estimates.get(name)
            if info["rows"] is None:
                info["rows"] = _count(conn, name)
    return tables


def user_tables(conn: Connection) -> list[str]:
    """User tables of the target, by name."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY 1"
        )
    elif dialect in ("mysql", "mariadb"):
        sql = (
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
        )
    else:
        sql = (
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1"
        )
    return [r[0] for r in conn.execute(text(sql))]


def table_columns(conn: Connection, table: str) -> list[str]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT attname FROM pg_attribute WHERE attrelid = "
            "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :t AND n.nspname = current_schema()) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    elif dialect in ("mysql", "mariadb"):
        sql = (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"
        )
    else:
        sql = "SELECT name FROM pragma_table_info(:t) ORDER BY cid"
    return [r[0] for r in conn.execute(text(sql), {"t": table})]


def row_estimate(conn: Connection, table: str) -> int:
    """The catalog's row estimate for one table."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        value = conn.execute(
            text(
                "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint "
                "ELSE coalesce(s.n_live_tup, 0) END FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relname = :t AND n.nspname = current_schema()"
            ),
            {"t": table},
        ).scalar()
        return int(value or 0)
    if dialect in ("mysql", "mariadb"):
        value = conn.execute(
            text(
                "SELECT TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            ),
            {"t": table},
        ).scalar()
        return int(value or 0)
    estimate = _sqlite_stat1(conn).get(table)
    return estimate if estimate is not None else _count(conn, table)


def table_bytes(conn: Connection, table: str) -> int | None:
    """Bytes a table and its indexes occupy, where the database can say."""
    dialect = conn.dialect.name
    try:
        if dialect == "postgresql":
            return int(
                conn.execute(
                    text(
                        "SELECT pg_total_relation_size(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relname = :t AND n.nspname = current_schema()"
                    ),
                    {"t": table},
                ).scalar()
                or 0
            )
        if dialect in ("mysql", "mariadb"):
            return int(
                conn.execute(
                    text(
                        "SELECT coalesce(DATA_LENGTH, 0) + coalesce(INDEX_LENGTH, 0) "
                        "FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
                    ),
                    {"t": table},
                ).scalar()
                or 0
            )
        return conn.execute(
            text(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = :t OR name IN "
                "(SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = :t)"
            ),
            {"t": table},
        ).scalar_one()
    except DBAPIError:
        return None


def check_tables(
    conn: Connection, target: str, tables: Sequence[str], known: Sequence[str] | None = None
) -> None:
    """Every name must be an existing user table; the error lists the ones there are."""
    known = list(known) if known is not None else user_tables(conn)
    present = set(known)
    for table in tables:
        if table not in present:
            listing = ", ".join(known[:50]) + (" ..." if len(known) > 50 else "")
            raise TargetError(
                f"Table {table!r} not found in target '{target}'; tables are: {listing or '(none)'}"
            )


def check_column(conn: Connection, table: str, column: str) -> None:
    columns = table_columns(conn, table)
    if column not in columns:
        raise TargetError(
            f"Table {table!r} has no column {column!r}; columns are: {', '.join(columns)}"
        )


def _sqlite_stat1(conn: Connection) -> dict[str, int]:
    has_stats = conn.execute(
        text("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'")
    ).scalar_one()
    if not has_stats:
        return {}
    estimates: dict[str, int] = {}
    for tbl, stat in conn.execute(text("SELECT tbl, stat FROM sqlite_stat1")):
        if stat and tbl not in estimates:
            estimates[tbl] = int(str(stat).split()[0])
    return estimates


def _count(conn: Connection, table: str) -> int:
    quoted = quote_identifier(conn.dialect, table)
    return int(conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one())
