"""What the MySQL and MariaDB handlers read of information_schema: a table's rows and
sizes, and which of the two servers this is.

Sizes are the tablespace files' sizes where the account may read them (PROCESS), else
DATA_LENGTH + INDEX_LENGTH + DATA_FREE, measured the same way before and after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed
from aishell.handlers import read_together
from aishell.handlers.mysql.privileges import current_database, denied
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.tool.readings import CATALOG_FIGURES

TABLES = """
SELECT TABLE_NAME AS name, ENGINE AS engine, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) AS data_bytes, coalesce(INDEX_LENGTH, 0) AS index_bytes,
       coalesce(DATA_FREE, 0) AS free_bytes, UPDATE_TIME AS updated
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')
ORDER BY TABLE_NAME
"""
TABLE = """
SELECT TABLE_NAME AS name, ENGINE AS engine, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) AS data_bytes, coalesce(INDEX_LENGTH, 0) AS index_bytes,
       coalesce(DATA_FREE, 0) AS free_bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t
"""

# Every table a plan names, in one query (aishell/tool/readings.py).
TABLE_EACH = TABLE.replace("AND TABLE_NAME = :t", "AND TABLE_NAME IN :names")


def plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row with the server's DECIMAL sums as Python integers."""
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in row.items()}


def free_percent(row: Mapping[str, Any], total: int | None = None) -> float:
    """DATA_FREE's share of the table's bytes: `total`, its file's size where it was
    read, else DATA_LENGTH + INDEX_LENGTH + DATA_FREE."""
    if total is None:
        total = row["data_bytes"] + row["index_bytes"] + row["free_bytes"]
    return round(100.0 * row["free_bytes"] / total, 2) if total else 0.0


def on_disk(row: Mapping[str, Any], size: Mapping[str, Any] | None) -> int | None:
    """The table's file size, where the catalog's figures are too old to measure it by
    (else None: DATA_LENGTH + INDEX_LENGTH + DATA_FREE are). InnoDB's DATA_FREE (its
    free extents) is counted from the file as it is, while DATA_LENGTH and INDEX_LENGTH
    are the persistent statistics' as of the last recalculation: a table filled a
    thousandfold since still shows its old size, and DATA_FREE against that would call
    it 99% free. Fresh figures account for most of the file (the rest: the unused pages
    of its extents); figures that account for under half of it are taken for old, and
    DATA_FREE is measured against the file, which understates the free share (the
    unused pages are not counted) rather than inventing one."""
    if size is None or size.get("method") != FILE_SIZE:
        return None
    counted = row["data_bytes"] + row["index_bytes"] + row["free_bytes"]
    file_bytes = int(size["bytes"])
    return file_bytes if counted * 2 < file_bytes else None


def table_row(conn: Connection, table: str) -> dict[str, Any]:
    row = conn.execute(text(TABLE), {"t": table}).mappings().first()
    if row is None:
        raise StepFailed(f"Table {table!r} is not in the current database")
    return plain(row)


# The keys of a table's readings (aishell/tool/readings.py) that steps hand on to the next.
ROW_READING = CATALOG_FIGURES
SIZE_READING = "table_size"


def recent_table_row(ctx: ToolContext, table: str) -> dict[str, Any]:
    """table_row, as an earlier step of the run read it if it just did, else read with
    the plan's other tables (one query for them all)."""
    return ctx.table_readings.get_each(
        table,
        ROW_READING,
        lambda: table_row(ctx.connection, table),
        lambda names: table_rows(ctx.connection, names),
    )


