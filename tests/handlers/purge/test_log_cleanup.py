"""The log cleanup agent on SQLite, PostgreSQL and MariaDB: exactly the old rows go,
in batches that survive SIGKILL, stop, throttling and the end of the window."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import TargetError, UsageError
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.helpers import use_target

ROWS = 3_000
# Rows are spread over the last DAYS days, in an order unrelated to their key, so old
# and new rows are mixed along the key a purge walks.
DAYS = 45
RETENTION = 30
# Small batches that stay small: many batches even on a few thousand rows, and never
# fewer keys than batch_size however slow a loaded machine makes them.
SMALL = {
    "batch_size": 20,
    "max_batch_size": 50,
    "max_batch_ms": 250,
    "statistics_after_rows": 100,
}

SERVER_NOW = {
    "postgresql": "SELECT localtimestamp",
    "mysql": "SELECT NOW(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


@contextmanager
def _database(dialect: str, home: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{home / 'logs.db'}"
    elif dialect == "postgresql":
        from tests.services import scratch_postgresql

        with scratch_postgresql() as url:
            yield url
    else:
        from tests.services import scratch_mysql

        with scratch_mysql() as url:
            yield url


def _events(metadata: MetaData, name: str = "events") -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("created_at", DateTime, nullable=False),
        Column("payload", String(64), nullable=False),
    )


def fill(url: str, table: str = "events", rows: int = ROWS) -> None:
    engine = create_engine(url)
    metadata = MetaData()
    events = _events(metadata, table)
    with engine.begin() as conn:
        metadata.create_all(conn)
        now = conn.execute(text(SERVER_NOW[engine.dialect.name])).scalar_one()
        if isinstance(now, str):
            now = datetime.fromisoformat(now)
        values = []
        for i in range(1, rows + 1):
            age = timedelta(days=(i * 7919) % DAYS, seconds=(i * 104729) % 86_000 + 30)
            values.append(
                {"id": i, "created_at": now - age, "payload": f"event {i} " + "x" * (i % 20)}
            )
        conn.execute(insert(events), values)
    engine.dispose()


def rows_of(url: str, table: str = "events") -> dict[int, datetime]:
    engine = create_engine(url)
    with engine.connect() as conn:
        events = _events(MetaData(), table)
        found = {r.id: r.created_at for r in conn.execute(select(events))}
    engine.dispose()
    return found


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def logs(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    """A config whose default target `db` holds an `events` table of mixed-age rows."""
    with _database(request.param, home) as url:
        fill(url)
        yield use_target(home, url), url


def job(**extra: Any) -> dict[str, Any]:
    return {"table": "events", "date_column": "created_at", "retention_days": RETENTION, **extra}


def expected_after(before: dict[int, datetime], cutoff: str) -> set[int]:
    limit = datetime.fromisoformat(cutoff)
    return {i for i, at in before.items() if at >= limit}


def archived_ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("archive", ["file", "table", None])
def test_exactly_the_rows_older_than_the_cutoff_go(logs, home, archive):
    config, url = logs
    before = rows_of(url)
    extra: dict[str, Any] = dict(SMALL)
    if archive == "file":
        extra["archive_to"] = f"file:{home / 'archive' / 'events.jsonl'}"
    elif archive == "table":
        engine = create_engine(url)
        with engine.begin() as conn:
            _events(MetaData(), "events_archive").create(conn)
        engine.dispose()
        extra["archive_to"] = "table:events_archive"

    result = commands.run_job(config, "log_cleanup", job(**extra))

    assert result.status == "completed", result.error
    count, purge, recount, statistics = result.steps
    cutoff = count.output["cutoff"]
    kept = expected_after(before, cutoff)
    gone = set(before) - kept
    assert 0 < len(gone) < len(before)
    assert_counted_or_estimated(url, count.output, len(before), len(gone))
    assert set(rows_of(url)) == kept
    # The purge's own count is exact, whatever the estimate before it said.
    assert purge.output["rows_deleted"] == len(gone) and purge.output["complete"]
    assert purge.output["batches"] > 10  # it really went in batches
    assert recount.output["older_rows"] == 0
    assert_counted_or_estimated(url, recount.output, len(kept), 0)
    if recount.output["estimated"]:  # derived: the estimate before, less what went
        assert recount.output["row_count"] == count.output["row_count"] - len(gone)
    assert statistics.status == "succeeded"  # over statistics_after_rows
    if archive == "file":
        ids = archived_ids(home / "archive" / "events.jsonl")
        assert sorted(ids) == sorted(gone)  # each deleted row once, no other row
        first = json.loads((home / "archive" / "events.jsonl").read_text().splitlines()[0])
        assert set(first) == {"id", "created_at", "payload"}
        assert first["payload"].startswith(f"event {first['id']} ")
    elif archive == "table":
        archived = rows_of(url, "events_archive")
        assert set(archived) == gone
        assert all(archived[i] == before[i] for i in gone)


def assert_counted_or_estimated(url: str, output: dict[str, Any], rows: int, older: int) -> None:
    """SQLite counts exactly; PostgreSQL and MySQL estimate, say so and how, and come
    close on these evenly spread rows."""
    if url.startswith("sqlite"):
        assert not output["estimated"]
        assert (output["row_count"], output["older_rows"]) == (rows, older)
        return
    assert output["estimated"] and output["how"]
    assert abs(output["row_count"] - rows) <= 0.1 * rows
    assert abs(output["older_rows"] - older) <= 0.1 * rows


def _purge_and_die(home: Path, job_: dict[str, Any], where: str, at: int) -> None:
    """In a forked child: purge, and SIGKILL ourselves at the at-th checkpoint."""
    os.environ["AISHELL_HOME"] = str(home)
    original = StateStore.save_progress
    calls = 0

    def save_progress(self: StateStore, run_id: str, index: int, progress: dict) -> None:
        nonlocal calls
        calls += 1
        if calls == at and where == "after_commit":
            # The batch before committed; its checkpoint still says "pending".
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, run_id, index, progress)
        if calls == at and where == "before_commit":
            # This batch's checkpoint is durable; its delete has not committed.
            os.kill(os.getpid(), signal.SIGKILL)

    StateStore.save_progress = save_progress  # type: ignore[method-assign]
    commands.run_job(load_config(home=home), "log_cleanup", job_)
    os._exit(0)


def _batches_done(home: Path) -> int:
    """The batches the newest run's purge has checkpointed: a read-only look at its
    state store (a StateStore opened at every poll cost about 50 ms of CPU each)."""
    path = home / "state.db"
    if not path.exists():
        return 0
    newest = "SELECT run_id FROM runs ORDER BY created_at DESC, run_id LIMIT 1"
    progress = "SELECT progress FROM step_progress WHERE run_id = ? AND step_idx = 1"
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            run = conn.execute(newest).fetchone()
            found = conn.execute(progress, run).fetchone() if run else None
    except sqlite3.OperationalError:  # the store is still being made
        return 0
    return int(json.loads(found[0]).get("batches", 0)) if found else 0


@pytest.mark.parametrize("where", ["before_commit", "after_commit", "anywhere"])
def test_sigkill_mid_purge_then_resume_leaves_what_an_uninterrupted_run_would(logs, home, where):
    config, url = logs
    before = rows_of(url)
    archive = home / "archive" / "events.jsonl"
    job_ = job(archive_to=f"file:{archive}", **SMALL)
    if where == "anywhere":
        # A pause between batches long enough that the kill after the fifth comes while
        # the purge still has batches to go, however fast its walk is.
        job_["sleep_ms"] = 40
    fork = multiprocessing.get_context("fork")
    child = fork.Process(target=_purge_and_die, args=(home, job_, where, 7))
    child.start()
    if where == "anywhere":
        deadline = time.monotonic() + 60
        while _batches_done(home) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(60)
    assert child.exitcode == -signal.SIGKILL

    killed = commands.list_runs(config, limit=1)[0]
    assert killed["status"] == "interrupted"
    left_by_kill = set(rows_of(url))
    assert left_by_kill != set(before)  # some batches had committed
    result = commands.resume_run(config, killed["run_id"])

    assert result.status == "completed", result.error
    cutoff = result.steps[0].output["cutoff"]
    kept = expected_after(before, cutoff)
    gone = set(before) - kept
    assert set(rows_of(url)) == kept
    purge = result.steps[1].output
    assert purge["resumed"] and purge["complete"]
    assert purge["rows_deleted"] == len(gone)  # every batch counted once
    assert sorted(archived_ids(archive)) == sorted(gone)  # every row archived once


# --- refusals, previews and the policy -------------------------------------------------


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def test_tables_without_a_key_to_walk_or_a_date_column_are_refused(logs):
    config, url = logs
    before = rows_of(url)
    rowid = " WITHOUT ROWID" if url.startswith("sqlite") else ""
    _execute(
        url,
        "CREATE TABLE no_key (n INTEGER NOT NULL, m INTEGER NOT NULL, created_at DATE, "
        f"PRIMARY KEY (n, m)){rowid}",
    )
    with pytest.raises(TargetError, match=r"its primary key has 2 columns \(n, m\)"):
        commands.run_job(config, "log_cleanup", job(table="no_key"))
    with pytest.raises(TargetError, match="has no column 'made_at'"):
        commands.run_job(config, "log_cleanup", job(date_column="made_at"))
    with pytest.raises(TargetError, match="holds .*, not dates"):
        commands.run_job(config, "log_cleanup", job(date_column="payload"))
    with pytest.raises(TargetError, match="archive table missing does not exist"):
        commands.run_job(config, "log_cleanup", job(archive_to="table:missing"))
    with pytest.raises(UsageError, match="needs the table"):
        commands.run_job(config, "log_cleanup", {"retention_days": 30})
    assert rows_of(url) == before
    assert commands.list_runs(config) == []  # refused before a run began


def test_a_refusal_is_one_line_and_exit_2(logs):
    result = CliRunner().invoke(
        cli, ["run", "log-cleanup", "--table", "events", "--date-column", "nope"]
    )
    assert commands.list_runs(logs[0]) == []
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "has no column 'nope'" in result.output


def test_a_dry_run_estimates_and_shows_each_batch_statement(logs):
    config, url = logs
    before = rows_of(url)
    # The key walk here; the page walk's preview: test_purge_pages.py.
    result = commands.run_job(config, "log_cleanup", job(walk="keys"), dry_run=True)
    assert result.status == "completed"
    count, purge = result.steps[:2]
    gone = set(before) - expected_after(before, count.output["cutoff"])
    assert purge.status == "previewed"
    figures = {
        "row_count": purge.estimate["table_rows"],
        "older_rows": purge.estimate["rows_to_delete"],
        "estimated": purge.estimate["estimated"],
        "how": purge.estimate.get("how"),
    }
    assert_counted_or_estimated(url, figures, len(before), len(gone))
    # At its start it reads the key's ends and counts the rows max_share is of. An
    # integer key is walked in plain key ranges: a batch reads where its first old row
    # is, then deletes from there (and on PostgreSQL reads its transaction's id); all
    # are shown, and nothing else may write. Last, the count of the old rows left that
    # a stop at max_share sends.
    ends, count_all, look, delete, *own_id, left = purge.sql
    assert left.startswith("SELECT count(*) FROM (SELECT 1 FROM ") and ":cutoff" in left, left
    assert ends.startswith("SELECT (SELECT ") and ends.endswith(" DESC LIMIT 1)"), ends
    assert count_all.startswith("SELECT count(*) FROM "), count_all
    assert look.startswith("SELECT (SELECT ") and look.endswith(" LIMIT 1)")
    assert delete.startswith("DELETE FROM ")
    assert all(":after" in sql and ":upper" in sql and ":cutoff" in sql for sql in (look, delete))
    on_postgresql = url.startswith("postgresql")
    assert [("pg_current_xact_id" in sql) for sql in own_id] == ([True] if on_postgresql else [])
    # created_at has no index: the preview says what that costs.
    assert any("has no index" in w for w in purge.estimate["warnings"])
    assert rows_of(url) == before


def test_no_warning_when_the_date_column_is_indexed(logs):
    config, url = logs
    _execute(url, "CREATE INDEX events_created ON events (created_at)")
    result = commands.run_job(config, "log_cleanup", job(), dry_run=True)
    assert result.steps[1].estimate["warnings"] == []


def _waiting_reasons(result):
    purge = result.steps[1]
    assert result.status == "waiting_approval" and purge.status == "waiting_approval"
    return " ".join(purge.reasons)


def test_approval_for_short_retention_large_share_and_strict(logs, edit_config, home):
    config, url = logs
    before = rows_of(url)
    # Under 7 days of retention: recent rows would go.
    short = commands.run_job(config, "log_cleanup", job(retention_days=5))
    assert "retention of 5 days is under 7" in _waiting_reasons(short)
    # 10 days keeps under half of rows spread over 45 days.
    large = commands.run_job(config, "log_cleanup", job(retention_days=10))
    assert "over max_share (50%)" in _waiting_reasons(large)
    # Strict: any delete needs a yes.
    strict = commands.run_job(config, "log_cleanup", job(), safety_level="strict")
    assert "medium risk needs approval at the strict safety level" in _waiting_reasons(strict)
    assert rows_of(url) == before
    # Limits come from config.
    loose = edit_config(
        log_cleanup={
            "safety_constraints": [
                {"type": "purge_limits", "min_retention_days": 1, "max_share": 0.9}
            ]
        }
    )
    # The shipped batch sizes: a few batches do it (SMALL's sixty took 2-3 s an engine).
    assert commands.run_job(loose, "log_cleanup", job(retention_days=5)).status == "completed"


def test_a_cutoff_newer_than_the_retention_allows_is_refused(logs):
    config, url = logs
    before = rows_of(url)
    plan = commands.make_plan(config, "log_cleanup", job())
    steps = list(plan.steps)
    step = steps[1]
    params = dict(step.params, cutoff="2999-01-01 00:00:00")
    steps[1] = type(step)(step.id, step.tool, params, step.rationale)
    edited = type(plan)(plan.agent, plan.target, plan.dialect, plan.job, tuple(steps[:2]))
    result = commands.apply_plan(config, edited)
    assert result.status == "failed"
    assert "is newer than retention_days=30 allows" in result.steps[1].error
    assert rows_of(url) == before


# --- stopping: max_rows, run time, the window, `aishell stop` --------------------------


def test_max_rows_stops_the_run_and_the_next_run_goes_on(logs):
    config, url = logs
    before = rows_of(url)
    first = commands.run_job(config, "log_cleanup", job(max_rows=300, **SMALL))
    purge = first.steps[1].output
    assert first.status == "completed"
    assert purge["rows_deleted"] == 300 and not purge["complete"]
    assert purge["stopped_by"] == "max_rows (300) reached"
    assert len(before) - len(rows_of(url)) == 300
    second = commands.run_job(config, "log_cleanup", job(**SMALL))
    cutoff = second.steps[0].output["cutoff"]
    assert second.steps[1].output["complete"]
    assert set(rows_of(url)) == expected_after(before, cutoff)


def test_run_time_and_the_window_end_the_purge_cleanly(logs, edit_config):
    config, url = logs
    before = rows_of(url)
    # 50 rows a batch and 300 ms between batches: the purge would need over 6 s.
    slow = {**SMALL, "sleep_ms": 300}
    timed = commands.run_job(config, "log_cleanup", job(run_time_seconds=1, **slow))
    purge = timed.steps[1].output
    assert purge["stopped_by"] == "run time (1 s) used up" and not purge["complete"]
    assert 0 < purge["rows_deleted"] < len(before) - len(expected_after(before, purge["cutoff"]))

    # The window closes 3 seconds after the run's first step starts (on the policy's
    # clock), long before a purge of 600 ms pauses (over 60 batches) could finish. On a
    # table of its own, which no purge has run on: the policy expects the purge to take
    # what the table's bytes would, not as long as the run stopped by its run time took.
    fill(url, "windowed")
    hour = 3
    windowed = edit_config(
        log_cleanup={
            "safety_constraints": [
                {"type": "purge_limits"},
                {"type": "maintenance_window", "allowed_hours": [hour]},
            ]
        }
    )
    fake = datetime(2026, 11, 23, hour, 59, 57, tzinfo=UTC)
    started: list[datetime] = []

    def clock() -> datetime:
        # The policy's clock starts at its first reading (the first step), so the time
        # planning takes on a loaded machine does not use up the window.
        if not started:
            started.append(datetime.now(UTC))
        return fake + (datetime.now(UTC) - started[0])

    slower = {**SMALL, "sleep_ms": 600}
    result = commands.run_job(windowed, "log_cleanup", job(table="windowed", **slower), clock=clock)
    purge = result.steps[1].output
    assert result.steps[1].status == "succeeded", result.error
    assert purge["stopped_by"] == "maintenance window closes at 04:00 UTC"
    assert not purge["complete"] and purge["rows_deleted"] > 0


def test_stop_ends_the_purge_after_the_current_batch_and_resume_goes_on(logs, home):
    config, url = logs
    before = rows_of(url)
    outcome: dict[str, Any] = {}

    def purge() -> None:
        outcome["result"] = commands.run_job(
            load_config(home=home), "log_cleanup", job(sleep_ms=20, **SMALL)
        )

    worker = threading.Thread(target=purge)
    worker.start()
    deadline = time.monotonic() + 60
    while _batches_done(home) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    run_id = commands.list_runs(config, limit=1)[0]["run_id"]
    commands.stop_run(config, run_id)
    worker.join(60)
    stopped = outcome["result"]
    assert stopped.status == "interrupted"
    assert stopped.steps[1].status == "interrupted"
    assert "`aishell resume` goes on from there" in stopped.steps[1].error
    done_before = _batches_done(home)
    result = commands.resume_run(config, run_id)
    assert result.status == "completed"
    cutoff = result.steps[0].output["cutoff"]
    gone = set(before) - expected_after(before, cutoff)
    assert set(rows_of(url)) == expected_after(before, cutoff)
    assert result.steps[1].output["rows_deleted"] == len(gone)
    assert result.steps[1].output["batches"] > done_before


# --- throttling ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_purge_waits_while_the_server_is_busy(dialect, home):
    sleeper = {
        "postgresql": "SELECT pg_sleep(4)",
        "mysql": "SELECT SLEEP(4)",
    }[dialect]
    with _database(dialect, home) as url:
        fill(url)
        config = use_target(home, url)
        engine = create_engine(url)

        def busy() -> None:
            with engine.connect() as conn:
                conn.execute(text(sleeper))

        sessions = [threading.Thread(target=busy) for _ in range(3)]
        for session in sessions:
            session.start()
        time.sleep(0.3)
        result = commands.run_job(config, "log_cleanup", job(max_running_queries=2, **SMALL))
        for session in sessions:
            session.join()
        engine.dispose()
        assert result.status == "completed"
        purge = result.steps[1].output
        assert purge["complete"] and purge["throttled_seconds"] >= 1
        events = commands.show_run(config, result.run_id)["events"]
        throttled = [e for e in events if e["kind"] == "throttled"]
        assert throttled and "queries running (limit 2)" in throttled[0]["data"]["reason"]


def test_a_replica_that_does_not_replicate_is_an_error(home):
    with _database("mysql", home) as url:
        fill(url, rows=100)
        use_target(home, url, replica=url)
        config = _with_replicas(home, ["replica"])
        result = commands.run_job(config, "log_cleanup", job())
        assert result.status == "failed"
        assert "target 'replica' is not a replica" in result.steps[1].error


def _with_replicas(home: Path, replicas: list[str]) -> Config:
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"]["purge"]["replicas"] = replicas
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def test_a_text_key_is_walked_by_looking_up_each_batch_end(logs):
    config, url = logs
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE tagged (code VARCHAR(20) PRIMARY KEY, "
                "created_at TIMESTAMP NOT NULL, note VARCHAR(20))"
            )
        )
        conn.execute(
            text("INSERT INTO tagged SELECT 'k' || id, created_at, 'n' FROM events")
            if engine.dialect.name != "mysql"
            else text("INSERT INTO tagged SELECT CONCAT('k', id), created_at, 'n' FROM events")
        )
        before = {
            code: at if isinstance(at, datetime) else datetime.fromisoformat(at)
            for code, at in conn.execute(text("SELECT code, created_at FROM tagged"))
        }
    # The key walk (PostgreSQL 14+ would walk the pages).
    keys = {"walk": "keys"}
    dry = commands.run_job(config, "log_cleanup", job(table="tagged", **keys), dry_run=True)
    # After its start's reads (the key's ends, the count max_share is of), the lookup.
    assert dry.steps[1].sql[2].startswith("SELECT aishell_k FROM (SELECT ")
    result = commands.run_job(config, "log_cleanup", job(table="tagged", **SMALL, **keys))
    assert result.status == "completed", result.error
    limit = datetime.fromisoformat(result.steps[0].output["cutoff"])
    with engine.connect() as conn:
        after = {r[0] for r in conn.execute(text("SELECT code FROM tagged"))}
    engine.dispose()
    assert after == {code for code, at in before.items() if at >= limit}
    assert result.steps[1].output["batches"] > 10


def test_flags_reach_the_plan_and_bad_values_are_one_line(demo_db):
    runner = CliRunner()
    args = ["plan", "log-cleanup", "--table", "app_logs", "--retention-days", "45"]
    result = runner.invoke(cli, [*args, "--run-time", "90m", "--max-batch-ms", "50", "--json"])
    assert result.exit_code == 0, result.output
    purge = json.loads(result.stdout)["steps"][1]["params"]
    assert purge["run_time_seconds"] == 5400 and purge["max_batch_ms"] == 50
    assert purge["retention_days"] == 45 and purge["cutoff"] == "${step_0.output.cutoff}"
    bad = runner.invoke(cli, [*args, "--run-time", "soon"])
    assert bad.exit_code == 2 and "is not a duration such as 90, 90s, 30m" in bad.output
    negative = runner.invoke(cli, [*args[:4], "--retention-days", "-1"])
    assert negative.exit_code == 2


# What a purge's DELETE does beyond its table: each engine's way of saying so.
CASCADE_CHILD = {
    "postgresql": "CREATE TABLE event_tags (tag_id integer PRIMARY KEY, "
    "event_id integer REFERENCES events (id) ON DELETE CASCADE)",
    "mysql": "CREATE TABLE event_tags (tag_id integer PRIMARY KEY, event_id integer, "
    "FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE) ENGINE=InnoDB",
}
DELETE_TRIGGER = {
    "postgresql": [
        "CREATE TABLE deleted_log (id integer)",
        "CREATE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO deleted_log VALUES (OLD.id); RETURN OLD; END $$",
        "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
        "EXECUTE FUNCTION note_delete()",
        # Fires on UPDATE only: not named.
        "CREATE TRIGGER events_touched AFTER UPDATE ON events FOR EACH ROW "
        "EXECUTE FUNCTION note_delete()",
    ],
    "mysql": [
        "CREATE TABLE deleted_log (id integer)",
        "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
        "INSERT INTO deleted_log VALUES (OLD.id)",
        "CREATE TRIGGER events_touched AFTER UPDATE ON events FOR EACH ROW "
        "INSERT INTO deleted_log VALUES (OLD.id)",
    ],
    "sqlite": [
        "CREATE TABLE deleted_log (id integer)",
        "CREATE TRIGGER events_gone AFTER DELETE ON events BEGIN "
        "INSERT INTO deleted_log VALUES (OLD.id); END",
        # Its body deletes, but it fires on UPDATE: not named.
        "CREATE TRIGGER events_touched AFTER UPDATE ON events BEGIN "
        "DELETE FROM deleted_log WHERE id = OLD.id; END",
    ],
}


@pytest.mark.parametrize("logs", ["postgresql", "mysql"], indirect=True)
def test_a_cascade_to_another_table_needs_a_yes_for_that_very_step(logs):
    config, url = logs
    dialect = make_url(url).get_backend_name()
    _execute(url, CASCADE_CHILD[dialect], "INSERT INTO event_tags VALUES (1, 1), (2, 2)")
    before = rows_of(url)

    waiting = commands.run_job(config, "log_cleanup", job(**SMALL), approver=PreApproved())

    purge = waiting.steps[1]
    assert waiting.status == "waiting_approval" and purge.status == "waiting_approval"
    said = " ".join(purge.personal)
    assert "deleting from events also acts on " in said
    assert "event_tags.event_id (ON DELETE CASCADE, " in said
    assert "though no statement of the step names them" in said
    assert rows_of(url) == before
    dry = commands.run_job(config, "log_cleanup", job(), dry_run=True)
    assert dry.steps[1].estimate["cascades"] == purge.estimate["cascades"]


def test_triggers_that_fire_on_delete_are_named_and_asked_for(logs):
    config, url = logs
    dialect = make_url(url).get_backend_name()
    _execute(url, *DELETE_TRIGGER[dialect])

    dry = commands.run_job(config, "log_cleanup", job(), dry_run=True)

    purge = dry.steps[1]
    fires = purge.estimate["fires"]
    assert len(fires) == 1 and fires[0].startswith("deleting from events fires trigger events_gone")
    assert fires[0] in purge.reasons
    assert purge.estimate["cascades"] == []
    result = commands.run_job(config, "log_cleanup", job(**SMALL), approver=PreApproved())
    assert result.status == "completed", result.error
    engine = create_engine(url)
    with engine.connect() as conn:
        logged = conn.execute(text("SELECT count(*) FROM deleted_log")).scalar_one()
    engine.dispose()
    assert logged == result.steps[1].output["rows_deleted"] > 0


@pytest.mark.parametrize("logs", ["postgresql"], indirect=True)
def test_a_rule_on_delete_is_named_with_what_it_does(logs):
    config, url = logs
    _execute(
        url,
        "CREATE TABLE kept (id integer)",
        "CREATE RULE keep_instead AS ON DELETE TO events DO INSTEAD "
        "INSERT INTO kept VALUES (OLD.id)",
    )

    dry = commands.run_job(config, "log_cleanup", job(), dry_run=True)

    fires = dry.steps[1].estimate["fires"]
    rule = "rule keep_instead (DO INSTEAD: the statement does what the rule says)"
    assert fires == [f"deleting from events fires {rule}"]
    assert fires[0] in dry.steps[1].reasons


@pytest.mark.parametrize("logs", ["sqlite"], indirect=True)
def test_on_sqlite_nothing_cascades_and_the_rows_left_pointing_are_named(logs):
    """aishell's SQLite sessions leave foreign keys off: the key is there, but a DELETE
    does not act on it. The estimate says so, naming the key whose rows are left
    pointing at deleted ones, and the step waits for a person's yes to it; given, the
    event goes and its tag stays."""
    config, url = logs
    _execute(
        url,
        "CREATE TABLE event_tags (tag_id integer PRIMARY KEY, "
        "event_id integer REFERENCES events (id) ON DELETE CASCADE)",
        "INSERT INTO event_tags VALUES (1, 1), (2, 2)",
    )

    waiting = commands.run_job(config, "log_cleanup", job(**SMALL), approver=PreApproved())

    assert waiting.status == "waiting_approval", waiting.error
    (said,) = waiting.steps[1].estimate["cascades"]
    assert said.startswith("deleting from events leaves rows of event_tags.event_id pointing")
    commands.decide_steps(config, waiting.run_id, "approved", step=1)
    result = commands.resume_run(config, waiting.run_id)
    assert result.status == "completed", result.error
    assert 1 not in rows_of(url)  # event 1 is old: it went, and its tag stayed
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM event_tags")).scalar_one() == 2
    engine.dispose()


ARCHIVE_TRIGGER = {
    "postgresql": [
        "CREATE FUNCTION note_archived() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN NEW; END $$",
        "CREATE TRIGGER archived_in BEFORE INSERT ON events_archive FOR EACH ROW "
        "EXECUTE FUNCTION note_archived()",
    ],
    "mysql": [
        "CREATE TRIGGER archived_in BEFORE INSERT ON events_archive FOR EACH ROW "
        "SET NEW.payload = NEW.payload",
    ],
    "sqlite": [
        "CREATE TRIGGER archived_in AFTER INSERT ON events_archive BEGIN SELECT 1; END",
    ],
}


def test_a_trigger_on_insert_into_the_archive_table_is_refused(logs):
    """A trigger on the archive table would run for every archived row: the job is
    refused when it is planned, naming the trigger (test_user_code.py has the rest)."""
    config, url = logs
    engine = create_engine(url)
    with engine.begin() as conn:
        _events(MetaData(), "events_archive").create(conn)
    engine.dispose()
    _execute(url, *ARCHIVE_TRIGGER[make_url(url).get_backend_name()])
    before = rows_of(url)

    with pytest.raises(TargetError, match="archive table events_archive runs code") as refused:
        commands.run_job(config, "log_cleanup", job(archive_to="table:events_archive"))

    said = str(refused.value)
    assert "trigger archived_in" in said and "\n" not in said
    assert rows_of(url) == before


@pytest.mark.parametrize("clause", ["REPLACE", "IGNORE"])
def test_an_sqlite_archive_table_that_settles_a_conflict_itself_is_refused(home, tmp_path, clause):
    """ON CONFLICT REPLACE on the archive table's key deletes the copy it already held
    to make room for the new one (IGNORE drops the new one): the job is refused when it
    is planned, naming the clause. Before, REPLACE ran at medium risk and the run said
    every row was archived while an earlier copy was gone."""
    path = tmp_path / "logs.db"
    url = f"sqlite:///{path}"
    fill(url)
    _execute(
        url,
        "CREATE TABLE events_archive (id INTEGER PRIMARY KEY ON CONFLICT "
        f"{clause}, created_at TIMESTAMP, payload VARCHAR(200))",
        "INSERT INTO events_archive VALUES (1, '2019-01-01', 'archived before')",
    )
    config = use_target(home, url)
    before = rows_of(url)
    with pytest.raises(TargetError, match=f"ON CONFLICT {clause}") as refused:
        commands.run_job(config, "log_cleanup", job(archive_to="table:events_archive"))
    assert "\n" not in str(refused.value)
    assert rows_of(url) == before
