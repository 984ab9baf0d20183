"""A SQLite purge whose DELETE reaches, beyond its own table, a write that needs the
application's own function: a DELETE trigger inserting into audit, whose own INSERT
trigger calls norm(); a child whose foreign key cascades the DELETE (or sets NULL) where
the session acts on foreign keys, and whose trigger calls norm(). Refused before
anything runs, naming the table reached and the code; nothing is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from aishell import commands
from aishell.errors import TargetError
from aishell.handlers.purge.appreach import refuse_reached_app_code
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.handlers.maintenance.test_sqlite_app_code import app_database, application, keep_recent
from tests.helpers import query, use_target

PEOPLE = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT)"
AUDIT = (
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE seen (n TEXT)",
    "CREATE TRIGGER people_audit AFTER DELETE ON people "
    "BEGIN INSERT INTO audit (name) VALUES (old.name); END",
)
AUDIT_NORM = (
    "CREATE TRIGGER audit_norm AFTER INSERT ON audit "
    "BEGIN INSERT INTO seen VALUES (norm(new.name)); END"
)
JOB = {"table": "people", "date_column": "created", "retention_days": 30}


def test_a_trigger_writing_a_table_whose_trigger_needs_app_code(home: Path) -> None:
    db = app_database(home / "app.db", PEOPLE, *AUDIT, AUDIT_NORM)
    config = use_target(home, f"sqlite:///{db}")
    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", JOB, approver=PreApproved())
    message = str(refused.value)
    assert message.startswith(
        "Cannot purge people: its DELETE reaches audit through a trigger's body, and an "
        "INSERT into audit needs the application's own code"
    ), message
    assert "its trigger audit_norm calls norm()" in message
    assert query(db, "SELECT count(*) FROM people") == [(300,)]


def test_a_saved_plan_applied_after_such_a_trigger_is_added(home: Path) -> None:
    """Refused again when the step starts: the trigger came after the plan was made."""
    db = app_database(home / "app.db", PEOPLE, *AUDIT)
    config = use_target(home, f"sqlite:///{db}")
    plan = commands.make_plan(config, "log_cleanup", JOB)
    conn = application(db)
    conn.executescript(AUDIT_NORM)
    conn.execute("UPDATE people SET created = datetime('now') WHERE id > 100")
    conn.commit()
    conn.close()
    result = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.HIGH))
    assert result.status != "completed"
    error = next(s.error for s in result.steps if s.error)
    assert "its DELETE reaches audit through a trigger's body" in (error or ""), error
    assert query(db, "SELECT count(*) FROM people") == [(300,)]
    assert query(db, "SELECT count(*) FROM audit") == [(0,)]


def test_a_trigger_writing_a_table_that_needs_no_app_code_is_purged(home: Path) -> None:
    db = app_database(
        home / "app.db",
        PEOPLE,
        *AUDIT,
        "CREATE TRIGGER audit_upper AFTER INSERT ON audit "
        "BEGIN INSERT INTO seen VALUES (upper(new.name)); END",
    )
    keep_recent(db)
    config = use_target(home, f"sqlite:///{db}")
    result = commands.run_job(
        config, "log_cleanup", JOB, approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    assert result.status == "completed", result.error
    assert query(db, "SELECT count(*) FROM people") == [(200,)]
    assert query(db, "SELECT count(*) FROM seen") == [(100,)]


CHILDREN = {
    "cascade": (
        "CREATE TABLE child (id INTEGER PRIMARY KEY, "
        "person INTEGER REFERENCES people (id) ON DELETE CASCADE, note TEXT)",
        "CREATE TRIGGER child_gone AFTER DELETE ON child "
        "BEGIN INSERT INTO seen VALUES (norm(old.note)); END",
        "a DELETE from child",
    ),
    "set null": (
        "CREATE TABLE child (id INTEGER PRIMARY KEY, "
        "person INTEGER REFERENCES people (id) ON DELETE SET NULL, note TEXT)",
        "CREATE TRIGGER child_orphaned AFTER UPDATE ON child "
        "BEGIN INSERT INTO seen VALUES (norm(old.note)); END",
        "an UPDATE of child",
    ),
}


@pytest.mark.parametrize("case", list(CHILDREN))
def test_a_foreign_keys_action_reaching_app_code(home: Path, case: str) -> None:
    """Where the session acts on foreign keys (aishell's SQLite sessions do not), the
    DELETE cascades into child, whose trigger calls norm(): the DELETE would fail."""
    key, trigger, doing = CHILDREN[case]
    db = app_database(home / "app.db", PEOPLE, "CREATE TABLE seen (n TEXT)", key, trigger)
    app = application(db)
    app.execute("INSERT INTO child (person, note) SELECT id, name FROM people")
    app.commit()
    app.close()
    engine = create_engine(f"sqlite:///{db}")
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA foreign_keys = ON"))
    with engine.connect() as conn:
        # The session aishell would purge in: the DELETE needs norm().
        with pytest.raises(Exception, match="no such function: norm"):
            conn.execute(text("DELETE FROM people WHERE id = 1"))
        conn.rollback()
        with pytest.raises(TargetError) as refused:
            refuse_reached_app_code(conn, "people")
    engine.dispose()
    message = str(refused.value)
    assert message.startswith(
        f"Cannot purge people: its DELETE reaches child through a foreign key's action, "
        f"and {doing} needs the application's own code"
    ), message
    assert "calls norm()" in message
