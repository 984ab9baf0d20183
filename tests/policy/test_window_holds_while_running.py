"""The maintenance window's end holds while a step runs, not only at its start.

A step is started inside the window when it is expected to end before the window
closes: expected from the median of earlier runs, or from the table's size. What it
really takes may be longer (a lock it waits for, a table grown since, a slower server),
so the window's end is the step's deadline too: a step still running when the window
closes is cancelled there, and fails naming the window (a resume runs it again in the
next window). PostgreSQL, MariaDB and SQLite: a rebuild held behind another session's
lock, which the target's lock wait lets it wait for past the window's end."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, read_yaml, run_sql, use_target, write_yaml

# The window (hours 1-3 UTC) closes this many seconds after the run's clock.
LEFT = 3
# How long another session holds the table: well past the window's end.
HELD = 12


def _clock() -> datetime:
    return datetime(2026, 11, 17, 3, 59, 60 - LEFT, tzinfo=UTC)


def _windowed(home: Path, url: str, wait: str = "lock_timeout_ms") -> Config:
    """The target at `url`, waiting up to a minute for a lock (`wait`); the maintenance
    agent with a window that closes LEFT seconds after the clock."""
    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = read_yaml(path)
    data["targets"]["db"][wait] = 60_000
    write_yaml(path, data)
    agent_path = home / "config" / "agents" / "maintenance.yaml"
    agent = yaml.safe_load(agent_path.read_text())
    window = {"type": "maintenance_window", "allowed_hours": [1, 2, 3], "timezone": "UTC"}
    agent["maintenance_agent"]["safety_constraints"] = [window]
    agent_path.write_text(yaml.safe_dump(agent))
    return load_config(home=home)


def _held(url: str, lock: str, ready: threading.Event) -> None:
    """Another session locks the table in a transaction it keeps open for HELD seconds."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(lock))
            ready.set()
            time.sleep(HELD)
            conn.rollback()
    finally:
        engine.dispose()


def _rebuild_past_the_window(home: Path, url: str, dialect: str, table: str, lock: str) -> None:
    config = _windowed(home, url)
    ready = threading.Event()
    holder = threading.Thread(target=_held, args=(url, lock, ready), daemon=True)
    holder.start()
    assert ready.wait(30)
    _stopped_at_the_window(config, dialect, table, holder)


def _stopped_at_the_window(
    config: Config, dialect: str, table: str, holder: threading.Thread
) -> None:
    """A rebuild of `table`, held behind the lock `holder` keeps, ends when the window
    closes, failed and naming the window, not when the lock is let go."""
    params = {"tables": [table], "fragmentation_threshold": 0}
    plan = one_step_plan("maintenance", "db", dialect, "optimize_table", params)
    started = time.monotonic()
    result = commands.apply_plan(config, plan, approver=PreApproved(), clock=_clock)
    took = time.monotonic() - started
    holder.join()
    step = result.steps[0]
    assert result.status == "failed", (result.status, step.status, step.error)
    assert step.status == "failed"
    assert "the maintenance window closes at 04:00 UTC" in (step.error or ""), step.error
    assert took < HELD, took


def test_postgresql_rebuild_stops_when_the_window_closes(home: Path, pg_url: str) -> None:
    table = f"win_{uuid.uuid4().hex[:8]}"
    run_sql(
        pg_url,
        f"CREATE TABLE {table} (id int PRIMARY KEY, body text)",
        f"INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g",
        f"DELETE FROM {table} WHERE id % 2 = 0",
    )
    # What a VACUUM, plain or FULL, and an ANALYZE wait for.
    lock = f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE"
    _rebuild_past_the_window(home, pg_url, "postgresql", table, lock)


def test_mariadb_rebuild_stops_when_the_window_closes(home: Path, mysql_url: str) -> None:
    table = f"win_{uuid.uuid4().hex[:8]}"
    run_sql(
        mysql_url,
        f"CREATE TABLE {table} (id int PRIMARY KEY, body varchar(200)) ENGINE=InnoDB",
        f"INSERT INTO {table} SELECT seq, repeat('x', 100) FROM seq_1_to_2000",
        f"DELETE FROM {table} WHERE id % 2 = 0",
    )
    # The metadata lock a read in an open transaction keeps, which a rebuild waits for.
    _rebuild_past_the_window(home, mysql_url, "mysql", table, f"SELECT count(*) FROM {table}")


def test_sqlite_vacuum_stops_when_the_window_closes(home: Path, tmp_path: Path) -> None:
    path = tmp_path / f"win_{uuid.uuid4().hex[:8]}.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, "x" * 100) for i in range(2000)])
    conn.execute("DELETE FROM notes WHERE id % 2 = 0")
    conn.commit()
    conn.close()
    url = f"sqlite:///{path}"
    config = _windowed(home, url, "busy_timeout_ms")
    ready = threading.Event()
    holder = threading.Thread(target=_sqlite_held, args=(path, ready), daemon=True)
    holder.start()
    assert ready.wait(30)
    # SQLite's wait for a busy file goes on in slices, each followed by a look for the
    # window's end (targets/sqlitewait.py): the VACUUM is stopped while it waits.
    _stopped_at_the_window(config, "sqlite", "notes", holder)


def _sqlite_held(path: Path, ready: threading.Event) -> None:
    """Another process's writer: the file's write lock, kept HELD seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(HELD)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
