"""What the handlers and commands read of a target's catalog: its tables, one table's
columns, how soon each table needs maintenance. The tables with their figures, as
planning and a run keep them, are in tablecatalog.py; who holds a lock, in
lockholders.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import TargetError
from aishell.sqltext import text


@contextmanager
def sqlite_text_as_bytes(conn: Connection) -> Iterator[None]:
    """SQLite text comes back as its bytes for the queries inside. SQLite keeps a name
    as the bytes it was given, which need not be UTF-8; decoded as a whole, one such
    name fails the whole query, so catalog queries read bytes and decode each name."""
    dbapi: Any = conn.connection.dbapi_connection
    before = dbapi.text_factory
    dbapi.text_factory = bytes
    try:
        yield
    finally:
        dbapi.text_factory = before


def sqlite_name(raw: object, unreadable: list[str] | None = None) -> str | None:
    """A name read under sqlite_text_as_bytes: its text, or None when it is not UTF-8
    (then added to `unreadable` as shown, its bad bytes as \\xNN). Such a table is left
    out, never named by a lossy decoding: a replacement character could name another."""
    if not isinstance(raw, bytes):
        return None if raw is None else str(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if unreadable is not None:
            unreadable.append(raw.decode("utf-8", "backslashreplace"))
        return None


def user_tables(conn: Connection, unreadable: list[str] | None = None) -> list[str]:
    """User tables of the target, by name; on SQLite those whose names are not UTF-8
    are left out (and listed in `unreadable`)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema() ORDER BY 1"
        )
    elif family(dialect) == "mysql":
        sql = (
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1"
        )
    else:
        sql = (
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1"
        )
        with sqlite_text_as_bytes(conn):
            rows = conn.execute(text(sql)).all()
        return [n for n in (sqlite_name(r[0], unreadable) for r in rows) if n is not None]
    return [r[0] for r in conn.execute(text(sql))]


# Each dialect's columns of a table in order, and the condition that leaves out the
# generated ones (which the table computes itself: a copy names the others). PostgreSQL
# from pg_attribute: information_schema.columns shows only the columns the role has a
# privilege on. MySQL's list has MariaDB's invisible columns, which SELECT * leaves
# out. SQLite's table_info shows no generated column.
_COLUMNS = {
    "postgresql": (
        "SELECT attname FROM pg_attribute WHERE attrelid = "
        "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = :t AND n.nspname = pg_catalog.current_schema()) "
        "AND attnum > 0 AND NOT attisdropped{stored} ORDER BY attnum",
        " AND attgenerated = ''",
    ),
    "mysql": (
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = :t{stored} ORDER BY ORDINAL_POSITION",
        " AND coalesce(GENERATION_EXPRESSION, '') = ''",
    ),
    "sqlite": ("SELECT name FROM pragma_table_info(:t){stored} ORDER BY cid", ""),
}


def table_columns(conn: Connection, table: str, *, stored_only: bool = False) -> list[str]:
    """The table's columns in order; `stored_only`: those a row is inserted with, all
    but the generated ones."""
    dialect = conn.dialect.name
    sql, stored = _COLUMNS[family(dialect)]
    query = sql.replace("{stored}", stored if stored_only else "")
    return [r[0] for r in conn.execute(text(query), {"t": table})]


def check_column(conn: Connection, table: str, column: str) -> None:
    require_column(table, column, table_columns(conn, table))


def require_column(table: str, column: str, columns: Sequence[str]) -> None:
    """The column must be one of the table's; the error lists those there are."""
    if column not in columns:
        raise TargetError(
            f"Table {table!r} has no column {column!r}; columns are: {', '.join(columns)}"
        )


# A partitioned table's relfrozenxid is 0 (no rows of its own): no age, not age(0)'s 2^31 - 1.
_PG_URGENCY = """
SELECT c.relname AS name,
       CASE WHEN c.relfrozenxid <> '0'::xid THEN pg_catalog.age(c.relfrozenxid) END AS xid_age,
       coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       c.relpages::bigint * pg_catalog.current_setting('block_size')::bigint AS total_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
"""
_MYSQL_URGENCY = """
SELECT TABLE_NAME AS name, coalesce(DATA_LENGTH, 0) + coalesce(INDEX_LENGTH, 0) AS bytes,
       coalesce(DATA_FREE, 0) AS free_bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')
"""
# Autovacuum forces a freeze at 200 million transactions.
FREEZE_MAX_AGE = 200_000_000


def pg_urgency(xid_age: int | None, live: int, dead: int, total_bytes: int) -> float:
    """Transaction-ID age toward a forced freeze, the share of dead rows, then size."""
    xid = min((xid_age or 0) / FREEZE_MAX_AGE, 1.0)
    total = (live or 0) + (dead or 0)
    dead_share = (dead or 0) / total if total else 0.0
    return round(3 * xid + 2 * dead_share + min((total_bytes or 0) / 2**30, 1.0), 4)


def mysql_urgency(used_bytes: int, free_bytes: int) -> float:
    """The share of free space, then size."""
    total = used_bytes + free_bytes
    free = free_bytes / total if total else 0.0
    return round(2 * free + min(used_bytes / 2**30, 1.0), 4)


def urgency(conn: Connection) -> dict[str, float]:
    """How soon each table needs maintenance, higher first, in one query.

    PostgreSQL: transaction-ID age toward a forced freeze, then the share of dead
    rows, then size; MySQL/MariaDB: the share of free space, then size; SQLite: size.
    """
    dialect = conn.dialect.name
    scores: dict[str, float] = {}
    if dialect == "postgresql":
        for r in conn.execute(text(_PG_URGENCY)).mappings():
            scores[r["name"]] = pg_urgency(r["xid_age"], r["live"], r["dead"], r["total_bytes"])
    elif family(dialect) == "mysql":
        for r in conn.execute(text(_MYSQL_URGENCY)).mappings():
            scores[r["name"]] = mysql_urgency(int(r["bytes"]), int(r["free_bytes"]))
    else:
        try:
            rows = conn.execute(
                text(
                    "SELECT s.tbl_name AS name, sum(d.pgsize) AS bytes FROM dbstat d "
                    "JOIN sqlite_schema s ON s.name = d.name GROUP BY s.tbl_name"
                )
            )
            scores = {r.name: round(min(r.bytes / 2**30, 1.0), 9) for r in rows}
        except DBAPIError:
            scores = {}
    return scores
