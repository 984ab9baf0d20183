"""SQLite increments restore the file as it was when the increment was taken: views and
indexes made or dropped since the full backup, triggers, PRAGMA user_version and the
AUTOINCREMENT counters (sqlite_sequence), not only the changed tables' rows.

An increment is cut only when the schema is its parent's: otherwise the run takes the
whole file and says why (sqliteincrement.py); the AUTOINCREMENT counters travel with
every increment, and validation compares the restored schema with the source's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.policy.approvers import Prompting
from tests.helpers import use_target

YES = Prompting(ask=lambda request: "yes")


def _take(config: Any, kind: str) -> Any:
    done = commands.run_job(config, "backup", {"type": kind})
    assert done.status == "completed", done.error
    return done


def _restore_newest(config: Any, into: str) -> None:
    newest = commands.list_backups(config, "db")[0]
    done = commands.restore(config, newest["id"], into, approver=YES, create=True)
    assert done.status == "completed", done.error


_USER_TABLES = (
    "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
)


def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _sqlite_run(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _schema(path: Path) -> list[tuple[Any, ...]]:
    return _sqlite_rows(path, "SELECT type, name, sql FROM sqlite_schema ORDER BY type, name")


def test_sqlite_an_increment_brings_back_views_indexes_and_user_version(home, demo_db):
    fresh = home / "fresh.db"
    config = use_target(home, f"sqlite:///{demo_db}", fresh=f"sqlite:///{fresh}")
    _take(config, "full")
    _sqlite_run(
        demo_db,
        "CREATE VIEW v2 AS SELECT id FROM users",
        "CREATE INDEX i2 ON app_logs (level)",
        "PRAGMA user_version = 9",
        "UPDATE products SET price_cents = price_cents + 1 WHERE id = 1",
    )
    inc = _take(config, "incremental")
    # A view, an index and user_version are not a table's rows: taken whole, it holds
    # (and names) every table.
    assert inc.steps[1].output["taken_whole"], inc.steps[1].output
    tables = [name for (name,) in _sqlite_rows(demo_db, _USER_TABLES)]
    assert inc.steps[1].output["changed_tables"] == tables
    _restore_newest(config, "fresh")
    assert _schema(fresh) == _schema(demo_db)
    assert _sqlite_rows(fresh, "PRAGMA user_version") == [(9,)]


def test_sqlite_an_increment_brings_back_dropped_objects_triggers_and_autoincrement(home, demo_db):
    fresh = home / "fresh.db"
    _sqlite_run(
        demo_db,
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)",
        "INSERT INTO tickets (what) VALUES ('a'), ('b')",
        "CREATE INDEX gone ON users (id, email)",
        "CREATE VIEW gone_too AS SELECT 1",
    )
    config = use_target(home, f"sqlite:///{demo_db}", fresh=f"sqlite:///{fresh}")
    _take(config, "full")
    _sqlite_run(
        demo_db,
        "DROP INDEX gone",
        "DROP VIEW gone_too",
        "CREATE TRIGGER stamp AFTER INSERT ON orders BEGIN SELECT 1; END",
        # The rows come back as they were; the AUTOINCREMENT counter does not.
        "INSERT INTO tickets (what) VALUES ('c')",
        "DELETE FROM tickets WHERE what = 'c'",
        "UPDATE products SET price_cents = price_cents + 1 WHERE id = 1",
    )
    _take(config, "incremental")
    _restore_newest(config, "fresh")
    assert _schema(fresh) == _schema(demo_db)
    assert _sqlite_rows(fresh, "SELECT seq FROM sqlite_sequence WHERE name = 'tickets'") == [(3,)]
    assert _sqlite_rows(fresh, "SELECT count(*) FROM users") == _sqlite_rows(
        demo_db, "SELECT count(*) FROM users"
    )
