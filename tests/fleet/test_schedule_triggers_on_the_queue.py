"""A schedule served with `schedule serve --fleet` keeps the rules of a trigger that
runs its job itself (run_schedule): its fleet job's run is the schedule's; while its
last run waits for approval a trigger sends nothing and notifies the waiting run again;
a run of it left unfinished is resumed by the next trigger (its fleet job's task sent
again) instead of a new run beside it; and while its last fleet job is still queued,
nothing more is sent.

Before, every trigger sent a new fleet job: unapproved runs piled up night after
night, an interrupted one was never taken up, and a trigger sent while no worker
answered stacked another job behind the last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.commands.tools import load_catalog
from aishell.fleet.sending import sent_with
from aishell.state.fleet import RESENT
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.fleet.queues import running_worker
from tests.fleet.schedules_on_queue import (
    add_schedule,
    fleet_ids,
    fleet_on_redis,
    only_fleet_job,
    rows,
    trigger,
)
from tests.scheduling.test_scheduler_owns import notify_script

STRICT_PURGE = (
    "log-cleanup",
    "--table",
    "app_logs",
    "--retention-days",
    "150",
    "--safety-level",
    "strict",
)
# Twenty rows a batch, 0.3 s apart: the small demo's 563 rows past the retention in
# about 29 batches, a run long enough to be killed in the middle with seconds to spare,
# and half the wait for the worker that resumes the rest.
SLOW_PURGE = (
    "log-cleanup",
    "--table",
    "app_logs",
    "--retention-days",
    "145",
    "--batch-size",
    "20",
    "--max-batch-size",
    "20",
    "--sleep-ms",
    "300",
)
# The schedule run now, as `schedule serve` without --fleet runs its trigger, in a
# process of its own.
RUN_NOW = (
    "import sys\n"
    "from aishell.commands.schedules import run_schedule\n"
    "from aishell.config.models import load_config\n"
    "run_schedule(load_config(), sys.argv[1])\n"
)
# A fleet task as a worker runs it, in a process of its own.
TASK = (
    "import json, sys\n"
    "from aishell.commands.fleet import run_fleet_target\n"
    "from aishell.config.models import load_config\n"
    "run_fleet_target(load_config(), sys.argv[1], 'demo', json.loads(sys.argv[2]))\n"
)


def _killed_mid_purge(argv: list[str], home: Path, database: Path) -> None:
    """`python -c` argv in a process of its own, SIGKILLed once its purge deleted rows."""
    before = rows(database)
    process = subprocess.Popen(
        [sys.executable, "-c", *argv], env={**os.environ, "AISHELL_HOME": str(home)}
    )
    try:
        deadline = time.monotonic() + 60
        while rows(database) > before - 20:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)


def _runs(config) -> list[str]:
    with StateStore(config.state_url) as store:
        return [run["run_id"] for run in store.list_runs(limit=100)]


def test_a_trigger_while_the_last_run_waits_for_approval_sends_nothing_and_notifies(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    command, received = notify_script(home)
    edit_config({"notifications": {"command": command}})
    add_schedule(home, "strict-purge", *STRICT_PURGE)
    with fleet_on_redis(edit_config) as config, running_worker(home):
        trigger(config, "strict-purge")
        (row,) = only_fleet_job(config)["runs"]
        assert row["status"] == "waiting_approval", row
        # The worker's run is the schedule's, as serve's own run would be.
        (scheduled,) = commands.list_schedules(config)
        assert scheduled["last_run"]["run_id"] == row["run_id"], scheduled
        trigger(config, "strict-purge")
        trigger(config, "strict-purge")
        assert len(fleet_ids(config)) == 1
    assert _runs(config) == [row["run_id"]]
    told = [json.loads(line) for line in received.read_text().splitlines()]
    # Its outcome from the worker, then the waiting run again at each later trigger.
    assert [(m["run_id"], m["status"], m["schedule"]) for m in told] == [
        (row["run_id"], "waiting_approval", "strict-purge")
    ] * 3, told


def test_a_trigger_while_the_last_fleet_job_is_queued_sends_nothing_more(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    add_schedule(home, "quick", "maintenance", "--type", "quick")
    with fleet_on_redis(edit_config) as config:
        trigger(config, "quick")  # no worker yet: its task waits on the queue
        trigger(config, "quick")
        assert len(fleet_ids(config)) == 1
        with running_worker(home):
            (row,) = only_fleet_job(config)["runs"]
    assert row["status"] == "completed", row
    assert _runs(config) == [row["run_id"]]


def test_the_next_trigger_resumes_an_interrupted_run_instead_of_starting_another(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    add_schedule(home, "slow-purge", *SLOW_PURGE)
    with fleet_on_redis(edit_config) as config:
        trigger(config, "slow-purge")
        (fleet_id,) = fleet_ids(config)
        # Its task run by a worker killed in the middle of the purge.
        carried = sent_with(load_catalog(config), config.agent("log_cleanup"), config.main.targets)
        _killed_mid_purge([TASK, fleet_id, json.dumps(carried)], home, demo_db)
        (row,) = commands.fleet_summary(config, fleet_id)["runs"]
        assert row["status"] == "interrupted", row
        trigger(config, "slow-purge")
        assert fleet_ids(config) == [fleet_id]  # no second fleet job
        with StateStore(config.state_url) as store:
            resent = store._conn.execute(
                text("SELECT count(*) FROM events WHERE kind = :k"), {"k": RESENT}
            ).scalar()
            store._conn.rollback()
        assert resent == 1
        with running_worker(home):
            (done,) = only_fleet_job(config, 180)["runs"]
    assert done["status"] == "completed" and done["run_id"] == row["run_id"], done
    assert _runs(config) == [row["run_id"]]
    run = commands.show_run(config, row["run_id"])
    assert "run_resumed" in [event["kind"] for event in run["events"]]


def test_a_run_left_by_serve_without_fleet_is_resumed_by_the_next_fleet_trigger(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    add_schedule(home, "slow-purge", *SLOW_PURGE)
    with fleet_on_redis(edit_config) as config:
        # The schedule's run, by a scheduler that ran it itself, killed mid-purge.
        _killed_mid_purge([RUN_NOW, "slow-purge"], home, demo_db)
        left = commands.list_schedules(config)[0]["last_run"]["run_id"]
        assert commands.show_run(config, left)["status"] == "interrupted"
        trigger(config, "slow-purge")
        (fleet_id,) = fleet_ids(config)
        (row,) = commands.fleet_summary(config, fleet_id)["runs"]
        assert row["run_id"] == left, row  # the fleet job took it
        trigger(config, "slow-purge")  # its task sent again, no second fleet job
        assert fleet_ids(config) == [fleet_id]
        with running_worker(home):
            (done,) = only_fleet_job(config, 180)["runs"]
    assert done["status"] == "completed" and done["run_id"] == left, done
    assert _runs(config) == [left]
