"""A worker runs each task in a child of its pool, one at a time by default, so that its
own process keeps the broker's connection alive while the run goes on.

Before, a worker of one task at a time ran it in its own process (Celery's solo pool),
which answers no heartbeat while a task runs: RabbitMQ closed its connection after a
minute or two of any longer run ("missed heartbeats from client") and delivered the
task again while the run went on, a run a person had stopped meanwhile resumed by it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from aishell import commands
from aishell.commands.fleet import watch_fleet
from aishell.state.faults import sqlite_path
from tests.conftest import EditConfig
from tests.fleet.queues import delete_queue, running_worker
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_worker_runs_its_task_in_a_child_and_keeps_the_broker_itself(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    config = fleet_home(edit_config, home, demo_db, broker_at("rabbitmq", BROKERS["rabbitmq"][1]))
    try:
        with running_worker(home) as worker:
            sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, "demo")
            summary = watch_fleet(config, sent["fleet_id"], 90, None)
            ((status, run_id),) = [(r["status"], r["run_id"]) for r in summary["runs"]]
            assert status == "completed", summary
            with closing(sqlite3.connect(sqlite_path(config.state_url))) as store:
                (pid,) = store.execute(
                    "SELECT pid FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            # The run's process is a child of the worker, alive and waiting for the next.
            assert pid != worker.pid and _parent(pid) == worker.pid
    finally:
        delete_queue(config)
