"""A purge is judged with what its batches set off beyond their own rows (triggers on
the table and on the archive table, and the routines they call; foreign keys of other
tables that act when its rows go, and what the tables they write run in turn; on
PostgreSQL inheriting tables and partitions, rules, and the archive table's defaults
and indexes), and every batch holds to that: a trigger, a routine a trigger calls, or
a cascading key added or replaced from another session while the purge runs stops it
at the batch that would set it off, that batch rolled back (its archive copy too), the
batches before done. The step fails resumably; the resume judges it again, so the
approval the new trigger or key needs is asked for; with them gone again the resume
goes on and ends with exactly the old rows gone, each archived once.

Time bound: a few thousand rows in small batches with a pause between them, a few
seconds a purge.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.handlers.purge.reach import changed_since, read_reach
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.handlers.purge.test_log_cleanup import (
    SMALL,
    _batches_done,
    _database,
    _events,
    archived_ids,
    expected_after,
    fill,
    job,
    rows_of,
)
from tests.helpers import use_target

# Slow enough that DDL from another session lands between batches, with many left.
SLOW = {**SMALL, "sleep_ms": 150}
# About 800 of them old: some 20 batches.
ROWS = 1_200

_AUDIT_TRIGGER = {
    "postgresql": (
        "CREATE TABLE audit (id integer)",
        "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
        "CREATE TRIGGER events_audit BEFORE DELETE ON events FOR EACH ROW "
        "EXECUTE FUNCTION audit_delete()",
    ),
    "mysql": (
        "CREATE TABLE audit (id integer) ENGINE=InnoDB",
        "CREATE TRIGGER events_audit BEFORE DELETE ON events FOR EACH ROW "
        "INSERT INTO audit VALUES (OLD.id)",
    ),
    "sqlite": (
        "CREATE TABLE audit (id integer)",
        "CREATE TRIGGER events_audit BEFORE DELETE ON events "
        "BEGIN INSERT INTO audit VALUES (OLD.id); END",
    ),
}
_CASCADE = (
    "CREATE TABLE child (id integer PRIMARY KEY, event_id integer, CONSTRAINT child_event "
    "FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE)",
    "INSERT INTO child (id, event_id) SELECT id, id FROM events",
)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def logs(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    with _database(request.param, home) as url:
        fill(url, rows=ROWS)
        yield use_target(home, url), url


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def _archive_table(url: str) -> str:
    """An empty events_archive shaped as events; the job's archive_to for it."""
    engine = create_engine(url)
    with engine.begin() as conn:
        _events(MetaData(), "events_archive").create(conn)
    engine.dispose()
    return "table:events_archive"


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return found


def _meanwhile(home: Path, run: Callable[[], Any], url: str, *ddl: str) -> Any:
    """Call `run` (a run or resume that purges); after the purge's first batch, send
    `ddl` from another session. What `run` returns."""
    done: dict[str, Any] = {}

    def purge() -> None:
        done["result"] = run()

    worker = threading.Thread(target=purge)
    worker.start()
    deadline = time.monotonic() + 60
    while _batches_done(home) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.is_alive(), "the purge ended before its objects could change"
    _execute(url, *ddl)
    worker.join(120)
    return done["result"]


def _purge_meanwhile(home: Path, job_: dict[str, Any], url: str, *ddl: str) -> Any:
    """Run the purge; after its first batch, send `ddl` from another session. The run's
    result."""
    return _meanwhile(
        home, lambda: commands.run_job(load_config(home=home), "log_cleanup", job_), url, *ddl
    )


def _approved(home: Path, job_: dict[str, Any]) -> Callable[[], Any]:
    """The purge's run as a person approves it: what flags cover approved in advance,
    and a step that waits for a person's yes to it (a cascade's) given that yes and
    resumed."""

    def run() -> Any:
        config = load_config(home=home)
        result = commands.run_job(config, "log_cleanup", job_, approver=PreApproved())
        if result.status != "waiting_approval":
            return result
        commands.decide_steps(config, result.run_id, "approved", step=1)
        return commands.resume_run(config, result.run_id)

    return run


def _purge_step(result: Any) -> Any:
    return next(s for s in result.steps if s.tool == "delete_old_records")


