"""A dump held off by another session's table lock waits at most lock_wait_seconds, then
stops with the holders named, leaving no file and no session of its own behind; the
holder is never touched. A lock let go within the wait costs only the wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.agents import jobs
from aishell.agents.backup import BackupAgent
from aishell.agents.base import PlanningContext
from aishell.cli import cli
from aishell.config.models import AgentDefaults, Config, load_config
from aishell.executor import RunResult
from aishell.policy.approvers import Prompting
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.helpers import use_target

# The application_name of the tests' own sessions: a closed one may still be listed for
# a moment while its backend exits, and is never a program's that outlived its run.
TEST_LOOK = "aishell-test-look"


def _pg(url: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        dbname=u.database,
        autocommit=autocommit,
        application_name=TEST_LOOK,
    )


def _my(url: str) -> pymysql.connections.Connection[Any]:
    u = make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, database=u.database, autocommit=True
    )


def _tables(url: str) -> None:
    if url.startswith("postgresql"):
        with _pg(url) as conn:
            conn.execute("CREATE TABLE first (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO first SELECT g, 'x' FROM generate_series(1, 500) g")
            conn.execute("CREATE TABLE held (id int PRIMARY KEY)")
            conn.execute("INSERT INTO held SELECT generate_series(1, 50)")
            conn.execute("ANALYZE")
        return
    with _my(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE `first` (id int PRIMARY KEY, v text)")
        cur.execute("INSERT INTO `first` SELECT seq, 'x' FROM seq_1_to_500")
        cur.execute("CREATE TABLE `held` (id int PRIMARY KEY)")
        cur.execute("INSERT INTO `held` SELECT seq FROM seq_1_to_50")


@contextmanager
def _other_session(url: str, postgresql: list[str], mysql: list[str]) -> Iterator[tuple[int, Any]]:
    """Another session that sent its dialect's statements and stays as they left it (in
    its transaction, with its locks): its id and connection."""
    conn: Any
    if url.startswith("postgresql"):
        conn = _pg(url, autocommit=False)
        for sql in postgresql:
            conn.execute(sql)
        ident = conn.info.backend_pid
    else:
        conn = _my(url)
        with conn.cursor() as cur:
            for sql in mysql:
                cur.execute(sql)
        ident = conn.thread_id()
    try:
        yield ident, conn
    finally:
        conn.close()


def holding(url: str) -> AbstractContextManager[tuple[int, Any]]:
    """Another session holding table `held` against every reader: its id and connection."""
    return _other_session(
        url, ["LOCK TABLE held IN ACCESS EXCLUSIVE MODE"], ["LOCK TABLES `held` WRITE"]
    )


def _still_holds(url: str, conn: Any) -> bool:
    """The holder's session is alive and still has its lock (aishell cancelled nothing)."""
    if url.startswith("postgresql"):
        found = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND granted "
            "AND mode = 'AccessExclusiveLock' AND relation = 'held'::regclass"
        ).fetchone()
        return bool(found and found[0] == 1)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM `held`")  # allowed only under its own LOCK TABLES
        return cur.fetchone()[0] == 50


def _dump_sessions(url: str) -> int:
    """Sessions of a dump still on the server."""
    if url.startswith("postgresql"):
        with _pg(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'aishell pg_dump %'"
            ).fetchone()
            return int(row[0]) if row else 0
    with _my(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
            "AND INFO LIKE 'SELECT /*!40001 SQL_NO_CACHE */%'"
        )
        return int(cur.fetchone()[0])


def _gone(url: str, seconds: float = 10.0) -> bool:
    ends = time.monotonic() + seconds
    while _dump_sessions(url):
        if time.monotonic() > ends:
            return False
        time.sleep(0.1)
    return True


def test_a_dump_behind_a_held_lock_stops_at_its_limit_naming_the_holder(home, server_url):
    _tables(server_url)
    config = use_target(home, server_url)
    job = {"type": "full", "verify": False, "lock_wait_seconds": 2}

    with holding(server_url) as (holder, conn):
        started = time.monotonic()
        # Bounded anyway, so that a dump that would wait for ever fails the test.
        result = commands.run_job(config, "backup", job, max_run_seconds=30)
        took = time.monotonic() - started
        assert _still_holds(server_url, conn)

    step = next(s for s in result.steps if s.tool == "backup_database_full")
    assert result.status == "failed" and step.status == "failed"
    program = "pg_dump" if server_url.startswith("postgresql") else "dump"
    assert f"{program} waited " in step.error and "s for a table lock (" in step.error
    assert "held" in step.error
    session = "pid" if server_url.startswith("postgresql") else "connection"
    # The holder, and only the holder: not aishell's own sessions, nor the dump's.
    assert f"the lock is held by {session} {holder} (" in step.error
    assert step.error.count(f"{session} ") == 1, step.error
    assert "allow a longer wait (--lock-wait; it was 2 s)" in step.error
    assert 2 <= step.seconds < 2 + 10, step.seconds
    assert took < 30
    assert _gone(server_url)
    assert commands.list_backups(config) == []
    assert not [p for p in (home / "backups").rglob("*") if p.is_file()]


