"""A SQLite increment whose schema is its parent's stays an increment and carries every
AUTOINCREMENT counter (sqlite_sequence moves on without any row changing); one whose
schema changed is taken as a full backup that says why; and validation fails a chain
whose restored schema is not the one the newest backup was taken with."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.policy.approvers import Prompting
from aishell.render.figures import step_figures
from tests.handlers.backup.test_sqlite_increment_schema import _sqlite_run
from tests.helpers import use_target

YES = Prompting(ask=lambda request: "yes")


def _take(config: Any, kind: str) -> Any:
    done = commands.run_job(config, "backup", {"type": kind})
    assert done.status == "completed", done.error
    return done


def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _with_counters(demo_db: Path) -> None:
    _sqlite_run(
        demo_db,
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)",
        "INSERT INTO tickets (what) VALUES ('a'), ('b')",
        "INSERT INTO notes (what) VALUES ('a')",
    )


def test_sqlite_an_increment_of_the_same_schema_carries_every_counter(home, demo_db):
    fresh = home / "fresh.db"
    _with_counters(demo_db)
    config = use_target(home, f"sqlite:///{demo_db}", fresh=f"sqlite:///{fresh}")
    _take(config, "full")
    _sqlite_run(
        demo_db,
        # Rows as they were, counters moved on: an unchanged table's and a changed one's.
        "INSERT INTO tickets (what) VALUES ('c'), ('d')",
        "DELETE FROM tickets WHERE what IN ('c', 'd')",
        "INSERT INTO notes (what) VALUES ('b'), ('c')",
        "DELETE FROM notes WHERE what = 'c'",
        "UPDATE products SET price_cents = price_cents + 1 WHERE id = 1",
    )
    inc = _take(config, "incremental")
    assert inc.steps[1].output["changed_tables"] == ["notes", "products"]
    newest = commands.list_backups(config, "db")[0]
    assert newest["kind"] == "incremental" and "taken_whole" not in newest["manifest"]
    done = commands.restore(config, newest["id"], "fresh", approver=YES, create=True)
    assert done.status == "completed", done.error
    sequences = "SELECT name, seq FROM sqlite_sequence ORDER BY name"
    assert _sqlite_rows(fresh, sequences) == [("notes", 3), ("tickets", 4)]
    assert _sqlite_rows(fresh, "SELECT what FROM notes ORDER BY id") == [("a",), ("b",)]


def test_sqlite_a_changed_schema_is_taken_whole_and_says_why(home, demo_db):
    config = use_target(home, f"sqlite:///{demo_db}")
    _take(config, "full")
    _sqlite_run(demo_db, "CREATE TRIGGER stamp AFTER INSERT ON orders BEGIN SELECT 1; END")
    inc = _take(config, "incremental")
    newest = commands.list_backups(config, "db")[0]
    assert newest["kind"] == "full" and newest["manifest"]["parent"] is None
    # Taken whole, it holds every table, and says so: none changed, all of them taken.
    out = inc.steps[1].output
    assert out["changed_tables"] == list(newest["manifest"]["tables"])
    assert out["taken_whole"] == newest["manifest"]["taken_whole"]
    shown = step_figures(out)
    assert "taken as a full backup" in shown and "tables changed since" not in shown
    assert sorted(out["changed_tables"]) == [
        "app_logs",
        "orders",
        "products",
        "users",
    ]
    assert "the schema changed since its parent" in newest["manifest"]["taken_whole"]


def test_sqlite_validation_fails_a_chain_that_misses_a_schema_change(home, demo_db, monkeypatch):
    from aishell.handlers.backup import sqliteincrement

    config = use_target(home, f"sqlite:///{demo_db}")
    _take(config, "full")
    _sqlite_run(
        demo_db,
        "CREATE INDEX i2 ON app_logs (level)",
        "PRAGMA user_version = 9",
        "UPDATE products SET price_cents = price_cents + 1 WHERE id = 1",
    )
    # An increment cut as if nothing but rows had changed.
    monkeypatch.setattr(sqliteincrement, "taken_whole_because", lambda *args: None)
    done = commands.run_job(config, "backup", {"type": "incremental"})
    assert done.status == "failed"
    assert "the restored schema differs from the one" in done.steps[2].error


def test_sqlite_an_increment_taken_whole_names_every_table_not_only_the_changed(home, demo_db):
    """A table changed and the schema with it: the backup holds every table, not the one."""
    config = use_target(home, f"sqlite:///{demo_db}")
    _take(config, "full")
    _sqlite_run(
        demo_db,
        "UPDATE users SET name = 'changed' WHERE id = 1",
        "CREATE INDEX users_name ON users (name)",
    )
    _sqlite_run(demo_db, "PRAGMA user_version = 7")
    inc = _take(config, "incremental")
    newest = commands.list_backups(config, "db")[0]
    assert "PRAGMA user_version" in newest["manifest"]["taken_whole"]
    assert sorted(inc.steps[1].output["changed_tables"]) == sorted(newest["manifest"]["tables"])
    assert len(newest["manifest"]["tables"]) == 4