def _assert_stopped(result: Any, named: str) -> None:
    assert result.status == "failed", result.error
    error = _purge_step(result).error or ""
    assert "changed while the purge ran" in error and named in error, error
    assert f"`aishell resume {result.run_id}`" in error and "\n" not in error, error


def test_a_trigger_added_while_the_purge_runs_stops_it_and_resume_asks_again(logs, home):
    config, url = logs
    dialect = create_engine(url).dialect.name
    before = rows_of(url)

    result = _purge_meanwhile(home, job(**SLOW), url, *_AUDIT_TRIGGER[dialect])

    _assert_stopped(result, "events_audit")
    assert _count(url, "audit") == 0, "the batch that set the trigger off was rolled back"
    gone = set(before) - set(rows_of(url))
    with StateStore(f"sqlite:///{home / 'state.db'}") as store:
        progress = store.get_progress(result.run_id, 1) or {}
    assert gone and len(gone) == progress["rows_deleted"] and not progress["pending"]

    # Judged again with the trigger: its approval is asked for, not taken as given.
    waiting = commands.resume_run(config, result.run_id)
    assert waiting.status == "waiting_approval", waiting.error
    purge = _purge_step(waiting)
    assert purge.status == "waiting_approval"
    assert any("events_audit" in reason for reason in purge.reasons), purge.reasons
    assert _count(url, "audit") == 0 and set(before) - set(rows_of(url)) == gone

    _execute(url, "DROP TRIGGER events_audit" + (" ON events" if dialect == "postgresql" else ""))
    finished = commands.resume_run(config, result.run_id)
    assert finished.status == "completed", finished.error
    cutoff = finished.steps[0].output["cutoff"]
    assert set(rows_of(url)) == expected_after(before, cutoff)
    assert _count(url, "audit") == 0


@pytest.mark.parametrize("archive", ["table", "file"])
def test_a_cascading_key_added_while_the_purge_archives_stops_it_exactly(logs, home, archive):
    """The batch that would cascade is rolled back with its archive copy: every row
    gone is archived once, the child's rows stay."""
    config, url = logs
    file = home / "archive" / "events.jsonl"
    to = _archive_table(url) if archive == "table" else f"file:{file}"
    before = rows_of(url)

    result = _purge_meanwhile(home, job(archive_to=to, **SLOW), url, *_CASCADE)

    _assert_stopped(result, "child")
    gone = set(before) - set(rows_of(url))
    assert gone and _count(url, "child") == len(before) - len(gone)

    def archived() -> list[int]:
        if archive == "table":
            return list(rows_of(url, "events_archive"))
        return archived_ids(home / "archive" / "events.jsonl")

    assert sorted(archived()) == sorted(gone)

    _execute(url, "DROP TABLE child")
    finished = commands.resume_run(config, result.run_id)
    assert finished.status == "completed", finished.error
    cutoff = finished.steps[0].output["cutoff"]
    gone = set(before) - expected_after(before, cutoff)
    assert set(rows_of(url)) == set(before) - gone
    assert sorted(archived()) == sorted(gone)


@pytest.fixture
def pg_logs(home: Path) -> Iterator[tuple[Config, str]]:
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        yield use_target(home, url), url


@pytest.mark.parametrize("walk", ["keys", "pages"])
def test_a_table_that_comes_to_inherit_the_purged_one_stops_it(pg_logs, home, walk):
    """Its rows are the DELETE's too (without ONLY), whether the batches walk the key
    or the pages: the step was not judged with them."""
    config, url = pg_logs
    ddl = (
        "CREATE TABLE events_more () INHERITS (events)",
        # Old rows, which the purge's DELETE would reach, with keys it has yet to walk.
        f"INSERT INTO events_more SELECT {ROWS - 100} + g, localtimestamp - interval "
        "'60 days', 'more' FROM generate_series(1, 50) g",
    )

    result = _purge_meanwhile(home, job(walk=walk, **SLOW), url, *ddl)

    _assert_stopped(result, "events_more")
    assert _count(url, "events_more") == 50, "the batch that reached them was rolled back"
    finished = commands.resume_run(config, result.run_id)
    assert finished.status == "completed", finished.error
    assert _count(url, "events_more") == 0


