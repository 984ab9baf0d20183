"""What a SQLite increment must hold for its chain to restore the file as it was when it
was taken, not only the rows of the tables that changed.

An increment's file holds the changed tables, each with its indexes and triggers, which
its loading recreates; a dropped table goes with its own. Everything else of the schema
must be the parent's: every manifest records each table's objects (and each view) by
the sha256 of their SQL, and the header's PRAGMA user_version and application_id; a
view, an index or trigger of an unchanged table, a table's definition or the header that
differs from the parent's, or a parent that recorded none, makes the run take the whole
file instead, as a full backup that says why (the manifest's `taken_whole`, as on
PostgreSQL: pgincrement.py). An AUTOINCREMENT counter moves on without any row
changing: the increment keeps the whole sqlite_sequence, which its loading puts in
place of the restored one. Validation compares the restored copy's schema with the one
the newest backup of the chain was taken with (the whole schema's sha256).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

from aishell.handlers.backup.manifest import Chain
from aishell.handlers.backup.pgincrement import SCHEMA_SHA256, TAKEN_WHOLE
from aishell.sqltext import quote_plain_identifier
from aishell.tool.context import ToolContext

# Read as bytes: SQLite keeps names and SQL that are not UTF-8 as they were given.
_SCHEMA = "SELECT type, name, tbl_name, sql FROM main.sqlite_schema ORDER BY type, name"
_HEADER = ("user_version", "application_id")
_HAS_SEQUENCES = (
    "SELECT 1 FROM {db}.sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'"
)


# The manifest's record of the schema: each table's objects (the table, its indexes and
# triggers; a view is its own) by the sha256 of their SQL, and the header's pragmas.
SCHEMA_OBJECTS = "schema_objects"
SCHEMA_HEADER = "schema_header"


def _schema_rows(conn: sqlite3.Connection) -> tuple[list[tuple[bytes, ...]], list[int]]:
    before, conn.text_factory = conn.text_factory, bytes
    try:
        objects = conn.execute(_SCHEMA).fetchall()
        header = [conn.execute(f"PRAGMA main.{pragma}").fetchone()[0] for pragma in _HEADER]
    finally:
        conn.text_factory = before
    return objects, header


def schema_sha256(conn: sqlite3.Connection) -> str:
    """The sha256 of the main database's schema: each object of sqlite_schema with its
    SQL (not its root page, which a restore moves), and the header's user_version and
    application_id."""
    return hashlib.sha256(repr(_schema_rows(conn)).encode()).hexdigest()


def recorded(conn: sqlite3.Connection) -> dict[str, Any]:
    """What every SQLite manifest records of the schema, for the increments after it to
    compare and validation to check: the whole schema's sha256, each table's objects'."""
    objects, header = _schema_rows(conn)
    groups: dict[str, list[tuple[bytes, ...]]] = {}
    for kind, name, table, sql in objects:
        # A name that is not UTF-8 is kept apart from every other (JSON carries it).
        groups.setdefault(table.decode("utf-8", "surrogateescape"), []).append((kind, name, sql))
    return {
        SCHEMA_SHA256: hashlib.sha256(repr((objects, header)).encode()).hexdigest(),
        SCHEMA_OBJECTS: {
            table: hashlib.sha256(repr(rows).encode()).hexdigest() for table, rows in groups.items()
        },
        SCHEMA_HEADER: header,
    }


def taken_whole_because(
    parent: dict[str, Any], schema: dict[str, Any], changed: list[str], dropped: list[str]
) -> str | None:
    """Why the increment is taken as a whole backup; None when an increment holds it all.
    A changed table's objects are recreated from the increment and a dropped table's are
    dropped with it; anything else of the schema must be the parent's."""
    before = parent.get(SCHEMA_OBJECTS)
    if not isinstance(before, dict) or SCHEMA_HEADER not in parent:
        return f"its parent {Path(parent['path']).name} recorded no schema to compare"
    if parent[SCHEMA_HEADER] != schema[SCHEMA_HEADER]:
        return "PRAGMA user_version or application_id changed since its parent"
    now = schema[SCHEMA_OBJECTS]
    carried = set(changed) | set(dropped)
    differ = sorted(
        t for t in set(before) | set(now) if t not in carried and before.get(t) != now.get(t)
    )
    if differ:
        return (
            "the schema changed since its parent (the indexes, triggers or definition of "
            f"{', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}, or a view)"
        )
    return None


def taken_whole(
    parent: dict[str, Any],
    schema: dict[str, Any],
    changed: list[str],
    dropped: list[str],
    ctx: ToolContext,
    because: str | None = None,
) -> dict[str, Any] | None:
    """What the manifest of an increment taken as a full backup says instead of naming
    its parent (`because`, or the schema's reason), the event recorded; None when the
    increment can be cut."""
    why = because or taken_whole_because(parent, schema, changed, dropped)
    if why is None:
        return None
    said = f"taken as a full backup, not an increment of {Path(parent['path']).name}: {why}"
    ctx.record_event("backup_taken_whole", {"why": said})
    whole = {"kind": "full", "parent": None, "changed": None, "dropped": None, "method": None}
    return whole | {TAKEN_WHOLE: said}


def _has_sequences(conn: sqlite3.Connection, db: str) -> bool:
    return conn.execute(_HAS_SEQUENCES.format(db=db)).fetchone() is not None


def cut(copy: sqlite3.Connection, tables: list[str], changed: list[str]) -> None:
    """The copy cut to an increment: the unchanged tables dropped (their indexes and
    triggers with them), every AUTOINCREMENT counter kept as it was."""
    sequences = (
        copy.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
        if _has_sequences(copy, "main")
        else []
    )
    for table in tables:
        if table not in changed:
            copy.execute(f"DROP TABLE {quote_plain_identifier(table)}")
    if sequences:
        # A dropped table's counter goes with it: put back, the whole table is carried.
        copy.execute("DELETE FROM sqlite_sequence")
        copy.executemany("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", sequences)
    copy.commit()
    copy.execute("VACUUM")


def carry_sequences(conn: sqlite3.Connection, manifest: dict[str, Any]) -> None:
    """The attached increment `inc`'s AUTOINCREMENT counters in place of the restored
    ones. An increment taken before the schema was recorded kept only its changed
    tables' counters: the restored ones are left as they are."""
    if not manifest.get(SCHEMA_SHA256):
        return
    if _has_sequences(conn, "inc") and _has_sequences(conn, "main"):
        conn.execute("DELETE FROM main.sqlite_sequence")
        conn.execute(
            "INSERT INTO main.sqlite_sequence (name, seq) SELECT name, seq FROM inc.sqlite_sequence"
        )


def schema_problems(copy: sqlite3.Connection, chain: Chain) -> list[str]:
    """The restored copy's schema against the one the chain's newest backup was taken
    with; a chain of increments whose newest manifest records none cannot be proven."""
    newest, manifest = chain[-1]
    recorded = manifest.get(SCHEMA_SHA256)
    if recorded is None:
        if len(chain) == 1:
            return []  # a full backup is the file itself
        return [
            f"the manifest of {newest.name} does not record the schema it was taken with "
            "(taken before aishell compared it), so the chain's schema cannot be proven; "
            "take a full backup"
        ]
    if schema_sha256(copy) != recorded:
        return [
            f"the restored schema differs from the one {newest.name} was taken with "
            "(tables, indexes, views, triggers, PRAGMA user_version or application_id): "
            "the chain does not restore the database as it was; take a full backup"
        ]
    return []
