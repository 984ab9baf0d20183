"""A fleet run a person stops with `aishell stop`, or that reaches its run-time limit,
stays stopped: its task ends, `fleet run --wait` waits no more and `fleet show` says
why, and only `aishell fleet resend` (or its schedule's next trigger) resumes it.

Before, the task went back to the queue as for a worker's shutdown, and the run was
resumed two seconds later (its time limit anew): neither stop stopped anything."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.commands.fleet import watch_fleet
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.fleet.sending import sent_with
from tests.conftest import EditConfig
from tests.fleet.queues import running_worker
from tests.fleet.schedules_on_queue import fleet_on_redis, rows

# Ten rows a batch, 0.3 s apart: a purge that lasts minutes.
SLOW_PURGE = {
    "table": "app_logs",
    "retention_days": 145,
    "batch_size": 10,
    "max_batch_size": 10,
    "sleep_ms": 300,
}


def _run_of(config: Config, fleet_id: str, status: str) -> dict[str, Any]:
    """The fleet job's one row, once its run is `status` (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        (row,) = commands.fleet_summary(config, fleet_id)["runs"]
        if row["status"] == status or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


def _stays_interrupted(config: Config, fleet_id: str, demo_db: Path, why: str) -> None:
    summary = watch_fleet(config, fleet_id, 60, None)
    assert summary["going_on"] == 0, summary  # `fleet run --wait` ends
    (row,) = summary["runs"]
    assert row["status"] == "interrupted", row
    assert row["error"].startswith("its task ended on "), row
    assert why in row["error"] and f"aishell fleet resend {fleet_id}" in row["error"], row
    left = rows(demo_db)
    time.sleep(3)  # the queue would have resumed it within 0.2 s (slot_wait_seconds)
    (again,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert again["status"] == "interrupted" and rows(demo_db) == left, again


def test_a_fleet_run_a_person_stopped_is_not_resumed_by_the_queue(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    with fleet_on_redis(edit_config) as config, running_worker(home):
        sent = commands.fleet_run(config, "log_cleanup", SLOW_PURGE, "demo")
        row = _run_of(config, sent["fleet_id"], "running")
        commands.stop_run(config, row["run_id"])
        _stays_interrupted(config, sent["fleet_id"], demo_db, "stopped by ")
        # Its task delivered again, as after a worker lost before it acknowledged it.
        carried = sent_with(load_catalog(config), config.agent("log_cleanup"), config.main.targets)
        again = commands.run_fleet_target(config, sent["fleet_id"], "demo", carried)
        assert again == "interrupted"
        (row,) = commands.fleet_summary(config, sent["fleet_id"])["runs"]
        assert row["status"] == "interrupted" and row["delivery_refused"] is not None, row
        # A resend is a person's word to go on: the run is resumed, not started anew.
        commands.fleet_resend(config, sent["fleet_id"])
        resumed = _run_of(config, sent["fleet_id"], "running")
        assert resumed["run_id"] == row["run_id"] and resumed["delivery_refused"] is None
        commands.stop_run(config, row["run_id"])
        _stays_interrupted(config, sent["fleet_id"], demo_db, "with `aishell stop`")


def test_a_fleet_run_at_its_time_limit_is_not_resumed_by_the_queue(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    with fleet_on_redis(edit_config) as config, running_worker(home):
        options = {"max_run_seconds": 4}
        sent = commands.fleet_run(config, "log_cleanup", SLOW_PURGE, "demo", options=options)
        _run_of(config, sent["fleet_id"], "running")
        _stays_interrupted(config, sent["fleet_id"], demo_db, "the run-time limit of 4 s")