def test_a_lock_let_go_within_the_wait_lets_the_backup_finish(home, server_url):
    _tables(server_url)
    config = use_target(home, server_url)
    job = {"type": "full", "lock_wait_seconds": 60}

    with holding(server_url) as (_holder, conn):
        let_go = (
            conn.commit
            if server_url.startswith("postgres")
            else (lambda: conn.cursor().execute("UNLOCK TABLES"))
        )

        def release() -> None:
            # A second after the dump is seen waiting, however long planning took.
            ends = time.monotonic() + 60
            while not _dump_sessions(server_url) and time.monotonic() < ends:
                time.sleep(0.05)
            time.sleep(1.0)
            let_go()

        releaser = threading.Thread(target=release)
        releaser.start()
        try:
            result = commands.run_job(config, "backup", job)
        finally:
            releaser.join()

    assert result.status == "completed", [(s.tool, s.status, s.error) for s in result.steps]
    step = next(s for s in result.steps if s.tool == "backup_database_full")
    assert step.seconds >= 0.75, step
    [backup] = commands.list_backups(config)
    assert backup["verified_at"]


def test_the_wait_is_a_param_of_the_dump_steps_only():
    ctx = PlanningContext("t", "postgresql", (), AgentDefaults())
    agent = BackupAgent()
    for kind in ("full", "incremental"):
        job = agent.normalize_job({"type": kind, "lock_wait_seconds": 90}, None)  # type: ignore[arg-type]
        steps = agent.plan_steps(job, ctx)
        waits = {s.tool: s.params.get("lock_wait_seconds") for s in steps}
        dump = f"backup_database_{kind}"
        assert waits.pop(dump) == 90
        assert set(waits.values()) == {None}, waits
    # Left out, the step's own default (60 s) applies.
    plain = agent.plan_steps(agent.normalize_job({"type": "full"}, None), ctx)  # type: ignore[arg-type]
    assert all("lock_wait_seconds" not in s.params for s in plain)


def test_the_command_line_and_a_schedule_take_the_wait(demo_db, home):
    params = {
        "kind": "full",
        "verify": True,
        "quick": False,
        "cleanup": False,
        "retention_days": 30,
        "keep_last": 3,
        "lock_wait": 300.0,
    }
    assert jobs.job_from_options("backup", params)[1]["lock_wait_seconds"] == 300.0
    assert jobs.scheduled_job("backup", params)[1]["lock_wait_seconds"] == 300.0

    out = CliRunner().invoke(cli, ["run", "backup", "--lock-wait", "2m", "--json"])
    assert out.exit_code == 0, out.output
    config = load_config(home=home)
    [run] = commands.list_runs(config)
    steps = commands.show_run(config, run["run_id"])["steps"]
    assert {s["tool"]: s["params"].get("lock_wait_seconds") for s in steps} == {
        "calculate_backup_size": None,
        "backup_database_full": 120.0,
        "validate_backup": None,
    }


@pytest.mark.parametrize(
    ("value", "why"),
    [("0", "under a second"), ("2d", "over the limit of 1 day"), ("x", "not a duration")],
)
def test_a_bad_wait_is_refused_by_the_command_line(demo_db, value, why):
    out = CliRunner().invoke(cli, ["run", "backup", "--lock-wait", value])
    assert out.exit_code == 2 and why in out.output


def test_postgresql_an_increment_reads_its_checksums_behind_a_lock_as_long_as_it_may(home, pg_url):
    """An increment reads the checksums of small tables in the dump's snapshot before
    the dump: that read waits for a held table as the dump would, in one attempt,
    where it gave up after the session's one-second lock timeout."""
    config, _full = backed_up(home, pg_url, validated=False)  # the increment's parent

    with holding(pg_url) as (_holder, conn):
        release = threading.Thread(target=_release_once_waited, args=(pg_url, conn, WAITED))
        release.start()
        try:
            result = commands.run_job(
                config, "backup", {"type": "incremental", "lock_wait_seconds": 30}
            )
        finally:
            release.join()

    assert result.status == "completed", result.error
    step = next(s for s in result.steps if s.tool == "backup_database_incremental")
    # It was seen waiting, and the lock came WAITED seconds later: one attempt that long.
    assert step.attempts == 1 and step.seconds >= WAITED


# How long the holder keeps table `held` once aishell's session waits for it: past the
# session's one-second lock timeout. HANG: a hang detector, never a timing assertion.
WAITED = 2.0
HANG = 120


def _release_once_waited(url: str, holder: Any, seconds: float) -> None:
    """Commit the holder's transaction `seconds` after a session of this database is
    first seen waiting for table `held` (or after HANG, if none ever waits)."""
    with _pg(url) as conn:
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            found = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND relation = 'held'::regclass AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            if found and found[0]:
                break
            time.sleep(0.01)
    time.sleep(seconds)
    holder.commit()


