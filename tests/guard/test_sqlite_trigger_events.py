"""An SQLite trigger's event is read from its definition as SQLite reads it: words in
its comments, string literals and quoted names are not its event. Before, a comment
between DELETE and ON, or 'INSERT ON' in its WHEN clause, hid a DELETE trigger from the
purge's preview: the step ran unasked at medium risk, and the trigger deleted rows
that were to be kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.guard.sqlitetriggers import EVENTS, trigger_events
from aishell.guard.usercode import user_code
from aishell.guard.usercodeactions import write_actions
from aishell.guard.writereach import write_reach
from aishell.guard.writtentables import written
from tests.helpers import use_target

HIDDEN = {
    "a comment between its event and ON": (
        "CREATE TRIGGER zap AFTER DELETE/**/ON logs BEGIN "
        "DELETE FROM logs WHERE id = old.id + 50; END"
    ),
    "a literal that reads as another event": (
        "CREATE TRIGGER zap AFTER DELETE ON logs WHEN 'INSERT ON' IS NOT NULL BEGIN "
        "DELETE FROM logs WHERE id = old.id + 50; END"
    ),
    "both": (
        "CREATE TRIGGER zap AFTER delete -- no event here\n on logs "
        "WHEN 'x INSERT ON' IS NOT NULL BEGIN DELETE FROM logs WHERE id = old.id + 50; END"
    ),
    "a name that is a keyword": (
        'CREATE TRIGGER "begin" AFTER DELETE ON logs BEGIN '
        "DELETE FROM logs WHERE id = old.id + 50; END"
    ),
}


@pytest.mark.parametrize(
    ("sql", "events"),
    [
        (HIDDEN["a comment between its event and ON"], {"DELETE"}),
        (HIDDEN["a literal that reads as another event"], {"DELETE"}),
        (HIDDEN["both"], {"DELETE"}),
        (HIDDEN["a name that is a keyword"], {"DELETE"}),
        (
            'CREATE TRIGGER "insert" INSTEAD OF UPDATE OF "a b", c ON v BEGIN SELECT 1; END',
            {"UPDATE"},
        ),
        (
            "CREATE TEMP TRIGGER IF NOT EXISTS [delete] BEFORE INSERT ON t BEGIN SELECT 1; END",
            {"INSERT"},
        ),
        ("CREATE TRIGGER t1 AFTER /* INSERT */ UPDATE ON t BEGIN SELECT 'DELETE'; END", {"UPDATE"}),
        ("CREATE TRIGGER t1 AFTER 'oops", EVENTS),  # not readable: every event
        ("CREATE TRIGGER t1 ON t BEGIN SELECT 1; END", EVENTS),  # no event found: every event
    ],
)
def test_a_trigger_s_event_is_read_past_its_comments_and_literals(
    sql: str, events: set[str]
) -> None:
    assert trigger_events(sql) == frozenset(events)


@pytest.mark.parametrize("how", sorted(HIDDEN))
def test_a_purge_names_a_delete_trigger_however_it_is_written(
    home: Path, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "logs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, msg TEXT)")
        db.executemany(
            "INSERT INTO logs VALUES (?, ?, 'm')",
            [
                (i, "2020-01-01 00:00:00" if i <= 30 else "2099-01-01 00:00:00")
                for i in range(1, 101)
            ],
        )
        db.execute(HIDDEN[how])
    config = use_target(home, f"sqlite:///{path}")
    job = {"table": "logs", "date_column": "created_at", "retention_days": 30}
    steps = commands.plan_job(config, "log_cleanup", job).to_dict()["steps"]
    (purge,) = [s for s in steps if s["tool"] == "delete_old_records"]
    name = "begin" if how == "a name that is a keyword" else "zap"
    assert purge["risk_level"] == "high", purge
    assert purge["requires_approval"], purge
    # Named as what the DELETE fires, not only as code of the table's.
    assert [f for f in purge["estimate"].get("fires") or [] if name in f], purge


def test_a_temp_trigger_on_the_file_s_table_is_named_with_the_file_s_triggers(
    tmp_path: Path,
) -> None:
    """A TEMP trigger lives in the connection, not in the file's sqlite_master: one an
    earlier statement on a pooled connection made (a step's, a package's) runs on the
    file's table all the same. What was named runs."""
    path = tmp_path / "logs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, msg TEXT)")
        db.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
        db.executemany("INSERT INTO logs VALUES (?, 'm')", [(i,) for i in range(1, 11)])
        db.executemany("INSERT INTO kept VALUES (?)", [(i,) for i in range(1, 11)])
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.execute(
                text(
                    "CREATE TEMP TRIGGER zap AFTER DELETE ON main.logs BEGIN "
                    "DELETE FROM kept WHERE id = old.id; END"
                )
            )
            delete = "DELETE FROM logs WHERE id <= 3"
            said = user_code(conn, write_actions(written(delete, "sqlite")), (), {})
            assert said == [
                "trigger zap on logs (DELETE) runs its own statements, which may write "
                "(DELETE runs it)"
            ]
            reach = write_reach(conn, [delete])
            assert reach is not None and any("zap" in f for f in reach.fires), reach
            conn.execute(text(delete))
            assert conn.execute(text("SELECT count(*) FROM kept")).scalar_one() == 7
    finally:
        engine.dispose()
