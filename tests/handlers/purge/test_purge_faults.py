"""Faults in the middle of a purge, caused for real: SIGKILL of a running `aishell run
log-cleanup` (above all between a batch's delete and its checkpoint, and between its
checkpoint and its commit), a terminated backend, a server stopped and started again, a
server too busy to wait for. After each, `aishell resume` leaves every old row deleted
once and archived once, and no step that had succeeded runs again. (A batch's COMMIT
held on its way past the kill, and the other points of a batch on the servers:
tests/handlers/purge/test_exactly_once.py.)"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
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
from aishell.config.models import Config, load_config
from aishell.executor import RunResult
from aishell.targets.locks import run_lock_name
from tests.private_servers import private_mariadb, private_postgresql

ROWS = 600
# Row i is (i * 7919) % DAYS days old (and some seconds): old and new rows are mixed
# along the key, and every row of the first batch (ids 1 to 10) is older than RETENTION.
DAYS = 45
RETENTION = 30
FIRST_OLD_ROW = 1
# Ten keys a batch (from its first old row), however long a batch takes: 28 batches
# (two in each run of 15 old ids), each a kill point.
BATCHES = {"batch_size": 10, "max_batch_size": 10, "max_batch_ms": 60_000}
SERVER_NOW = {
    "postgresql": "SELECT localtimestamp",
    "mysql": "SELECT NOW(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}
# The statements that do a batch's work (delete, and archive into a table), as the
# audit records them: what was sent, committed or not. (Catalog reads of the step's
# estimate begin with WITH RECURSIVE: not a batch's.)
WORK = ("DELETE", "WITH AISHELL_GONE", "INSERT")


# --- the table, the target and the run -----------------------------------------------------


def _events(metadata: MetaData, name: str, keyed: bool = True) -> Table:
    # The archive table has no key: a row archived twice shows as two rows.
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=keyed, autoincrement=False, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("payload", String(64), nullable=False),
    )


def fill(url: str) -> dict[int, datetime]:
    """The events table (and an empty events_archive); returns each row's date."""
    engine = create_engine(url)
    metadata = MetaData()
    events = _events(metadata, "events")
    _events(metadata, "events_archive", keyed=False)
    with engine.begin() as conn:
        metadata.create_all(conn)
        now = conn.execute(text(SERVER_NOW[engine.dialect.name])).scalar_one()
        if isinstance(now, str):
            now = datetime.fromisoformat(now)
        values = [
            {
                "id": i,
                "created_at": now
                - timedelta(days=(i * 7919) % DAYS, seconds=(i * 104_729) % 86_000 + 30),
                "payload": f"event {i}",
            }
            for i in range(1, ROWS + 1)
        ]
        conn.execute(insert(events), values)
    engine.dispose()
    return rows_of(url)


def rows_of(url: str) -> dict[int, datetime]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = {r.id: r.created_at for r in conn.execute(select(_events(MetaData(), "events")))}
    engine.dispose()
    return found


@dataclass
class Purge:
    """One purge under test: its target, its archive and the rows it started with."""

    home: Path
    url: str
    dialect: str
    archive: str | None
    before: dict[int, datetime]

    @property
    def config(self) -> Config:
        return load_config(home=self.home)

    @property
    def archive_file(self) -> Path:
        return self.home / "archive" / "events.jsonl"

    def job(self, **extra: Any) -> dict[str, Any]:
        job: dict[str, Any] = {
            "table": "events",
            "date_column": "created_at",
            "retention_days": RETENTION,
            **BATCHES,
            **extra,
        }
        if self.archive == "file":
            job["archive_to"] = f"file:{self.archive_file}"
        elif self.archive == "table":
            job["archive_to"] = "table:events_archive"
        return job

    def cli_args(self, **extra: Any) -> list[str]:
        args = ["run", "log-cleanup", "--non-interactive"]
        for key, value in self.job(**extra).items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def archived_ids(self) -> list[int]:
        if self.archive == "file":
            if not self.archive_file.exists():
                return []
            return [json.loads(line)["id"] for line in self.archive_file.read_text().splitlines()]
        engine = create_engine(self.url)
        with engine.connect() as conn:
            archived = _events(MetaData(), "events_archive", keyed=False)
            ids = [r.id for r in conn.execute(select(archived.c.id))]
        engine.dispose()
        return ids


