"""Row counts and content checksums of a database's tables: taken for a backup's manifest,
and measured again in a restored copy the same way, then compared with the manifest.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, Connection

from aishell.handlers.backup.manifest import FROM_DUMP
from aishell.handlers.backup.mysql_dump import ROW_SUM, read_chunks
from aishell.handlers.backup.processes import mysql_dump_argv, server_env
from aishell.handlers.backup.stream import stream_read
from aishell.sqltext import quote_identifier, quote_plain_identifier, text
from aishell.targets.appcode import (
    AppCode,
    file_app_code,
    readable_columns,
    stops_check,
    stops_reading,
    tripwires,
)
from aishell.targets.catalog import sqlite_name, user_tables
from aishell.tool.context import ToolContext
from aishell.tool.side import Side

# Tables up to this many rows also get a checksum of their contents in the manifest
# (MySQL/MariaDB: every table, since the dump is read whole anyway).
CHECKSUM_ROWS = 50_000


def checksum_rows(rows: Any) -> str:
    """An order-independent checksum of a table's rows."""
    return _rows_and_checksum(rows)[1]


def _rows_and_checksum(rows: Any) -> tuple[int, str]:
    hashes = sorted(hashlib.sha256(repr(tuple(row)).encode()).digest() for row in rows)
    return len(hashes), hashlib.sha256(b"".join(hashes)).hexdigest()


def table_counts(conn: Connection, tables: list[str]) -> dict[str, int]:
    return {
        t: int(
            conn.execute(
                text(f"SELECT count(*) FROM {quote_identifier(conn.dialect, t)}")
            ).scalar_one()
        )
        for t in tables
    }


def table_checksums(conn: Connection, counts: dict[str, int]) -> dict[str, str]:
    small = [t for t, n in counts.items() if n <= CHECKSUM_ROWS]
    return {t: checksum for t, (_rows, checksum) in table_sums(conn, small).items()}


def table_sums(conn: Connection, tables: list[str]) -> dict[str, tuple[int, str]]:
    """Each table's rows and checksum, from one read of it."""
    with _text_as_stored(conn):
        return {
            t: _rows_and_checksum(
                conn.execute(text(f"SELECT * FROM {quote_identifier(conn.dialect, t)}"))
            )
            for t in tables
        }


def sqlite_text(stored: bytes) -> str:
    """A SQLite TEXT value as rows are checksummed: UTF-8 decoded, and bytes that are not
    UTF-8 (SQLite keeps whatever it was given) kept as they are, each as its own escape,
    so that two different values never read alike and no read of them fails."""
    return stored.decode("utf-8", "surrogateescape")


@contextmanager
def _text_as_stored(conn: Connection) -> Iterator[None]:
    """A SQLite connection's TEXT read by sqlite_text while the block runs; other
    engines' drivers decode by the database's own encoding."""
    raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
    if not isinstance(raw, sqlite3.Connection):
        yield
        return
    before, raw.text_factory = raw.text_factory, sqlite_text
    try:
        yield
    finally:
        raw.text_factory = before


# The same, on a SQLite file opened with sqlite3 itself (a backup's copy, a scratch copy).


def sqlite_tables(copy: sqlite3.Connection) -> list[str]:
    """The copy's user tables; one whose name is not UTF-8 cannot be named in a
    statement, so it is not measured (the copy still holds it)."""
    before, copy.text_factory = copy.text_factory, bytes
    try:
        rows = copy.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1"
        ).fetchall()
    finally:
        copy.text_factory = before
    return [n for n in (sqlite_name(r[0]) for r in rows) if n is not None]


# The manifest's tables no connection of aishell's can open, each with why.
NOT_COUNTED = "not_counted"


def sqlite_unread(code: AppCode) -> dict[str, str]:
    """The tables whose rows no read of aishell's can reach (a virtual table of the
    application's module: any read opens the module), each with why: a copy holds them
    whole, but they are neither counted nor checksummed."""
    return {
        table: "not counted: "
        + "; ".join(dict.fromkeys(u.says() for u in code.of(table, stops_reading)))
        + ", and aishell cannot load it"
        for table in code.tables(stops_reading)
    }