def table_rows(conn: Connection, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """table_row of each of these tables that is there, in one query."""
    if not names:
        return {}
    statement = text(TABLE_EACH).bindparams(bindparam("names", expanding=True))
    rows = read_together(
        conn, lambda: list(conn.execute(statement, {"names": list(names)}).mappings())
    )
    return {str(r["name"]): plain(r) for r in rows}


def is_mariadb(conn: Connection) -> bool:
    return bool(getattr(conn.dialect, "is_mariadb", False))


# --- sizes ------------------------------------------------------------------------------------

FILES_MARIADB = (
    "SELECT NAME AS name, FILE_SIZE AS bytes FROM information_schema.INNODB_SYS_TABLESPACES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/%')"
)
FILES_MYSQL = (
    "SELECT NAME AS name, FILE_SIZE AS bytes FROM information_schema.INNODB_TABLESPACES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/%')"
)
# One table's file, by the name InnoDB gives it (database/table).
FILE_MARIADB = (
    "SELECT FILE_SIZE FROM information_schema.INNODB_SYS_TABLESPACES "
    "WHERE NAME = CONCAT(DATABASE(), '/', :t)"
)
FILE_MYSQL = (
    "SELECT FILE_SIZE FROM information_schema.INNODB_TABLESPACES "
    "WHERE NAME = CONCAT(DATABASE(), '/', :t)"
)
FILE_SIZE = "tablespace file size"
STATISTICS = "DATA_LENGTH + INDEX_LENGTH + DATA_FREE"


def _file_sizes(conn: Connection) -> dict[str, int] | None:
    """Each file-per-table tablespace's size by table name; None without PROCESS."""
    try:
        rows = conn.execute(text(FILES_MARIADB if is_mariadb(conn) else FILES_MYSQL)).all()
    except DBAPIError as exc:
        if denied(exc) is None:
            raise
        return None
    prefix = f"{current_database(conn)}/"
    return {r.name[len(prefix) :]: int(r.bytes) for r in rows if r.name.startswith(prefix)}


def _measured(row: Mapping[str, Any], files: dict[str, int] | None) -> tuple[int, str]:
    if files is not None and row["name"] in files:
        return files[row["name"]], FILE_SIZE
    return row["data_bytes"] + row["index_bytes"] + row["free_bytes"], STATISTICS


def table_size(
    conn: Connection, table: str, row: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One table's size on disk, and how it was measured; `row`, its table_row when the
    caller has just read it (else it is read only when the file's size cannot be)."""
    try:
        file = conn.execute(text(FILE_MARIADB if is_mariadb(conn) else FILE_MYSQL), {"t": table})
        size = file.scalar()
    except DBAPIError as exc:
        if denied(exc) is None:
            raise
        size = None
    if size is not None:
        return {"bytes": int(size), "method": FILE_SIZE}
    row = row if row is not None else table_row(conn, table)
    return {
        "bytes": row["data_bytes"] + row["index_bytes"] + row["free_bytes"],
        "method": STATISTICS,
    }


def recent_table_size(ctx: ToolContext, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """table_size, as an earlier step of the run measured it if it just did, else
    measured with the plan's other tables (the database's files in one query)."""
    return ctx.table_readings.get_each(
        table,
        SIZE_READING,
        lambda: table_size(ctx.connection, table, row),
        lambda names: _table_sizes(ctx, names),
    )


def _table_sizes(ctx: ToolContext, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """table_size of each of these tables: the files' sizes in one query, the catalog's
    figures of those whose file's cannot be read in one more."""
    if not names:
        return {}
    conn = ctx.connection
    files = read_together(conn, lambda: [_file_sizes(conn)])
    if not files:  # the query failed: each table is measured alone
        return {}
    found = files[0] or {}
    sizes = {n: {"bytes": found[n], "method": FILE_SIZE} for n in names if n in found}
    rows = table_rows(conn, [n for n in names if n not in found])
    for name, row in rows.items():
        sizes[name] = {"bytes": _measured(row, None)[0], "method": STATISTICS}
    return sizes


def database_size(
    conn: Connection,
    ctx: ToolContext | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every table of the database, each measured as table_size measures it; with the
    step's `ctx`, each table's size is kept for the steps after it (readings), which
    then need not read the files again. `rows`: every table's row of TABLES, when the
    caller read them just now."""
    files = _file_sizes(conn)
    if rows is None:
        rows = [plain(r) for r in conn.execute(text(TABLES)).mappings()]
    measured = [_measured(r, files) for r in rows]
    if ctx is not None:
        sizes = {
            r["name"]: {"bytes": b, "method": m} for r, (b, m) in zip(rows, measured, strict=True)
        }
        ctx.table_readings.keep_each(SIZE_READING, sizes)
    methods = {m for _, m in measured} or {STATISTICS}
    method = (
        methods.pop() if len(methods) == 1 else f"{FILE_SIZE} where readable, else {STATISTICS}"
    )
    return {"size_bytes": sum(b for b, _ in measured), "method": method}


def used_bytes(conn: Connection) -> int:
    """What the database's tables hold now: each one's file less its free extents where
    the files can be read (DATA_LENGTH and INDEX_LENGTH lag a table filled since its
    statistics were counted), else DATA_LENGTH + INDEX_LENGTH."""
    files = _file_sizes(conn) or {}
    total = 0
    for found in conn.execute(text(TABLES)).mappings():
        row = plain(found)
        counted = int(row["data_bytes"] + row["index_bytes"])
        file = files.get(row["name"])
        total += counted if file is None else max(counted, file - int(row["free_bytes"]))
    return total
