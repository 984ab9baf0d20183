"""A SQLite purge needing the application's own functions, collations or modules is
refused, naming the table and why, before anything is deleted: when it is planned, and
again when a saved plan is applied after the table (or its archive table) gained a
trigger or index calling them; never a raw "no such function" part way through."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from tests.helpers import use_target

OLD, NEW = "2000-01-01 00:00:00", "2999-01-01 00:00:00"
CANNOT = "Cannot purge events: a DELETE from it needs the application's own code"


def application(path: Path) -> sqlite3.Connection:
    """A connection as the application opens one: its own app_f() and app_coll."""
    conn = sqlite3.connect(path)
    conn.create_function("app_f", 1, lambda v: v, deterministic=True)
    conn.create_collation("app_coll", lambda a, b: (a > b) - (a < b))
    return conn


def _events(path: Path, *extra: str) -> None:
    """`events`: 20 old rows (ids 1-20) among 60, and `events_archive` of its shape."""
    conn = application(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL, note TEXT)")
    conn.execute(
        "CREATE TABLE events_archive (id INTEGER PRIMARY KEY, at TEXT NOT NULL, note TEXT)"
    )
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?)",
        [(i, OLD if i <= 20 else NEW, f"n{i}") for i in range(1, 61)],
    )
    for sql in extra:
        conn.execute(sql)
    conn.commit()
    conn.close()


def _app_adds(path: Path, sql: str) -> None:
    conn = application(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


def _rows(path: Path, table: str = "events") -> int:
    conn = application(path)  # counting may read an index sorted by app_coll
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def _config(home: Path, path: Path) -> Config:
    return use_target(home, f"sqlite:///{path}")


def _plan_out(home: Path, out: Path, *options: str) -> None:
    args = ["plan", "log-cleanup", "--table", "events", "--date-column", "at"]
    args += ["--retention-days", "30", "--batch-size", "5", "--max-batch-size", "5", *options]
    saved = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert saved.exit_code == 0, saved.output


def test_a_saved_plan_applied_after_a_delete_trigger_calling_app_code_is_refused(home):
    """The trigger's WHEN lets the first batches by: without the check when the step
    starts, ids 1-10 would go and the next batch fail on "no such function"."""
    path = home / "events.db"
    _events(path)
    _config(home, path)
    out = home / "purge.json"
    _plan_out(home, out)
    _app_adds(
        path,
        "CREATE TRIGGER events_gone AFTER DELETE ON events WHEN OLD.id > 10 "
        "BEGIN SELECT app_f(OLD.id); END",
    )
    applied = CliRunner().invoke(cli, ["apply", str(out), "--yes"])
    assert applied.exit_code != 0
    assert CANNOT in applied.output
    assert "its trigger events_gone calls app_f(), a function the application" in applied.output
    assert "no such" not in applied.output
    assert _rows(path) == 60


@pytest.mark.parametrize(
    "index",
    [
        "CREATE INDEX events_f ON events (app_f(note))",
        "CREATE INDEX events_n ON events (note COLLATE app_coll)",
    ],
)
def test_a_saved_plan_applied_after_an_app_code_index_is_refused(index, home):
    """An index added since the plan changes the target the plan was made on."""
    path = home / "events.db"
    _events(path)
    _config(home, path)
    out = home / "purge.json"
    _plan_out(home, out)
    _app_adds(path, index)
    applied = CliRunner().invoke(cli, ["apply", str(out), "--yes"])
    assert applied.exit_code != 0
    assert "indexes of 'events' changed" in applied.output
    assert "no such" not in applied.output
    assert _rows(path) == 60


ARCHIVE_SAYS = (
    "Cannot purge events into archive table events_archive: an INSERT into it needs the "
    "application's own code"
)


def test_an_archive_table_using_app_code_is_refused_when_planned(home):
    path = home / "events.db"
    _events(path, "CREATE INDEX archive_f ON events_archive (app_f(note))")
    config = _config(home, path)
    job = {"table": "events", "date_column": "at", "retention_days": 30}
    with pytest.raises(Exception) as refused:
        commands.make_plan(config, "log_cleanup", {**job, "archive_to": "table:events_archive"})
    assert ARCHIVE_SAYS in str(refused.value)
    assert "its index archive_f calls app_f()" in str(refused.value)


def test_an_archive_table_given_app_code_after_the_plan_is_refused_whole(home):
    path = home / "events.db"
    _events(path)
    _config(home, path)
    out = home / "purge.json"
    _plan_out(home, out, "--archive-to", "table:events_archive")
    _app_adds(
        path,
        "CREATE TRIGGER archived AFTER INSERT ON events_archive WHEN NEW.id > 10 "
        "BEGIN SELECT app_f(NEW.id); END",
    )
    applied = CliRunner().invoke(cli, ["apply", str(out), "--yes"])
    assert applied.exit_code != 0
    assert ARCHIVE_SAYS in applied.output
    assert "its trigger archived calls app_f()" in applied.output
    assert _rows(path) == 60
    assert _rows(path, "events_archive") == 0


def with_app_module(path: Path) -> None:
    """A virtual table of a module only the application registers (a sqlite3 module
    cannot be made from Python: its CREATE VIRTUAL TABLE is written into the schema as
    the application's connection would have stored it)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "INSERT INTO sqlite_schema (type, name, tbl_name, rootpage, sql) VALUES "
        "('table', 'vt', 'vt', 0, 'CREATE VIRTUAL TABLE vt USING app_module(at, note)')"
    )
    conn.commit()
    conn.close()


def test_a_virtual_table_of_an_app_module_is_refused_or_left_out(home):
    path = home / "events.db"
    _events(path)
    with_app_module(path)
    config = _config(home, path)
    job = {"table": "vt", "date_column": "at", "retention_days": 30}
    with pytest.raises(Exception) as refused:
        commands.make_plan(config, "log_cleanup", job)
    assert str(refused.value) == (
        "Cannot purge vt: a DELETE from it needs the application's own code, which aishell "
        "does not have: it is a virtual table of module app_module, which the application "
        "defines, not SQLite"
    )
    # Maintenance's health step goes on with every other table, saying why vt is not
    # counted; the size limit it cannot count vt against holds the run for a person.
    result = commands.run_job(config, "maintenance", {})
    assert result.steps[0].status == "succeeded", result.steps[0].error
    assert result.status in ("completed", "waiting_approval")
    assert all("'vt'" in s.error or "waits for" in s.error for s in result.steps if s.error)
    health = result.steps[0].output
    assert {
        "table": "vt",
        "reason": "vt: rows not counted: it is a virtual table of module app_module, "
        "which the application defines, not SQLite",
    } in health["skipped_tables"]
    # A purge of another table of the file is not held up by it.
    other = commands.run_job(config, "log_cleanup", {**job, "table": "events"})
    assert other.status == "completed", [s.error for s in other.steps]
    assert _rows(path) == 40
