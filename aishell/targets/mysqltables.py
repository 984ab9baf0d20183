"""What the catalog reads of a MySQL or MariaDB database's tables: each one's row of
information_schema.TABLES and its indexes, in one query however many tables there are.

A row of TABLES with its sizes is the costly read there: the server opens each table to
fill it, and a server that keeps fewer table definitions open than the database has
tables (table_definition_cache, 400 by default) opens them all again on each read, 1.4 s
for 10,000 tables. So the row is kept whole (`figures`: engine, rows, data, index and
free bytes): planning's urgency and the steps' own first readings take it from here
while it is fresh (TableCatalog.fresh_figures), not from reads of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.sqltext import text
from aishell.targets.identity import _innodb_file_name

# Tables and their indexes as one result: a row per table, then a row per index. Each
# query says what it is (/* aishell catalog */), for a DBA reading the server's log and
# for the tests that count them.
_TABLES = """
/* aishell catalog */
SELECT 'table' AS kind, TABLE_NAME AS tbl, NULL AS idx, ENGINE AS engine,
       coalesce(TABLE_ROWS, 0) AS row_count, coalesce(DATA_LENGTH, 0) AS data_bytes,
       coalesce(INDEX_LENGTH, 0) AS index_bytes, coalesce(DATA_FREE, 0) AS free_bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') {only}
UNION ALL
SELECT DISTINCT 'index', TABLE_NAME, INDEX_NAME, NULL, NULL, NULL, NULL, NULL
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() {only}
"""
_ONLY = "AND TABLE_NAME IN :names"
# Each file-per-table tablespace's size, by InnoDB's name for it (database/table), where
# the login may read them (PROCESS). DATA_LENGTH and INDEX_LENGTH are the persistent
# statistics' as of their last recalculation: a table filled a thousandfold since still
# shows its old size there, its file does not.
_FILES = (
    "SELECT NAME AS name, FILE_SIZE AS bytes FROM information_schema."
    "{table} WHERE NAME LIKE CONCAT(DATABASE(), '/%')"
)
_NOT_ALLOWED = (1044, 1142, 1227)
FIGURES = ("engine", "row_count", "data_bytes", "index_bytes", "free_bytes")


@dataclass
class MysqlTable:
    """One table as read: its TABLES row's figures (FIGURES, with its name), the bytes
    it takes (its file's where that is larger than the statistics say), its indexes."""

    figures: dict[str, Any]
    bytes: int
    indexes: list[str] = field(default_factory=list)


def read_mysql(conn: Connection, names: Sequence[str] | None) -> dict[str, MysqlTable]:
    """The tables (all, or only `names`) with their figures and indexes."""
    if names is not None and not names:
        return {}
    statement = text(_TABLES.replace("{only}", "" if names is None else _ONLY))
    params: dict[str, Any] = {}
    if names is not None:
        statement = statement.bindparams(bindparam("names", expanding=True))
        params = {"names": list(names)}
    tables: dict[str, MysqlTable] = {}
    indexes: list[tuple[str, str]] = []
    for r in conn.execute(statement, params).mappings():
        if r["kind"] == "table":
            figures = {k: int(r[k]) if isinstance(r[k], Decimal) else r[k] for k in FIGURES}
            figures["name"] = str(r["tbl"])
            bytes_ = int(figures["data_bytes"]) + int(figures["index_bytes"])
            tables[str(r["tbl"])] = MysqlTable(figures, bytes_)
        else:
            indexes.append((str(r["tbl"]), str(r["idx"])))
    for table, index in sorted(indexes):
        if table in tables:
            tables[table].indexes.append(index)
    # With every table (planning's read); one looked up again after a step of aishell's
    # own, which leaves its statistics fresh, costs one query, not two.
    files = _files(conn) if tables and names is None else {}
    for name, found in tables.items():
        size = files.get(_innodb_file_name(name))
        if size is not None and size > found.bytes:
            found.bytes = size
    return tables


def innodb_tablespaces(conn: Connection) -> str:
    """information_schema's view of InnoDB's tablespaces, as this server names it."""
    mariadb = getattr(conn.dialect, "is_mariadb", False)
    return "INNODB_SYS_TABLESPACES" if mariadb else "INNODB_TABLESPACES"


def _files(conn: Connection) -> dict[str, int]:
    """The database's tablespace files' sizes by InnoDB's table name; {} where the login
    may not read them."""
    try:
        rows = conn.execute(text(_FILES.replace("{table}", innodb_tablespaces(conn)))).all()
    except DBAPIError as exc:
        if getattr(exc.orig, "args", (None,))[0] in _NOT_ALLOWED:
            return {}
        raise
    return {str(name).split("/", 1)[1]: int(size) for name, size in rows if "/" in str(name)}