_TRIGGER = (
    "CREATE TRIGGER events_audit BEFORE DELETE ON events FOR EACH ROW "
    "EXECUTE FUNCTION audit_delete()"
)
# What the trigger runs as approved, what replaces it, and the name the stop gives.
_REPLACED = {
    # The trigger's own function.
    "trigger_function": (
        (
            "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RETURN OLD; END$$",
        ),
        "CREATE OR REPLACE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
        "events_audit",
    ),
    # A SQL function written BEGIN ATOMIC ... END, which keeps no source text (the
    # server keeps its body parsed), that the trigger's function calls: seen by its
    # definition.
    "begin_atomic": (
        (
            "CREATE FUNCTION note(i integer) RETURNS void LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
            "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM note(OLD.id); RETURN OLD; END$$",
        ),
        "CREATE OR REPLACE FUNCTION note(i integer) RETURNS void LANGUAGE sql "
        "BEGIN ATOMIC INSERT INTO audit VALUES (i); END",
        "note",
    ),
}


@pytest.mark.parametrize("case", sorted(_REPLACED))
def test_a_trigger_function_replaced_while_the_purge_runs_stops_it(pg_logs, home, case):
    """A trigger approved as it was (its code writing nothing) whose function, or a
    function it calls, is replaced by one that writes, with CREATE OR REPLACE (the same
    trigger, the same function's oid): the batch that would run the new body is rolled
    back."""
    _config, url = pg_logs
    made, replaced, named = _REPLACED[case]
    _execute(url, "CREATE TABLE audit (id integer)", *made, _TRIGGER)
    result = _meanwhile(home, _approved(home, job(**SLOW)), url, replaced)

    _assert_stopped(result, named)
    assert _count(url, "audit") == 0, "the batch that ran the new body was rolled back"


_ARCHIVE_AUDIT = {
    "postgresql": (
        "CREATE TABLE audit (id integer)",
        "CREATE FUNCTION audit_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END$$",
        "CREATE TRIGGER archive_audit AFTER INSERT ON events_archive FOR EACH ROW "
        "EXECUTE FUNCTION audit_insert()",
    ),
    "mysql": (
        "CREATE TABLE audit (id integer) ENGINE=InnoDB",
        "CREATE TRIGGER archive_audit AFTER INSERT ON events_archive FOR EACH ROW "
        "INSERT INTO audit VALUES (NEW.id)",
    ),
    "sqlite": (
        "CREATE TABLE audit (id integer)",
        "CREATE TRIGGER archive_audit AFTER INSERT ON events_archive "
        "BEGIN INSERT INTO audit VALUES (NEW.id); END",
    ),
}


def test_a_trigger_added_on_the_archive_table_while_the_purge_runs_stops_it(logs, home):
    """The batch's copy into the archive table would run it: that batch is rolled back
    with its copy, every row gone archived once, and the resume refuses it."""
    config, url = logs
    to = _archive_table(url)
    before = rows_of(url)

    ddl = _ARCHIVE_AUDIT[create_engine(url).dialect.name]
    result = _purge_meanwhile(home, job(archive_to=to, **SLOW), url, *ddl)

    _assert_stopped(result, "archive_audit")
    assert _count(url, "audit") == 0, "the batch that set the trigger off was rolled back"
    gone = set(before) - set(rows_of(url))
    assert gone and sorted(rows_of(url, "events_archive")) == sorted(gone)
    # Judged again: an archive table that runs code is refused, naming it.
    again = commands.resume_run(config, result.run_id)
    assert again.status == "failed" and "archive_audit" in (again.error or ""), again.error
    assert _count(url, "audit") == 0


_AUDIT_CHILD = (
    "CREATE TABLE audit (id integer)",
    "CREATE FUNCTION audit_child() RETURNS trigger LANGUAGE plpgsql AS "
    "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
    "CREATE TRIGGER child_audit BEFORE DELETE OR UPDATE ON child FOR EACH ROW "
    "EXECUTE FUNCTION audit_child()",
)


