"""A run whose worker died on another machine is shown interrupted, not running.

The worker runs on "another host": a UTS namespace of its own (`unshare --uts`), whose
hostname this machine's processes are not, so its pid cannot be looked at from here.
It says it is alive in the state store every few seconds (its beat, by the store's
clock): its run shows running while it beats, and interrupted in `fleet show`, `runs
list`, `fleet status` (the web view's reads) and the run itself once it was SIGKILLed
and its beat lapsed.

Before, a run stored running by a process of another host was always shown running: a
dead worker's run for hours, until its task was delivered again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.state.processes import BEAT_LAPSE_SECONDS, BEAT_SECONDS, this_host
from tests.conftest import EditConfig
from tests.fleet.schedules_on_queue import fleet_on_redis, rows

SLOW_PURGE = {
    "table": "app_logs",
    "retention_days": 100,  # about a third of the small demo table: 70 s at this pace
    "batch_size": 10,
    "max_batch_size": 10,
    "sleep_ms": 300,
}


def _shown(home: Path, config, fleet_id: str) -> dict[str, str]:
    """How each view shows the fleet job's one run."""
    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    listed = CliRunner().invoke(cli, ["--home", str(home), "runs", "list", "--json"])
    (run,) = json.loads(listed.stdout)["runs"]
    (target,) = commands.fleet_status(config)["targets"]
    return {
        "fleet show": row["status"],
        "runs list": run["status"],
        "fleet status": target["last_run"]["status"],
        "runs show": commands.show_run(config, row["run_id"])["status"],
    }


def test_a_run_whose_worker_was_killed_on_another_host_shows_interrupted(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs `unshare --uts` as root: a worker with a hostname of its own")
    other = f"aishell-test-{uuid.uuid4().hex[:8]}"
    assert other != this_host()
    with fleet_on_redis(edit_config) as config:
        edit_config({"targets": {"demo": {"tags": ["alone"]}}})
        named = f'hostname {other} && exec "$@"'  # `exec`: the worker is the process
        worker_argv = [sys.executable, "-m", "aishell", "worker", "--name", f"w-{other}@test"]
        with open(home / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                ["unshare", "--uts", "sh", "-c", named, "-", *worker_argv],
                env={**os.environ, "AISHELL_HOME": str(home)},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            before = rows(demo_db)
            sent = commands.fleet_run(config, "log_cleanup", SLOW_PURGE, "demo")
            fleet_id = sent["fleet_id"]
            deadline = time.monotonic() + 90
            while rows(demo_db) > before - 20:  # its purge well under way
                assert worker.poll() is None, (home / "worker.log").read_text()
                assert time.monotonic() < deadline, (home / "worker.log").read_text()
                time.sleep(0.1)
            (row,) = commands.fleet_summary(config, fleet_id)["runs"]
            assert row["host"] == other, row
            # Beating, it is shown running, past a lapse's length too.
            time.sleep(BEAT_LAPSE_SECONDS + BEAT_SECONDS)
            assert set(_shown(home, config, fleet_id).values()) == {"running"}
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
        left = rows(demo_db)
        deadline = time.monotonic() + BEAT_LAPSE_SECONDS + 3 * BEAT_SECONDS
        while set(_shown(home, config, fleet_id).values()) != {"interrupted"}:
            assert time.monotonic() < deadline, _shown(home, config, fleet_id)
            time.sleep(0.5)
    assert rows(demo_db) == left  # nothing ran on after the kill