def test_postgresql_an_increment_held_off_throughout_names_who_holds_the_table(
    home, pg_url, edit_config
):
    """The step names no table; the statement that waited does, and its table's
    holder is named (where a session 'that has since gone' was said)."""
    backed_up(home, pg_url, validated=False)  # the increment's parent
    config = edit_config(backup={"default_config": {"retry_backoff_seconds": 0.1}})

    with holding(pg_url) as (holder, _conn):
        result = commands.run_job(config, "backup", {"type": "incremental", "lock_wait_seconds": 1})

    step = next(s for s in result.steps if s.tool == "backup_database_incremental")
    assert step.status == "failed"
    assert f"after 2 attempt(s) the lock was still held by pid {holder} (" in step.error
    assert step.error.count("pid ") == 1, step.error


def reading(url: str) -> AbstractContextManager[tuple[int, Any]]:
    """Another session that read table `held` in a transaction it leaves open: what a
    restore must not wait for without end (every reader of the table queues behind it)."""
    return _other_session(
        url, ["SELECT count(*) FROM held"], ["BEGIN", "SELECT count(*) FROM `held`"]
    )


def backed_up(home: Path, url: str, *, validated: bool = True) -> tuple[Config, int]:
    """The test's tables in url's database, its target `db`, and the id of a verified
    full backup of it; `validated=False`: taken without its validation, then recorded
    as verified (as_verified)."""
    _tables(url)
    config = use_target(home, url)
    done = commands.run_job(config, "backup", {"type": "full", "verify": validated})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config)
    if not validated:
        as_verified(config, backup["path"])
    return config, int(backup["id"])


def verified_full_backup(config: Config) -> dict[str, Any]:
    """A full backup of target `db` taken without its validation and recorded as
    verified (as_verified says why): the catalog's entry, newest first."""
    done = commands.run_job(config, "backup", {"type": "full", "verify": False})
    assert done.status == "completed", done.error
    taken = max(commands.list_backups(config, "db"), key=lambda b: int(b["id"]))
    as_verified(config, taken["path"])
    return taken


def as_verified(config: Config, path: str) -> None:
    """Record the backup at path as a passing validation records it (executor/effects.py).
    For tests to which a backup is only what a restore or an increment starts from: its
    validation would restore it into a scratch database they never look at (on
    PostgreSQL a CREATE and a DROP DATABASE, and a DROP forces a checkpoint). Validation
    is tested where it is the subject (test_backups.py, test_backup_consistency.py)."""
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        store.backup_verified(path, {"path": path, "ok": True, "problems": []}, True)
    [listed] = [b for b in commands.list_backups(config) if b["path"] == path]
    assert listed["verified_at"]


def restore_approved(config: Config, backup_id: int, lock_wait: float) -> RunResult:
    """The backup restored over target `db`, its critical step approved at the prompt."""
    return commands.restore(
        config,
        backup_id,
        "db",
        replace=True,
        approver=Prompting(ask=lambda r: "yes"),
        lock_wait=lock_wait,
    )


def test_a_restore_behind_a_held_lock_stops_at_its_limit_naming_the_holder(home, server_url):
    config, backup_id = backed_up(home, server_url, validated=False)

    with reading(server_url) as (holder, conn):
        # Let go later, so that a restore that waits for it finishes and fails the test.
        release = threading.Timer(20, conn.rollback)
        release.start()
        try:
            started = time.monotonic()
            result = restore_approved(config, backup_id, 2)
            took = time.monotonic() - started
        finally:
            release.cancel()
        # The holder was left alone: its transaction is still open.
        if server_url.startswith("postgresql"):
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        else:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM `held`")
                assert cur.fetchone()[0] == 50

    [step] = result.steps
    assert result.status == "failed" and step.status == "failed", step.error
    session = "pid" if server_url.startswith("postgresql") else "connection"
    assert " waited " in step.error and "s for a table lock " in step.error
    assert f"the lock is held by {session} {holder} (" in step.error
    assert step.error.count(f"{session} ") == 1, step.error
    # A MariaDB restore loads a scratch database, then waits to swap it in whole.
    then = (
        "The target may be partly restored: restore again once the lock is released"
        if server_url.startswith("postgresql")
        else "The target is as it was: restore again once the lock is released"
    )
    assert then in step.error, step.error
    assert took < 15, took


def test_the_restore_shows_the_lock_wait_it_runs_with(home, mysql_url):
    """A MariaDB restore loads a scratch database, then swaps it in with a session whose
    lock wait is the restore's, and the prompt shows that setting exactly."""
    config, backup_id = backed_up(home, mysql_url, validated=False)
    asked = []

    def ask(request):
        asked.append(request)
        return "no"

    commands.restore(
        config, backup_id, "db", replace=True, approver=Prompting(ask=ask), lock_wait=90
    )
    [request] = asked
    shown = " ".join(request.sql)
    assert "SET SESSION lock_wait_timeout = 90" in request.sql, shown
    assert "-- RENAME TABLE " in shown, shown