def _point_at(home: Path, url: str, **purge: Any) -> None:
    """The shipped config with `url` as the default target `db`; locks are waited for
    long enough that a test holding one decides when a batch goes on."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", "lock_timeout_ms": 30_000}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    if purge:
        path = home / "config" / "agents" / "log_cleanup.yaml"
        data = yaml.safe_load(path.read_text())
        data["log_cleanup_agent"]["purge"].update(purge)
        path.write_text(yaml.safe_dump(data))


@contextmanager
def _scratch(dialect: str, home: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{home / f'logs-{uuid.uuid4().hex[:8]}.db'}"
        return
    from tests.services import scratch_server

    with scratch_server(dialect) as url:
        yield url


@contextmanager
def purge_on(dialect: str, archive: str | None, home: Path, **purge: Any) -> Iterator[Purge]:
    with _scratch(dialect, home) as url:
        before = fill(url)
        _point_at(home, url, **purge)
        yield Purge(home, url, dialect, archive, before)


def assert_exactly_once(purge: Purge, result: RunResult) -> None:
    """Every row older than the run's cutoff deleted, counted and archived once; no
    other row touched."""
    assert result.status == "completed", result.error
    cutoff = datetime.fromisoformat(result.steps[0].output["cutoff"])
    gone = {i for i, at in purge.before.items() if at < cutoff}
    assert 0 < len(gone) < ROWS
    assert set(rows_of(purge.url)) == set(purge.before) - gone
    output = result.steps[1].output
    assert output["complete"] and output["rows_deleted"] == len(gone)
    assert result.steps[2].output["older_rows"] == 0
    if purge.archive:
        archived = purge.archived_ids()
        assert len(archived) == len(gone), f"{len(archived) - len(gone)} rows archived twice"
        assert set(archived) == gone


# --- what the run has recorded (read-only looks at its state.db) -----------------------------


class StateLook:
    def __init__(self, home: Path) -> None:
        self.path = home / "state.db"

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # the store is still being made
            return []
        finally:
            conn.close()

    def run_id(self) -> str | None:
        rows = self._rows("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    def progress(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        rows = self._rows(
            "SELECT progress, updated_at FROM step_progress WHERE run_id = ? AND step_idx = 1",
            run_id,
        )
        return (json.loads(rows[0][0]), rows[0][1]) if rows else (None, None)

    def statements(self, run_id: str, step: int) -> list[str]:
        rows = self._rows(
            "SELECT sql FROM statements WHERE run_id = ? AND step_idx = ? ORDER BY id",
            run_id,
            step,
        )
        return [r[0] for r in rows]

    def wait(
        self,
        ready: Callable[[], bool],
        proc: subprocess.Popen[bytes],
        what: str,
        may_end: bool = False,
    ) -> bool:
        """Wait until ready; False when, with may_end, the run ended well on its own
        first (a resumed purge with little left can finish before its next checkpoint)."""
        deadline = time.monotonic() + 90
        while not ready():
            if proc.poll() is not None:
                if may_end and proc.returncode == 0:
                    return False
                pytest.fail(f"the run ended ({proc.returncode}) before {what}: {_log(self)}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after 90 s: {_log(self)}")
            time.sleep(0.02)
        return True


def _log(look: StateLook) -> str:
    logs = sorted(look.path.parent.glob("aishell-*.log"))
    return logs[-1].read_text()[-2000:] if logs else ""


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A test that fails midway leaves no aishell process running on."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def aishell(home: Path, *args: str) -> subprocess.Popen[bytes]:
    """A real `aishell` process (killed with SIGKILL by the tests)."""
    log = open(home / f"aishell-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aishell", *args],
            cwd=home,
            env={**os.environ, "AISHELL_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()
    _STARTED.append(proc)
    return proc


def _kill(proc: subprocess.Popen[bytes], may_have_ended: bool = False) -> None:
    """SIGKILL; with may_have_ended, the process may also have ended well on its own
    first (a run's last batch can come between a checkpoint and a random kill)."""
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) in ((-signal.SIGKILL, 0) if may_have_ended else (-signal.SIGKILL,))


