"""A worker's SIGTERM that comes before its task's run has its own signal handling in
place stops the run all the same, at its start, resumably: Celery's warm shutdown does
not wait for the whole run.

The task is held where the run cannot yet have its handlers: the state store is busy
(another process holds its write transaction) when the run is to be recorded, or the
target's file is locked by another process when the run is planned. The SIGTERM
comes there; once released, the run ends interrupted (not completed) and its task goes
back to the queue.

With `--concurrency 2` the run is in a pool's child, which a SIGTERM to the worker's
main process (`kill PID`) does not reach: the worker tells it, and it stops so too.

Before, Celery's handler alone took that SIGTERM: the warm shutdown waited while the
whole run went on, and the run ended completed."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import Config
from tests.conftest import EditConfig
from tests.fleet.queues import delete_queue, running_worker
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home
from tests.helpers import state_store_busy


def _received(home: Path, worker: subprocess.Popen[bytes]) -> None:
    """Waits until the worker has taken the task off the queue."""
    deadline = time.monotonic() + 60
    log = home / "worker.log"
    while "run_target[" not in log.read_text() or " received" not in log.read_text():
        assert worker.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _stopped_before_its_run(
    home: Path,
    config: Config,
    hold: AbstractContextManager[None],
    target: str,
    concurrency: int = 1,
) -> None:
    sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, target)
    try:
        with ExitStack() as holding:
            # Held before the worker starts: its task cannot reach its run's signal block.
            holding.enter_context(hold)
            with running_worker(home, "--concurrency", str(concurrency), stop_wait=30) as worker:
                _received(home, worker)
                time.sleep(1.0)  # in the task, held before its run's signal block
                worker.send_signal(signal.SIGTERM)
                time.sleep(1.0)  # Celery's handler runs as soon as Python runs again
                holding.close()
                assert worker.wait(60) == 0, (home / "worker.log").read_text()
        (row,) = commands.fleet_summary(config, sent["fleet_id"])["runs"]
        log = (home / "worker.log").read_text()
        assert row["status"] == "interrupted", (row, log)
        assert "the worker's shutdown" in row["error"]
        assert f"aishell resume {row['run_id']}" in row["error"]
        # Sent back to the queue: the next worker resumes it.
        assert "again in" in log
    finally:
        delete_queue(config)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_sigterm_while_the_run_is_recorded_stops_it_at_its_start(
    edit_config: EditConfig, home: Path, demo_db: Path, concurrency: int
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    config = edit_config({"state": {"busy_timeout_ms": 120_000}})
    _stopped_before_its_run(home, config, state_store_busy(config), "demo", concurrency)


@contextmanager
def _target_locked(path: Path) -> Iterator[None]:
    """Another process's exclusive lock on the target's file: planning's first read of
    it waits for the block's end (the target's busy timeout is longer)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


def test_a_sigterm_while_the_run_is_planned_stops_it_at_its_start(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    config = edit_config({"targets": {"demo": {"busy_timeout_ms": 120_000}}})
    _stopped_before_its_run(home, config, _target_locked(demo_db), "demo")
