"""A purge is judged with what its DELETE sets off beyond its own rows (triggers on the
table, foreign keys of other tables that act when its rows go, on PostgreSQL its
inheriting tables and partitions), and every batch holds to that: a trigger or a
cascading key added from another session while the purge runs stops it at the batch
that would set it off, that batch rolled back (its archive copy too), the batches
before done. The step fails resumably; the resume judges it again, so the approval the
new trigger or key needs is asked for; with them gone again the resume goes on and
ends with exactly the old rows gone, each archived once.

Time bound: a few thousand rows in small batches with a pause between them, a few
seconds a purge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, text

from aishell import commands
from aishell.config.models import Config, load_config
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


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return found


def _purge_meanwhile(home: Path, job_: dict[str, Any], url: str, *ddl: str) -> Any:
    """Run the purge; after its first batch, send `ddl` from another session. The run's
    result."""
    done: dict[str, Any] = {}

    def purge() -> None:
        done["result"] = commands.run_job(load_config(home=home), "log_cleanup", job_)

    worker = threading.Thread(target=purge)
    worker.start()
    deadline = time.monotonic() + 60
    while _batches_done(home) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.is_alive(), "the purge ended before its objects could change"
    _execute(url, *ddl)
    worker.join(120)
    return done["result"]


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
    if archive == "table":
        engine = create_engine(url)
        with engine.begin() as conn:
            _events(MetaData(), "events_archive").create(conn)
        engine.dispose()
        to = "table:events_archive"
    else:
        to = f"file:{home / 'archive' / 'events.jsonl'}"
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


def test_a_trigger_function_replaced_while_the_purge_runs_stops_it(pg_logs, home):
    """A trigger approved as it was (its function writing nothing) whose function is
    replaced by one that writes, with CREATE OR REPLACE (the same trigger, the same
    function's oid): the batch that would run the new body is rolled back."""
    from aishell.policy.approvers import PreApproved

    _config, url = pg_logs
    _execute(
        url,
        "CREATE TABLE audit (id integer)",
        "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RETURN OLD; END$$",
        "CREATE TRIGGER events_audit BEFORE DELETE ON events FOR EACH ROW "
        "EXECUTE FUNCTION audit_delete()",
    )
    done: dict[str, Any] = {}

    def purge() -> None:
        done["result"] = commands.run_job(
            load_config(home=home), "log_cleanup", job(**SLOW), approver=PreApproved()
        )

    worker = threading.Thread(target=purge)
    worker.start()
    deadline = time.monotonic() + 60
    while _batches_done(home) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.is_alive(), "the purge ended before the function could change"
    _execute(
        url,
        "CREATE OR REPLACE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
    )
    worker.join(120)

    _assert_stopped(done["result"], "events_audit")
    assert _count(url, "audit") == 0, "the batch that ran the new body was rolled back"
