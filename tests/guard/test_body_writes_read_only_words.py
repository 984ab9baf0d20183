"""Words of a trigger's body that write nothing are no written table: a table joined in
a multi-table UPDATE whose SET assigns none of its columns, SELECT ... FOR UPDATE (INTO,
OF), a message the body raises, a comment (MariaDB's `#` too), text a plain INSERT
stores (a value of its VALUES list). A false written table
blocks a legitimate purge (its triggers and code are asked for); the real writes beside
them are still found: UPDATE ... FROM, MariaDB's multi-table UPDATE and DELETE, INSERT
... SELECT, MERGE, a writable CTE, dynamic SQL, MariaDB's executable comments."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from aishell import commands
from aishell.guard.bodywrites import written_by_body
from aishell.guard.writereach import Reach, write_reach
from aishell.guard.writtentables import Write
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.guard.test_guard import execute, scratch_database
from tests.handlers.maintenance.test_sqlite_app_code import app_database, keep_recent
from tests.helpers import query, use_target

TABLES = ("audit", "ledger", "kept", "gone", "copied", "merged", "dyn", "other")
BODIES = {
    "postgresql": (
        "DECLARE v integer; BEGIN "
        "-- DELETE FROM audit WHERE id = OLD.id\n"
        "SELECT id INTO v FROM ledger WHERE id = OLD.id FOR UPDATE OF ledger; "
        "SELECT id FROM ledger WHERE id = OLD.id FOR UPDATE INTO v; "
        "RAISE NOTICE 'DELETE FROM audit for %', OLD.id; "
        "IF v < 0 THEN RAISE EXCEPTION USING MESSAGE = 'cannot DELETE FROM audit', "
        "HINT = 'UPDATE audit first'; END IF; "
        "UPDATE kept SET id = ledger.id FROM ledger WHERE kept.id = ledger.id; "
        "WITH d AS (DELETE FROM gone WHERE id = OLD.id RETURNING id) "
        "INSERT INTO copied SELECT id FROM d; "
        "MERGE INTO merged m USING ledger l ON m.id = l.id "
        "WHEN MATCHED THEN UPDATE SET id = l.id; "
        "EXECUTE 'DELETE FROM dyn WHERE id = $1' USING OLD.id; "
        "INSERT INTO journal VALUES (OLD.id, 'DELETE FROM audit done'); "
        "RETURN OLD; END"
    ),
    "mysql": (
        "BEGIN DECLARE v INT; "
        "# DELETE FROM audit WHERE id = OLD.id\n"
        "SELECT id FROM ledger WHERE id = OLD.id FOR UPDATE INTO v; "
        "IF v < 0 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'cannot DELETE FROM audit'; "
        "END IF; "
        "UPDATE kept JOIN ledger ON ledger.id = kept.id SET kept.id = ledger.id; "
        "UPDATE ledger l JOIN other o ON o.id = l.id SET o.id = l.id; "
        "DELETE gone, dyn FROM gone JOIN dyn ON gone.id = dyn.id WHERE gone.id = OLD.id; "
        "INSERT INTO copied SELECT id FROM ledger WHERE id = OLD.id; "
        "INSERT INTO journal VALUES (OLD.id, 'DELETE FROM audit'), (OLD.id, 'TRUNCATE audit'); "
        "END"
    ),
    "sqlite": (
        "BEGIN "
        "SELECT RAISE(ABORT, 'cannot DELETE FROM audit') WHERE OLD.id < 0; "
        "-- DELETE FROM audit\n"
        "INSERT INTO copied SELECT id FROM ledger WHERE id = OLD.id; "
        "UPDATE kept SET id = OLD.id WHERE id = OLD.id; "
        "DELETE FROM gone WHERE id = OLD.id; "
        "INSERT INTO journal (id, note) VALUES (OLD.id, 'UPDATE audit SET id = 0'); "
        "END"
    ),
}
WRITTEN = {
    "postgresql": {
        ("UPDATE", "kept"),
        ("DELETE", "gone"),
        ("INSERT", "copied"),
        ("INSERT", "merged"),
        ("UPDATE", "merged"),
        ("DELETE", "merged"),
        ("DELETE", "dyn"),
        ("INSERT", "journal"),
    },
    "mysql": {
        ("UPDATE", "kept"),
        ("UPDATE", "other"),
        ("DELETE", "gone"),
        ("DELETE", "dyn"),
        ("INSERT", "copied"),
        ("INSERT", "journal"),
    },
    "sqlite": {
        ("INSERT", "copied"),
        ("UPDATE", "kept"),
        ("DELETE", "gone"),
        ("INSERT", "journal"),
    },
}


def _trigger(dialect: str) -> tuple[str, ...]:
    body = BODIES[dialect]
    if dialect == "postgresql":
        return (
            f"CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS $${body}$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone()",
        )
    return (f"CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW {body}",)


def _reach_of_a_delete(tmp_path: Path, dialect: str, *made: str) -> Reach:
    """What a DELETE of a row of `logs` reaches, in a scratch database holding `logs`
    and what `made` makes."""
    with scratch_database(dialect, tmp_path) as url:
        execute(url, "CREATE TABLE logs (id integer PRIMARY KEY)", *made)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                reach = write_reach(conn, ["DELETE FROM logs WHERE id = 1"])
        finally:
            engine.dispose()
    assert reach is not None
    return reach


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_what_a_trigger_reads_is_not_written(tmp_path: Path, dialect: str) -> None:
    reach = _reach_of_a_delete(
        tmp_path,
        dialect,
        *(f"CREATE TABLE {t} (id integer)" for t in TABLES),
        "CREATE TABLE journal (id integer, note varchar(100))",
        *_trigger(dialect),
    )
    found = {(w.event, w.table) for w in reach.by_bodies}
    assert found == WRITTEN[dialect]


W = Write
READ_ONLY = [
    ("UPDATE a JOIN b ON b.x = a.y SET a.z = 1", "mysql", [W("UPDATE", None, "a")]),
    ("UPDATE a x JOIN b y ON y.x = x.y SET y.z = 1", "mysql", [W("UPDATE", None, "b")]),
    ("UPDATE a, b SET a.z = b.z WHERE a.id = b.id", "mysql", [W("UPDATE", None, "a")]),
    (
        "UPDATE d.a JOIN d.b AS bb ON bb.x = a.y SET a.z = 1, bb.q = f(1, 2)",
        "mysql",
        [W("UPDATE", "d", "a"), W("UPDATE", "d", "b")],
    ),
    # A SET whose column names no table: either may be the one written.
    (
        "UPDATE a LEFT JOIN b ON b.x = a.y SET z = 1",
        "mysql",
        [W("UPDATE", None, "a"), W("UPDATE", None, "b")],
    ),
    ("SELECT x INTO v FROM t FOR UPDATE OF t, u", "postgresql", []),
    ("RAISE NOTICE 'DELETE FROM audit %', 1", "postgresql", []),
    ("RAISE 'TRUNCATE audit'", "postgresql", []),
    # A literal passed to a call may be run: it is read.
    (
        "RAISE NOTICE '%', run_it('DELETE FROM audit')",
        "postgresql",
        [W("DELETE", None, "audit")],
    ),
    ("message := 'DELETE FROM audit'; EXECUTE message", "postgresql", [W("DELETE", None, "audit")]),
    ("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'DELETE FROM audit'", "mysql", []),
    ("SET @s = 'DELETE FROM audit'; PREPARE st FROM @s", "mysql", [W("DELETE", None, "audit")]),
    ("# UPDATE audit SET x = 1\nSELECT 1", "mysql", []),
    ("/*!50000 DELETE FROM audit */ SELECT 1", "mysql", [W("DELETE", None, "audit")]),
    ("/*M! UPDATE audit SET x = 1 */ SELECT 1", "mysql", [W("UPDATE", None, "audit")]),
    ("SELECT RAISE(FAIL, 'DELETE FROM audit')", "sqlite", []),
    ("ALTER TABLE c ADD FOREIGN KEY (p) REFERENCES p ON UPDATE CASCADE", "postgresql", []),
    # Text a plain INSERT stores is data; anything that may run it is read.
    (
        "INSERT INTO j (a, b) VALUES (1, f('x', (2))), ((3), 'DELETE FROM audit'), (4, 'y')",
        "postgresql",
        [W("INSERT", None, "j")],
    ),
    (
        'INSERT INTO "s"."j" AS l (a) VALUES (\'TRUNCATE audit\')',
        "postgresql",
        [W("INSERT", "s", "j")],
    ),
    (
        "REPLACE LOW_PRIORITY INTO `j` VALUE ('DELETE FROM audit')",
        "mysql",
        [W("INSERT", None, "j"), W("DELETE", None, "j")],
    ),
    (
        "INSERT INTO j VALUES (run_it('DELETE FROM audit'))",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "SELECT run_it(x) FROM (VALUES ('DELETE FROM audit')) v(x)",
        "postgresql",
        [W("DELETE", None, "audit")],
    ),
    (
        "INSERT INTO j VALUES ('DELETE FROM audit') RETURNING run_it(c)",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "INSERT INTO j VALUES ('DELETE FROM audit') ON DUPLICATE KEY UPDATE c = run_it(VALUES(c))",
        "mysql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j"), W("UPDATE", None, "j")],
    ),
    (
        "INSERT OR IGNORE INTO main.j AS x (a) VALUES ('DELETE FROM audit')",
        "sqlite",
        [W("INSERT", "main", "j")],
    ),
    # A query before the VALUES: read, whatever its rows are.
    (
        "INSERT INTO j SELECT run_it(x) FROM y UNION VALUES ('DELETE FROM audit')",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "WITH a AS (INSERT INTO j VALUES ('DELETE FROM audit') RETURNING c) "
        "SELECT run_it(c) FROM a",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "INSERT INTO j WITH c AS (SELECT 1) VALUES ('DELETE FROM audit')",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    # Rows that are no rows of a plain INSERT: read.
    (
        "INSERT INTO j VALUES ('a') ('DELETE FROM audit')",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "INSERT INTO j VALUES ('DELETE FROM audit'), (1; SELECT 2)",
        "postgresql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "INSERT INTO j VALUES ('DELETE FROM audit'), ('x'",
        "mysql",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    (
        "INSERT INTO j VALUES ('DELETE FROM audit' || x)",
        "sqlite",
        [W("DELETE", None, "audit"), W("INSERT", None, "j")],
    ),
    # A table with its partitions, and OVERRIDING ... VALUE: still a plain INSERT.
    (
        "INSERT IGNORE INTO d.j PARTITION (p0, p1) (a) VALUES ('DELETE FROM audit'), ('x');",
        "mysql",
        [W("INSERT", "d", "j")],
    ),
    (
        "INSERT INTO j (a) OVERRIDING SYSTEM VALUE VALUES ('TRUNCATE audit')",
        "postgresql",
        [W("INSERT", None, "j")],
    ),
]


@pytest.mark.parametrize(("body", "dialect", "expected"), READ_ONLY)
def test_read_only_words(body: str, dialect: str, expected: list[Write]) -> None:
    assert list(dict.fromkeys(written_by_body(body, dialect))) == expected


def test_a_message_naming_a_table_does_not_block_a_purge(home: Path) -> None:
    """A trigger on people whose message says 'cannot delete from audit' writes nothing
    to audit: its purge is not refused for the code audit's DELETE trigger needs."""
    db = app_database(
        home / "app.db",
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT)",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TRIGGER people_guard BEFORE DELETE ON people "
        "BEGIN SELECT RAISE(ABORT, 'cannot delete from audit') WHERE OLD.id < 0; END",
        "CREATE TRIGGER audit_gone AFTER DELETE ON audit BEGIN SELECT norm(old.name); END",
    )
    keep_recent(db)
    config = use_target(home, f"sqlite:///{db}")
    job = {"table": "people", "date_column": "created", "retention_days": 30}
    result = commands.run_job(
        config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    assert result.status == "completed", result.error
    assert query(db, "SELECT count(*) FROM people") == [(200,)]


QUEUE = {
    "postgresql": (
        "CREATE FUNCTION run_queued() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN EXECUTE NEW.cmd; RETURN NEW; END$$",
        "CREATE TRIGGER run_queued AFTER INSERT ON queue FOR EACH ROW "
        "EXECUTE FUNCTION run_queued()",
        "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO queue VALUES ('DELETE FROM audit'); RETURN OLD; END$$",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW EXECUTE FUNCTION logs_gone()",
    ),
    "mysql": (
        "CREATE TRIGGER run_queued AFTER INSERT ON queue FOR EACH ROW SET @last = NEW.cmd",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
        "INSERT INTO queue VALUES ('DELETE FROM audit')",
    ),
    "sqlite": (
        "CREATE TRIGGER run_queued AFTER INSERT ON queue BEGIN SELECT NEW.cmd; END",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs "
        "BEGIN INSERT INTO queue VALUES ('DELETE FROM audit'); END",
    ),
}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_text_a_body_stores_is_no_write_but_what_its_table_runs_is_named(
    tmp_path: Path, dialect: str
) -> None:
    """A trigger that stores a statement's text in a queue writes the queue, not the
    table the text names; the queue's own trigger, which could run the text, is named
    among what the write sets off (and so asks for a person's yes)."""
    reach = _reach_of_a_delete(
        tmp_path,
        dialect,
        "CREATE TABLE audit (id integer)",
        "CREATE TABLE queue (cmd varchar(200))",
        *QUEUE[dialect],
    )
    assert {(w.event, w.table) for w in reach.by_bodies} == {("INSERT", "queue")}
    assert any("inserting into queue" in f and "run_queued" in f for f in reach.fires), reach.fires
