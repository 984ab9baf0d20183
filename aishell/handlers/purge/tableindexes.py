"""A table's plain indexes as a purge reads them: the columns of each in order, whether
it is the primary key or unique, and whether its first column is NOT NULL, from which
the purge picks the key it walks and learns whether its date column is indexed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.sqltext import text
from aishell.targets.catalog import sqlite_name, sqlite_text_as_bytes


@dataclass(frozen=True)
class TableIndex:
    """One index of a table: its columns in order, whether it is the primary key or
    unique, and whether its first column is NOT NULL."""

    columns: tuple[str, ...]
    primary: bool
    unique: bool
    first_not_null: bool


# One statement for every index of a table (the reflection API sends several per table).
_PG_INDEXES = (
    "SELECT i.indexrelid::bigint AS id, i.indisprimary AS is_primary, i.indisunique AS "
    "is_unique, i.indpred IS NULL AND i.indexprs IS NULL AS plain, k.n, a.attname, "
    "a.attnotnull FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
    "JOIN pg_namespace ns ON ns.oid = c.relnamespace "
    "CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) "
    "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE c.relname = :t AND ns.nspname = pg_catalog.current_schema() ORDER BY i.indexrelid, k.n"
)
_MYSQL_INDEXES = (
    "SELECT INDEX_NAME AS id, INDEX_NAME = 'PRIMARY' AS is_primary, NON_UNIQUE = 0 AS "
    "is_unique, 1 AS plain, SEQ_IN_INDEX AS n, COLUMN_NAME AS attname, NULLABLE <> 'YES' AS "
    "attnotnull FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME = :t ORDER BY INDEX_NAME, SEQ_IN_INDEX"
)


def indexes_of(conn: Connection, table: str) -> list[TableIndex]:
    """The table's indexes, in one statement on PostgreSQL and MySQL. An index on an
    expression, or a partial one, is neither unique over the rows nor a plain column's
    index, and is left out."""
    dialect = conn.dialect.name
    if family(dialect) not in ("postgresql", "mysql"):
        return _reflected_indexes(conn, table)
    sql = _PG_INDEXES if dialect == "postgresql" else _MYSQL_INDEXES
    grouped: dict[Any, list[Any]] = {}
    for row in conn.execute(text(sql), {"t": table}):
        grouped.setdefault(row.id, []).append(row)
    found = []
    for rows in grouped.values():
        if not rows[0].plain or any(r.attname is None for r in rows):
            continue
        found.append(
            TableIndex(
                tuple(str(r.attname) for r in rows),
                bool(rows[0].is_primary),
                bool(rows[0].is_unique),
                bool(rows[0].attnotnull),
            )
        )
    return found


# SQLite's indexes of a table with their columns (NULL for an expression), as the
# reflection of SQLAlchemy reads them (its own automatic indexes left out), but as
# bytes: an index or a column whose name is not UTF-8 must not fail the purge's plan.
_SQLITE_INDEXES = (
    'SELECT l.name AS id, l."unique" AS is_unique, i.name AS attname '
    "FROM pragma_index_list(:t) l JOIN pragma_index_info(l.name) i "
    "WHERE l.name NOT LIKE 'sqlite\\_autoindex%' ESCAPE '\\' ORDER BY l.name, i.seqno"
)
_SQLITE_COLUMNS = 'SELECT name, "notnull", pk FROM pragma_table_info(:t) ORDER BY cid'


def _reflected_indexes(conn: Connection, table: str) -> list[TableIndex]:
    """SQLite's primary key and indexes; one naming a column or called by a name that is
    not UTF-8 is left out (as an index on an expression is)."""
    with sqlite_text_as_bytes(conn):
        columns = conn.execute(text(_SQLITE_COLUMNS), {"t": table}).all()
        rows = conn.execute(text(_SQLITE_INDEXES), {"t": table}).all()
    nullable = {sqlite_name(c.name): not c.notnull for c in columns}
    found = []
    primary = tuple(str(sqlite_name(c.name)) for c in sorted(columns, key=lambda c: c.pk) if c.pk)
    if primary and all(sqlite_name(c.name) is not None for c in columns if c.pk):
        found.append(TableIndex(primary, True, True, not nullable.get(primary[0], True)))
    grouped: dict[bytes, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.id, []).append(row)
    for index, parts in sorted(grouped.items()):
        names = [sqlite_name(r.attname) for r in parts]
        if sqlite_name(index) is None or any(n is None for n in names):
            continue
        unique = bool(parts[0].is_unique)
        found.append(
            TableIndex(tuple(map(str, names)), False, unique, not nullable.get(names[0], True))
        )
    return found
