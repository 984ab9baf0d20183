"""A MySQL or MariaDB table's bytes as they are now, for the limits and approvals
(measured.py): its file-per-table tablespace's file where the login may read the files
(PROCESS), else DATA_LENGTH + INDEX_LENGTH, an estimate and said so.

A table's engine comes without the server opening the table; its DATA_LENGTH opens it,
1.4 s for 10,000 tables on a server that keeps 400 definitions open (the default), so
the catalog's figures are read only for the tables whose file does not give their size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.sqltext import text
from aishell.targets.catalog import named_rows
from aishell.targets.mysqltables import innodb_tablespaces

# An InnoDB clustered index record takes at least its 5-byte header, the 6-byte
# transaction id and the 7-byte roll pointer of its file's bytes.
_INNODB_LEAST_PER_ROW = 18
# A table of its own tablespace (file-per-table) is named schema/table there; one whose
# name InnoDB encodes (@0024 ...), or in the system tablespace, has only the estimate.
# The tables and the tablespaces are read apart and matched here: joined in one query,
# the server read the tablespaces again for each table (8 s for 10,000 tables, 2 s apart).
_TABLES = """
/* aishell measure */ SELECT t.TABLE_SCHEMA AS db, t.TABLE_NAME AS name, t.ENGINE AS engine,
       {estimated} AS estimated
FROM information_schema.TABLES t
WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')
"""
_NAMED = "  AND t.TABLE_NAME IN :names\n"
_ESTIMATES = _TABLES.replace(
    "{estimated}", "coalesce(t.DATA_LENGTH, 0) + coalesce(t.INDEX_LENGTH, 0)"
)
_ENGINES = _TABLES.replace("{estimated}", "NULL")
_FILES = """
/* aishell measure */ SELECT s.NAME AS name, s.FILE_SIZE AS file_size,
       s.ALLOCATED_SIZE AS allocated
FROM information_schema.{tablespaces} s WHERE s.NAME LIKE CONCAT(DATABASE(), '/%')
"""
# The tablespaces' view needs the PROCESS privilege (MariaDB: error 1227).
_NO_PROCESS = 1227


@dataclass(frozen=True)
class _Row:
    name: str
    engine: Any
    estimated: Any
    file_size: Any
    allocated: Any


def mysql_sizes(conn: Connection, tables: Sequence[str]) -> dict[str, tuple[int, bool, int | None]]:
    """Each of these tables that is there: (bytes, whether they are an estimate, the
    most rows they can hold where its file bounds them)."""
    sizes: dict[str, tuple[int, bool, int | None]] = {}
    for r in _rows(conn, tables):
        if _by_estimate(r):
            sizes[r.name] = (int(r.estimated), True, None)
        else:
            file_bytes = max(int(r.file_size), int(r.allocated or 0))
            sizes[r.name] = (file_bytes, False, file_bytes // _INNODB_LEAST_PER_ROW)
    return sizes


def _rows(conn: Connection, tables: Sequence[str]) -> list[_Row]:
    """The tables' files' sizes where the account may read them, and their catalog
    sizes where no file gives theirs."""
    files: dict[str, tuple[Any, Any]] = {}
    try:
        for f in conn.execute(text(_FILES.replace("{tablespaces}", innodb_tablespaces(conn)))):
            files[str(f.name)] = (f.file_size, f.allocated)
    except DBAPIError as exc:
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        if exc.connection_invalidated or code != _NO_PROCESS:
            raise
        # Without PROCESS: DATA_LENGTH + INDEX_LENGTH alone, an estimate (its rows counted).
    # As the server compares names here (without case), the exact name first.
    folded = {name.lower(): found for name, found in files.items()}

    def file_of(r: Any) -> tuple[Any, Any]:
        path = f"{r.db}/{r.name}"
        return files.get(path, folded.get(path.lower(), (None, None)))

    listed = _listed(conn, _ENGINES if files else _ESTIMATES, tables)
    found = [_Row(r.name, r.engine, r.estimated, *file_of(r)) for r in listed]
    unsized = [r.name for r in found if _by_estimate(r) and r.estimated is None]
    if unsized:
        estimated = {r.name: r.estimated for r in _listed(conn, _ESTIMATES, unsized)}
        found = [replace(r, estimated=estimated.get(r.name, r.estimated)) for r in found]
    # A table dropped between the two reads has no size.
    return [r for r in found if not (_by_estimate(r) and r.estimated is None)]


def _listed(conn: Connection, sql: str, tables: Sequence[str]) -> list[Any]:
    """The rows of these tables (targets/catalog.py: named_rows)."""
    return named_rows(conn, sql + _NAMED, sql, tables, lambda row: str(row.name))


def _by_estimate(r: _Row) -> bool:
    """Whether the table's size is its catalog figures' (no file of its own to read)."""
    return r.file_size is None or str(r.engine).lower() != "innodb"