@pytest.mark.parametrize("action", ["CASCADE", "SET NULL"])
def test_a_trigger_added_on_a_table_a_cascade_writes_stops_the_purge(pg_logs, home, action):
    """The child's key was approved with the step; a trigger added on the child runs
    for every row the key's action deletes or updates there (on PostgreSQL; InnoDB's
    cascades fire none, and aishell's SQLite sessions act on no key)."""
    _config, url = pg_logs
    _execute(
        url,
        "CREATE TABLE child (id integer PRIMARY KEY, event_id integer, CONSTRAINT "
        f"child_event FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE {action})",
        "INSERT INTO child (id, event_id) SELECT id, id FROM events",
    )

    result = _meanwhile(home, _approved(home, job(**SLOW)), url, *_AUDIT_CHILD)

    _assert_stopped(result, "child_audit on child")
    assert _count(url, "audit") == 0, "the batch that set the trigger off was rolled back"


_CALLED = {
    "postgresql": (
        (
            "CREATE TABLE audit (id integer)",
            "CREATE FUNCTION note(i integer) RETURNS void LANGUAGE plpgsql AS $$BEGIN NULL; END$$",
            "CREATE FUNCTION noting(i integer) RETURNS void LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM note(i); END$$",
            "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM {called}(OLD.id); RETURN OLD; END$$",
            "CREATE TRIGGER events_audit BEFORE DELETE ON events FOR EACH ROW "
            "EXECUTE FUNCTION audit_delete()",
        ),
        "CREATE OR REPLACE FUNCTION note(i integer) RETURNS void LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (i); END$$",
    ),
    "mysql": (
        (
            "CREATE TABLE audit (id integer) ENGINE=InnoDB",
            "CREATE PROCEDURE note(i integer) BEGIN END",
            "CREATE PROCEDURE noting(i integer) CALL note(i)",
            "CREATE TRIGGER events_audit BEFORE DELETE ON events FOR EACH ROW "
            "CALL {called}(OLD.id)",
        ),
        "CREATE OR REPLACE PROCEDURE note(i integer) INSERT INTO audit VALUES (i)",
    ),
}


@pytest.mark.parametrize("called", ["note", "noting"])
@pytest.mark.parametrize("logs", ["postgresql", "mysql"], indirect=True)
def test_a_routine_a_trigger_calls_replaced_while_the_purge_runs_stops_it(logs, home, called):
    """The trigger and its own body are as approved; a function (PostgreSQL) or
    procedure (MariaDB) its body calls, or one that calls in turn (`noting` calls
    `note`), is replaced by one that writes: the batch that would run it is rolled
    back."""
    _config, url = logs
    made, replaced = _CALLED[create_engine(url).dialect.name]
    _execute(url, *(sql.replace("{called}", called) for sql in made))

    result = _meanwhile(home, _approved(home, job(**SLOW)), url, replaced)

    _assert_stopped(result, "note")
    assert _count(url, "audit") == 0, "the batch that ran the new body was rolled back"


@pytest.mark.parametrize(
    "name", ["note$x", '"note x"', "note\u00a0x"], ids=["dollar", "space", "nbsp"]
)
@pytest.mark.parametrize("logs", ["postgresql"], indirect=True)
def test_a_function_named_past_a_word_split_replaced_while_the_purge_runs_stops_it(
    logs, home, name
):
    """The called function's name holds a character a split into words breaks it at
    ($, a space in a quoted name, U+00A0): it is followed all the same."""
    _config, url = logs
    made, replaced = _CALLED["postgresql"]
    _execute(url, *(sql.replace("note(", f"{name}(").replace("{called}", name) for sql in made))

    result = _meanwhile(
        home, _approved(home, job(**SLOW)), url, replaced.replace("note(", f"{name}(")
    )

    _assert_stopped(result, "note")
    assert _count(url, "audit") == 0, "the batch that ran the new body was rolled back"


@pytest.mark.parametrize("logs", ["postgresql", "mysql"], indirect=True)
def test_a_cascade_from_a_table_a_cascade_deletes_from_stops_the_purge(logs, home):
    """A key added on a grandchild, cascading from the child the step's approved key
    deletes from: the batch that would reach the grandchild's rows is rolled back."""
    _config, url = logs
    engine_clause = " ENGINE=InnoDB" if create_engine(url).dialect.name == "mysql" else ""
    _execute(url, _CASCADE[0] + engine_clause, _CASCADE[1])
    grandchild = (
        "CREATE TABLE grandchild (id integer PRIMARY KEY, child_id integer, CONSTRAINT "
        "grandchild_child FOREIGN KEY (child_id) REFERENCES child (id) ON DELETE CASCADE)"
        + engine_clause,
        "INSERT INTO grandchild (id, child_id) SELECT id, id FROM child",
    )

    result = _meanwhile(home, _approved(home, job(**SLOW)), url, *grandchild)

    _assert_stopped(result, "grandchild")
    assert _count(url, "grandchild") == _count(url, "child"), "rolled back, none went"


