"""Faults a fleet worker meets on its target and its state store.

- A target server that accepts the connection and never answers: the task ends within
  the target's connect timeout, its target `not_started` with one line naming it, not
  a worker held for good.
- Two workers taking tasks for the same target at once: the run lock lets one run; the
  other's task goes back to the queue saying which run holds the database, and runs
  after it; each fleet job has one run, the state store is whole.
- `aishell fleet status --json` while another process holds a write transaction on
  state.db: it answers once its busy timeout has passed at the most, or says in one
  line that the store is busy, never a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.commands.fleet import watch_fleet
from aishell.state.faults import sqlite_path
from tests.conftest import EditConfig
from tests.faultproxy import Proxy, Silent, server_port, through
from tests.fleet.queues import delete_queue, running_worker
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home
from tests.helpers import state_store_busy

SILENT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere",
    "mysql": "mysql+pymysql://root@127.0.0.1:{port}/nowhere",
}
CONNECT_TIMEOUT = 2
READ_TIMEOUT = 3


@pytest.fixture
def silent() -> Iterator[Silent]:
    listener = Silent()
    yield listener
    listener.close()


@pytest.mark.parametrize("engine", sorted(SILENT_URLS))
def test_a_target_server_that_never_answers_ends_the_task_within_its_connect_timeout(
    edit_config: EditConfig, home: Path, demo_db: Path, silent: Silent, engine: str
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    url = SILENT_URLS[engine].format(port=silent.port)
    target = {"url": url, "connect_timeout_seconds": CONNECT_TIMEOUT}
    config = edit_config({"targets": {"mute": target}})
    try:
        with running_worker(home):
            deadline = time.monotonic() + 90
            sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, "mute")
            summary = watch_fleet(config, sent["fleet_id"], 90, None)
            assert time.monotonic() < deadline
    finally:
        delete_queue(config)
    (row,) = summary["runs"]
    log = (home / "worker.log").read_text()
    assert row["status"] == "not_started", (row, log)
    assert "'mute'" in row["error"] and len(row["error"].splitlines()) == 1, row
    assert "Traceback" not in log


def _received(home: Path, name: str, count: int) -> None:
    deadline = time.monotonic() + 60
    log = home / name
    while log.read_text().count("run_target[") < count:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_two_workers_taking_tasks_for_the_same_target_at_once_run_one_after_the_other(
    edit_config: EditConfig, home: Path, demo_db: Path, tmp_path: Path
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    config = edit_config({"state": {"busy_timeout_ms": 120_000}})
    first = commands.fleet_run(config, "maintenance", {"type": "quick"}, "demo")
    second = commands.fleet_run(config, "maintenance", {"type": "quick"}, "demo")
    other = tmp_path / "other"
    other.mkdir()
    try:
        with running_worker(home), running_worker(home, log_folder=other):
            # Both held at the state store until both have their task, then let go at once.
            with state_store_busy(config):
                _received(home, "worker.log", 1)
                _received(other, "worker.log", 1)
                time.sleep(0.5)
            done = [watch_fleet(config, f["fleet_id"], 90, None) for f in (first, second)]
    finally:
        delete_queue(config)
    for summary in done:
        (row,) = summary["runs"]
        assert row["status"] == "completed", (row, _logs(home, other))
    # Where they met (the second tried the database while the first held it, as the
    # machine's load allows or not), the one that found it taken said so plainly and
    # came back; either way their steps ran one run after the other.
    waited = [line for line in _logs(home, other).splitlines() if ": again in " in line]
    said = "is locked for maintenance: its database is in use by"
    assert all(said in line for line in waited), waited
    path = sqlite_path(config.state_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        spans = conn.execute(
            "SELECT min(s.started_at), max(s.finished_at) FROM runs r "
            "JOIN steps s ON s.run_id = r.run_id WHERE r.target = 'demo' "
            "GROUP BY r.run_id ORDER BY 1"
        ).fetchall()
    assert len(spans) == 2
    (_, first_ended), (second_began, _) = spans
    assert first_ended <= second_began, spans


def _logs(home: Path, other: Path) -> str:
    return (home / "worker.log").read_text() + (other / "worker.log").read_text()


@pytest.mark.parametrize("busy_ms", [10_000, 1_000])
def test_fleet_status_while_the_state_store_is_written_waits_or_says_so(
    edit_config: EditConfig, home: Path, demo_db: Path, busy_ms: int
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    config = edit_config({"state": {"busy_timeout_ms": busy_ms}})
    with state_store_busy(config):
        status = subprocess.run(
            [sys.executable, "-m", "aishell", "fleet", "status", "--json"],
            env={**os.environ, "AISHELL_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "Traceback" not in status.stderr, status.stderr
    if status.returncode == 0:
        found = json.loads(status.stdout)
        assert {t["target"] for t in found["targets"]} >= {"demo", "second", "third"}
    else:
        assert len(status.stderr.strip().splitlines()) == 1, status.stderr
        assert "busy" in status.stderr or "locked" in status.stderr, status.stderr


def test_a_target_server_that_stops_answering_mid_run_ends_the_task_within_its_limits(
    edit_config: EditConfig, home: Path, demo_db: Path, pg_url: str
) -> None:
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY, note text)"))
        conn.execute(text("INSERT INTO orders SELECT g, 'x' FROM generate_series(1, 100) g"))
    engine.dispose()
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    proxy = Proxy(server_port(pg_url))
    target = {
        "url": through(proxy.port, pg_url),
        "connect_timeout_seconds": CONNECT_TIMEOUT,
        "read_timeout_seconds": READ_TIMEOUT,
    }
    config = edit_config({"targets": {"pg": target}})
    try:
        # The step's ANALYZE never reaches the server, and nothing more answers.
        proxy.freeze_once_held(b"ANALYZE")
        with running_worker(home):
            sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, "pg")
            assert proxy.held_once.wait(60), (home / "worker.log").read_text()
            frozen = time.monotonic()
            _task_ended(home, 60)
            took = time.monotonic() - frozen
    finally:
        delete_queue(config)
        proxy.close()
    (row,) = commands.fleet_summary(config, sent["fleet_id"])["runs"]
    log = (home / "worker.log").read_text()
    assert row["status"] in ("interrupted", "failed"), (row, log)
    assert "pg" in row["error"] and len(row["error"].splitlines()) == 1, row
    assert took < READ_TIMEOUT + 2 * CONNECT_TIMEOUT + 20, log


def _task_ended(home: Path, seconds: float) -> None:
    """Waits until the worker says a task ended: on an error, or sent back to the queue
    for later (its run left unfinished on a server that answers nothing, to be resumed
    once it answers)."""
    deadline = time.monotonic() + seconds
    log = home / "worker.log"
    ends = (" raised ", " succeeded in ", " retry: Retry in ")
    while not any(end in log.read_text() for end in ends):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