@contextmanager
def state_lock(home: Path) -> Iterator[None]:
    """The state store's write lock, held: the run stops at its next checkpoint (or
    audit row) until it is let go; reading the store still works."""
    conn = sqlite3.connect(home / "state.db", timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _resume_and_check(purge: Purge, run_id: str) -> RunResult:
    look = StateLook(purge.home)
    counted = look.statements(run_id, 0)
    result = commands.resume_run(purge.config, run_id)
    assert_exactly_once(purge, result)
    # The count that had succeeded is not run again: its cutoff stands.
    assert look.statements(run_id, 0) == counted
    assert result.steps[0].attempts == 1
    assert result.steps[1].output["resumed"]
    return result


# --- SIGKILL between a batch's delete and its checkpoint ------------------------------------


@contextmanager
def first_batch_held(purge: Purge) -> Iterator[Callable[[], None]]:
    """Another session holds the lock the first batch needs (SQLite: the database's
    write lock; a server: the first old row); yields the function that lets it go."""
    if purge.dialect == "sqlite":
        path = make_url(purge.url).database
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                conn.execute("ROLLBACK")
                released = True

        try:
            yield release
        finally:
            release()
            conn.close()
        return
    engine = create_engine(purge.url)
    with engine.connect() as conn:
        conn.execute(text("SELECT id FROM events WHERE id = :i FOR UPDATE"), {"i": FIRST_OLD_ROW})
        try:
            yield conn.rollback
        finally:
            conn.rollback()
    engine.dispose()


@pytest.mark.parametrize(
    ("dialect", "archive"),
    [
        ("sqlite", "file"),
        ("sqlite", "table"),
        ("postgresql", "file"),
        ("postgresql", "table"),
        ("mysql", "table"),
    ],
)
def test_sigkill_in_the_first_batch_before_its_checkpoint_archives_each_row_once(
    home, dialect, archive
):
    """The first batch waits on a lock held here; with the state store's lock held too,
    the lock is let go: the batch deletes (and archives into a table) and stops at its
    checkpoint, where it is killed. Nothing reached the archive file: its bytes are
    written only after the checkpoint that says what they will be."""
    with purge_on(dialect, archive, home) as purge:
        look = StateLook(home)
        with first_batch_held(purge) as release:
            proc = aishell(home, *purge.cli_args())
            run_id = ""

            def waiting() -> bool:
                nonlocal run_id
                run_id = look.run_id() or ""
                sent = look.statements(run_id, 1) if run_id else []
                return any(sql.lstrip().upper().startswith(WORK) for sql in sent)

            look.wait(waiting, proc, "a first batch waiting for its lock")
            with state_lock(home):
                release()
                time.sleep(0.3)  # the delete runs; its checkpoint cannot come
                _kill(proc)
        progress = look.progress(run_id)[0] or {}
        assert not progress.get("batches") and not progress.get("pending")
        if archive == "file":
            assert purge.archive_file.stat().st_size == 0
        _resume_and_check(purge, run_id)


# --- SIGKILL after the checkpoint, before the commit; at random moments ----------------------


@contextmanager
def commits_held(path: str) -> Iterator[sqlite3.Connection]:
    """A read transaction on a SQLite database: a writer there can write but not commit
    (not even a batch that deleted nothing). Reads through it see what was committed.

    Taken the moment a commit in progress ends: SQLite's own busy wait sleeps up to
    100 ms at a time, long enough for a fast purge to run several batches."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM events").fetchone()
                break
            except sqlite3.OperationalError:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def _commit_waits(purge: Purge, look: StateLook, run_id: str, held: sqlite3.Connection) -> bool:
    """The checkpointed batch deleted rows, and they are still there: it has not
    committed, and with commits held it waits for its commit."""
    progress, _ = look.progress(run_id)
    pending = (progress or {}).get("pending") or {}
    if not progress or not pending.get("rows"):
        return False
    cutoff = datetime.fromisoformat(progress["cutoff"])
    old = [
        i
        for i, at in purge.before.items()
        if progress["last_key"] < i <= pending["upper"] and at < cutoff
    ]
    marks = ", ".join("?" * len(old))
    left = held.execute(f"SELECT count(*) FROM events WHERE id IN ({marks})", old).fetchone()
    return bool(old) and left[0] == len(old)


@pytest.mark.parametrize("archive", ["file", "table"])
def test_sigkill_before_the_commit_twice_running_archives_each_row_once(home, archive):
    """Killed after a batch's checkpoint and before its commit, then again in the first
    batch of the resumed run: the second resume still cuts the archive file back to
    exactly the rows whose batches committed."""
    with purge_on("sqlite", archive, home) as purge:
        look = StateLook(home)
        database = make_url(purge.url).database
        # Batches of 45 keys: each holds 15 old rows, so every batch caught waiting for
        # its commit has deleted some (with 10 keys, most batches delete none).
        args = purge.cli_args(batch_size=45, max_batch_size=45)
        proc: subprocess.Popen[bytes] | None = None
        run_id = ""
        # Commits are held from before the run starts and let go one at a time: a fast
        # purge cannot run ahead of the test. Let go, the waiting commit goes through and
        # the hold is taken again the moment it ends, before the next batch commits.
        for _ in range(100):
            with commits_held(database) as held:
                if proc is None:
                    proc = aishell(home, *args)
                    look.wait(lambda: bool(look.run_id()), proc, "a run")
                    run_id = look.run_id() or ""
                # Held for a second at most: the run's lock wait must not run out.
                until = time.monotonic() + 1
                while time.monotonic() < until and not _commit_waits(purge, look, run_id, held):
                    time.sleep(0.02)
                progress = look.progress(run_id)[0] or {}
                if progress.get("batches", 0) >= 2 and _commit_waits(purge, look, run_id, held):
                    _kill(proc)
                    break
            assert proc.poll() is None, "the purge ended before a commit was caught waiting"
        else:
            pytest.fail("no batch was caught waiting for its commit")
        killed_at, stamp = look.progress(run_id)
        assert killed_at is not None and killed_at["pending"]["rows"] > 0

        with commits_held(database) as held:
            proc = aishell(home, "resume", run_id, "--non-interactive")

            def redone() -> bool:
                return look.progress(run_id)[1] != stamp and _commit_waits(
                    purge, look, run_id, held
                )

            look.wait(redone, proc, "the resumed run's first commit waiting")
            _kill(proc)
        again, _ = look.progress(run_id)
        assert again is not None and again["batches"] == killed_at["batches"]
        _resume_and_check(purge, run_id)


@pytest.mark.parametrize(("dialect", "archive"), [("postgresql", "table"), ("mysql", "file")])
def test_sigkill_at_random_moments_of_a_run_and_its_resumes(home, dialect, archive):
    with purge_on(dialect, archive, home) as purge:
        look = StateLook(home)
        proc = aishell(home, *purge.cli_args())
        look.wait(lambda: bool(look.run_id()), proc, "a run")
        run_id = look.run_id() or ""
        for attempt in range(2):
            _, stamp = look.progress(run_id)
            checkpointed = look.wait(
                lambda stamp=stamp: look.progress(run_id)[1] != stamp,
                proc,
                "a checkpoint",
                may_end=True,
            )
            if checkpointed:
                time.sleep(random.uniform(0, 0.2))
            _kill(proc, may_have_ended=True)
            if commands.show_run(purge.config, run_id)["status"] == "completed":
                break  # the kill came after the last batch
            if attempt == 0:
                proc = aishell(home, "resume", run_id, "--non-interactive")
        run = commands.show_run(purge.config, run_id)
        if run["status"] != "completed":
            _resume_and_check(purge, run_id)
            return
        # The run ended before a kill landed: what it left is still exactly once.
        cutoff = datetime.fromisoformat(run["steps"][0]["output"]["cutoff"])
        gone = {i for i, at in purge.before.items() if at < cutoff}
        assert set(rows_of(purge.url)) == set(purge.before) - gone
        if purge.archive:
            assert sorted(purge.archived_ids()) == sorted(gone), "a row archived twice"


# --- a lost connection, a server stopped and started ------------------------------------------


def _after_batches(purge: Purge, batches: int, fault: Callable[[], None]) -> threading.Thread:
    """Cause fault once the running purge has checkpointed this many batches."""
    look = StateLook(purge.home)

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run_id = look.run_id()
            progress = look.progress(run_id)[0] if run_id else None
            if progress and progress.get("batches", 0) >= batches:
                fault()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _sessions_cut(purge: Purge) -> Callable[[], None]:
    """pg_terminate_backend / KILL of every aishell session on this scratch database
    but the run lock's (whose end stops the run: tests/targets/test_lease.py): other processes
    share the server. A purge still
    reconnecting after an earlier cut has none for a moment: the cut is tried again
    until it finds some, or the run ends (the test asserts what the run reported)."""
    database = make_url(purge.url).database

    def cut() -> None:
        deadline = time.monotonic() + 3
        while not cut_once() and time.monotonic() < deadline:
            time.sleep(0.05)

    def cut_once() -> bool:
        engine = create_engine(purge.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            if purge.dialect == "postgresql":
                killed = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'aishell' AND datname = :d "
                        "AND pid <> pg_backend_pid() AND pid NOT IN (SELECT pid FROM "
                        "pg_locks WHERE locktype = 'advisory' AND granted)"
                    ),
                    {"d": database},
                ).all()
            else:
                ids = conn.execute(
                    text(
                        "SELECT ID FROM information_schema.PROCESSLIST "
                        "WHERE DB = :d AND ID <> CONNECTION_ID() "
                        "AND ID <> COALESCE(IS_USED_LOCK(:lock), 0)"
                    ),
                    {"d": database, "lock": run_lock_name(conn)},
                ).all()
                for (session,) in ids:
                    with suppress(Exception):  # it may have ended on its own meanwhile
                        conn.execute(text(f"KILL {int(session)}"))
                killed = ids
        engine.dispose()
        return bool(killed)

    return cut


@pytest.mark.parametrize(
    ("dialect", "archive"),
    [("postgresql", "file"), ("postgresql", "table"), ("mysql", "table")],
)
def test_a_terminated_backend_is_reconnected_and_the_purge_goes_on(home, dialect, archive):
    with purge_on(dialect, archive, home) as purge:
        cut = _sessions_cut(purge)
        first = _after_batches(purge, 10, cut)
        second = _after_batches(purge, 16, cut)
        # The key walk's 28 batches (ten keys from each run of 15 old ids; PostgreSQL's
        # page walk has a few on 600 rows), a pause between them long enough that both
        # cuts come while the purge still has batches to go, however fast the server is
        # (a cut after it ends hits the next step, and the purge has nothing to
        # reconnect). A cut after batch 30, which never came, left the join waiting 5 s.
        job = purge.job(walk="keys", sleep_ms=20)
        result = commands.run_job(purge.config, "log_cleanup", job)
        first.join(5)
        second.join(5)
        assert_exactly_once(purge, result)
        assert result.steps[1].output["reconnects"] >= 1
        kinds = [e["kind"] for e in commands.show_run(purge.config, result.run_id)["events"]]
        assert "connection_lost" in kinds and "reconnected" in kinds


def test_a_server_restart_mid_purge_is_waited_out(home):
    with private_postgresql() as (url, stop, start):
        before = fill(url)
        _point_at(home, url)
        purge = Purge(home, url, "postgresql", "file", before)

        def restart() -> None:
            stop()
            time.sleep(0.5)
            start()

        fault = _after_batches(purge, 10, restart)
        # The key walk's 50 batches (PostgreSQL's page walk has a few on 600 rows), a
        # pause between them so that the restart comes while the purge has batches to go.
        job = purge.job(walk="keys", sleep_ms=20)
        result = commands.run_job(purge.config, "log_cleanup", job)
        fault.join(30)
        assert_exactly_once(purge, result)
        assert result.steps[1].output["reconnects"] >= 1


def test_a_server_gone_past_reconnect_seconds_stops_resumably(home):
    with private_postgresql() as (url, stop, start):
        before = fill(url)
        _point_at(home, url, reconnect_seconds=2)
        purge = Purge(home, url, "postgresql", "file", before)
        fault = _after_batches(purge, 10, stop)
        # The key walk's 28 batches (PostgreSQL's page walk has a few on 600 rows), a
        # pause between them so that the stop comes while the purge has batches to go.
        job = purge.job(walk="keys", sleep_ms=20)
        result = commands.run_job(purge.config, "log_cleanup", job)
        fault.join(30)

        assert result.status == "failed"
        error = result.steps[1].error or ""
        assert "\n" not in error
        assert error.startswith("lost the connection to the server (")
        assert "could not reconnect" in error and "reconnect_seconds: 2" in error
        assert f"`aishell resume {result.run_id}` goes on from there" in error
        assert "purge.reconnect_seconds" in error
        start()
        _resume_and_check(purge, result.run_id)


# --- a server busy for longer than the throttle waits -----------------------------------------


@contextmanager
def busy_server(admin_url: str, dialect: str, sessions: int) -> Iterator[Callable[[], None]]:
    """Sessions running a long sleep each (what the throttle counts as running queries);
    yields the function that starts them."""
    tag = f"busy_{uuid.uuid4().hex[:8]}"
    args = {"application_name": tag} if dialect == "postgresql" else {"program_name": tag}
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args=args)
    sleep = "SELECT pg_sleep(120)" if dialect == "postgresql" else "SELECT SLEEP(120)"
    threads: list[threading.Thread] = []

    def hold() -> None:
        with suppress(Exception), engine.connect() as conn:  # cancelled at the end
            conn.execute(text(sleep))

    def begin() -> None:
        for _ in range(sessions):
            threads.append(threading.Thread(target=hold, daemon=True))
            threads[-1].start()

    try:
        yield begin
    finally:
        with engine.connect() as conn:
            if dialect == "postgresql":
                conn.execute(
                    text(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :t AND pid <> pg_backend_pid()"
                    ),
                    {"t": tag},
                )
            else:
                for (session,) in conn.execute(
                    text(
                        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = :q AND DB = :d"
                    ),
                    {"q": sleep, "d": make_url(admin_url).database},
                ).all():
                    with suppress(Exception):
                        conn.execute(text(f"KILL QUERY {int(session)}"))
        for thread in threads:
            thread.join(30)
        engine.dispose()


def _busy_then_resume(purge: Purge, sessions: int) -> None:
    with busy_server(purge.url, purge.dialect, sessions) as begin:
        fault = _after_batches(purge, 10, begin)
        # 150 ms between batches: the 18 batches after the 10th take at least 2.7 s,
        # time for the busy sessions to connect and for two of the throttle's checks (one
        # a second): at 50 ms, a quick server finished first, now and then. The key
        # walk's 28 batches (PostgreSQL's page walk has a few on 600 rows).
        job = purge.job(sleep_ms=150, walk="keys")
        result = commands.run_job(purge.config, "log_cleanup", job)
        fault.join(5)
        assert result.status == "failed"
        error = result.steps[1].error or ""
        assert "\n" not in error
        assert error.startswith("the server stayed busy for "), error
        assert "queries running (limit" in error
        assert "the longest a purge waits (max_throttle_wait_seconds: 1)" in error
        assert f"`aishell resume {result.run_id}` goes on from there" in error
        assert "raise purge.max_throttle_wait_seconds" in error
        events = commands.show_run(purge.config, result.run_id)["events"]
        assert [e for e in events if e["kind"] == "throttle_gave_up"]
        done = StateLook(purge.home).progress(result.run_id)[0]
        assert done is not None and done["batches"] >= 10
    _resume_and_check(purge, result.run_id)


def test_a_busy_server_is_waited_for_at_most_the_bound_postgresql(home):
    # A server of its own: on the shared one, other processes' queries count too.
    with private_postgresql() as (url, _stop, _start):
        before = fill(url)
        _point_at(home, url, max_running_queries=2, max_throttle_wait_seconds=1)
        _busy_then_resume(Purge(home, url, "postgresql", None, before), sessions=4)


def test_a_busy_server_is_waited_for_at_most_the_bound_mysql(home):
    # A server of its own: on the shared one, other processes' queries count too, and
    # could keep the resume waiting as well.
    with private_mariadb() as (url, _stop, _start):
        before = fill(url)
        _point_at(home, url, max_running_queries=2, max_throttle_wait_seconds=1)
        _busy_then_resume(Purge(home, url, "mysql", None, before), sessions=4)