_ARCHIVE_CODE = {
    # Its rows go to audit instead of the archive.
    "rule": (
        "CREATE RULE archive_instead AS ON INSERT TO events_archive DO INSTEAD "
        "INSERT INTO audit VALUES (NEW.id)",
    ),
    "default": (
        "CREATE FUNCTION noted() RETURNS integer LANGUAGE sql AS "
        "$$INSERT INTO audit VALUES (0) RETURNING 1$$",
        "ALTER TABLE events_archive ADD COLUMN noted integer",
        "ALTER TABLE events_archive ALTER COLUMN noted SET DEFAULT noted()",
    ),
    # An index's function may write nothing, yet runs once per row copied.
    "index": (
        "CREATE FUNCTION noted(i integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$SELECT i$$",
        "CREATE INDEX archive_noted ON events_archive ((noted(id)))",
    ),
}


@pytest.mark.parametrize("code", sorted(_ARCHIVE_CODE))
def test_code_added_on_the_archive_table_while_the_purge_runs_stops_it(pg_logs, home, code):
    """A rule, a column's default or an index's expression that writes, added on the
    archive table: the batch's copy into it would run them."""
    _config, url = pg_logs
    to = _archive_table(url)
    _execute(url, "CREATE TABLE audit (id integer)")
    before = rows_of(url)

    result = _purge_meanwhile(home, job(archive_to=to, **SLOW), url, *_ARCHIVE_CODE[code])

    _assert_stopped(result, "events_archive")
    gone = set(before) - set(rows_of(url))
    assert sorted(rows_of(url, "events_archive")) == sorted(gone)
    assert _count(url, "audit") == 0, "the batch that ran it was rolled back"


def test_an_account_without_process_or_mysql_proc_reads_the_same_on_mariadb(home):
    """Without PROCESS (InnoDB's dictionary) or mysql.proc, the reach is read from
    information_schema: the same trigger, routines (a body the account may not read
    counts as calling every routine it sees) and keys, and a key added two levels deep
    is seen all the same."""
    user = f"u_{uuid.uuid4().hex[:12]}"
    with _database("mysql", home) as url:
        fill(url, rows=10)
        made, _replaced = _CALLED["mysql"]
        _execute(url, *(sql.replace("{called}", "noting") for sql in made))
        _execute(url, _CASCADE[0] + " ENGINE=InnoDB", _CASCADE[1])
        database = make_url(url).database
        _execute(
            url,
            f"CREATE USER '{user}'@'127.0.0.1'",
            f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'",
        )
        try:
            admin = create_engine(url)
            limited = create_engine(make_url(url).set(username=user, password=None))
            with admin.connect() as conn:
                full = read_reach(conn, "`events`", "events")
            with limited.connect() as conn:
                start = read_reach(conn, "`events`", "events")
                assert "mysql.proc" in full.sql and "mysql.proc" not in start.sql
                named = {(kind, name) for kind, name, _ in start.found}
                assert named == {(kind, name) for kind, name, _ in full.found}
                assert ("foreign key", "child_event of child") in named
                assert {n for k, n in named if k == "routine"} == {
                    f"procedure {database}.{n} (run by trigger events_audit)"
                    for n in ("note", "noting")
                }
                conn.rollback()
                _execute(
                    url,
                    "CREATE TABLE grandchild (id integer PRIMARY KEY, child_id integer, "
                    "CONSTRAINT grandchild_child FOREIGN KEY (child_id) REFERENCES child (id) "
                    "ON DELETE CASCADE) ENGINE=InnoDB",
                )
                _now, changed = changed_since(conn, start)
            assert changed == "added foreign key grandchild_child of grandchild"
            admin.dispose()
            limited.dispose()
        finally:
            _execute(url, f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