def sqlite_counts(copy: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    return {
        t: copy.execute(f"SELECT count(*) FROM {quote_plain_identifier(t)}").fetchone()[0]
        for t in tables
    }


def sqlite_checksums(
    copy: sqlite3.Connection, counts: dict[str, int], code: AppCode | None = None
) -> dict[str, str]:
    """Each table's checksum (up to CHECKSUM_ROWS rows); a virtual column computed by
    the application's function is left out of it, as it is of every checksum of it."""
    before, copy.text_factory = copy.text_factory, sqlite_text
    code = code or AppCode()
    try:
        return {
            t: checksum_rows(
                copy.execute(
                    f"SELECT {readable_columns(copy, t, code)} FROM {quote_plain_identifier(t)}"
                )
            )
            for t, n in counts.items()
            if n <= CHECKSUM_ROWS
        }
    finally:
        copy.text_factory = before


def sqlite_armed(copy: sqlite3.Connection) -> tuple[AppCode, Callable[[], None]]:
    """The copy's uses of the application's code, with tripwires in their place before
    any row is read (targets/appcode.py); call the check after the reads."""
    code = file_app_code(copy)
    return code, tripwires(copy, code)


def sqlite_integrity(copy: sqlite3.Connection, code: AppCode) -> str:
    """integrity_check of the copy: "ok" or its first finding. Tables whose check would
    evaluate the application's code are left out (each table's b-trees checked alone),
    and so is a table named like a number: SQLite reads `integrity_check(10)` as a limit
    and checks the whole database, the application's code with it."""
    if not code.tables(stops_check):
        return str(copy.execute("PRAGMA integrity_check").fetchone()[0])
    # Here, not at the top: the SQLite handlers import the backup's, this module among them.
    from aishell.handlers.sqlite.corruption import read_as_a_limit

    for table in sqlite_tables(copy):
        if not code.of(table, stops_check) and read_as_a_limit(table) is None:
            sql = f"PRAGMA integrity_check({quote_plain_identifier(table)})"
            found = str(copy.execute(sql).fetchone()[0])
            if found != "ok":
                return found
    return "ok"


def measure_sqlite_file(path: Path, manifest: Mapping[str, Any]) -> Measured:
    """The manifest's tables in a SQLite file, read on a read-only connection of its own
    (tripwires in place of the application's code: never the target's own connection)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        code, check = sqlite_armed(conn)
        present = sqlite_tables(conn)
        counts = sqlite_counts(conn, [t for t in manifest["tables"] if t in present])
        sums = sqlite_checksums(conn, checksummed(manifest, present), code)
        check()
        return Measured(set(present), counts, sums)
    finally:
        conn.close()


@dataclass
class Measured:
    """A restored copy: its tables, their rows, and checksums measured the way its
    manifest's were."""

    tables: set[str]
    counts: dict[str, int]
    checksums: dict[str, str]


# How compare() names what it found: in a restored copy, or in a file decoded whole (a
# quick validation, which restores nothing).
RESTORED_COPY = {
    "missing": "tables the manifest lists did not come back",
    "rows": "rows restored",
    "contents": "restored contents differ from the backup's checksum",
    "extra": "tables the backup does not hold came back",
}
DECODED_FILE = {
    "missing": "tables the manifest lists are not in the backup's file",
    "rows": "rows in the backup's file",
    "contents": "the rows in the backup's file differ from the manifest's checksum",
    "extra": "tables the manifest does not list are in the backup's file",
}


def compare(
    manifest: Mapping[str, Any], measured: Measured, said: Mapping[str, str] = RESTORED_COPY
) -> list[str]:
    """What a restored copy (or a file decoded whole: said=DECODED_FILE) gets wrong
    against the manifest, one clear reason each."""
    expected: dict[str, int] = manifest["tables"]
    # Neither counted nor checksummed, but the copy must hold them all the same.
    unread = list(manifest.get(NOT_COUNTED) or {})
    problems: list[str] = []
    missing = [t for t in [*expected, *unread] if t not in measured.tables]
    if missing:
        problems.append(f"{said['missing']}: {', '.join(missing)}")
    for table, rows in expected.items():
        if table in measured.counts and measured.counts[table] != rows:
            problems.append(f"{table}: {measured.counts[table]} {said['rows']}, {rows} expected")
    for table, checksum in (manifest.get("checksums") or {}).items():
        got = measured.checksums.get(table)
        if table in measured.tables and got is not None and got != checksum:
            problems.append(f"{table}: {said['contents']}")
    extra = sorted(measured.tables - set(expected) - set(unread))
    if extra:
        problems.append(f"{said['extra']}: {', '.join(extra)}")
    return problems


def checksummed(manifest: Mapping[str, Any], present: list[str]) -> dict[str, int]:
    """The tables present whose checksum the manifest holds, to be checksummed whatever
    their size (a count of 0 passes CHECKSUM_ROWS)."""
    return {t: 0 for t in manifest.get("checksums") or {} if t in present}


def measure_connection(
    conn: Connection, manifest: Mapping[str, Any], checksums: bool = True
) -> Measured:
    """The manifest's tables as this connection sees them: rows counted and, unless told
    not to, contents checksummed over SQL."""
    present = user_tables(conn)
    counts = table_counts(conn, [t for t in manifest["tables"] if t in present])
    sums = table_checksums(conn, checksummed(manifest, present)) if checksums else {}
    return Measured(set(present), counts, sums)


def measure_server(
    url: URL,
    database: str,
    manifest: Mapping[str, Any],
    ctx: ToolContext,
) -> Measured:
    """Tables, rows and checksums of a database on the target's server, measured as the
    manifest's were; a MySQL/MariaDB copy is dumped again and its rows read from the
    dump as it streams (written nowhere: a validation needs no disk of its own)."""
    from_dump = manifest.get("measured_from") == FROM_DUMP
    # A second session of the step's, read-only, reading every table of the copy.
    measuring = Side(f"measuring database {database}", database=database, reads_checked=False)
    with ctx.side_session(measuring) as conn:
        measured = measure_connection(conn, manifest, checksums=not from_dump)
    if not from_dump:
        return measured
    wanted = checksummed(manifest, list(measured.tables))
    # Checksums made the way the manifest's were: older backups sum each row's sha256.
    method = manifest.get("checksum_method", ROW_SUM)
    argv = mysql_dump_argv(url, database, list(measured.counts))
    dump = stream_read(argv, server_env(url), ctx, lambda chunks: read_chunks(chunks, method))
    measured.checksums = {t: r.checksum for t, r in dump.tables.items() if t in wanted}
    return measured
