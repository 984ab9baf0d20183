"""A trigger of `schedule serve --fleet` makes one fleet job, however often it fires.

The scheduler sends a trigger's job and then clears the trigger's mark (due.py); stopped
between the two (SIGTERM while the broker took the tasks and never answered, or a kill),
it finds the trigger due again when it starts. The fleet job is kept with the trigger's
key (the schedule and its due time) in one transaction: the trigger fired again finds
it and sends what of it has not begun, and the workers run one run. serve's stop line
says so.

Before, the trigger fired again sent a second fleet job: two runs of one trigger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aishell.scheduling import serve as scheduling
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.faultproxy import Proxy
from tests.fleet.queues import running_worker
from tests.fleet.schedules_on_queue import add_schedule, fleet_ids, fleet_on_redis, only_fleet_job
from tests.scheduling.test_schedules import due_now, wait_for


@contextmanager
def serving_fleet(home: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`aishell schedule serve --fleet` in a process of its own, its lines as they come;
    SIGTERM at the end if it still runs."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "aishell", "schedule", "serve", "--fleet"],
        env={**os.environ, "AISHELL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert serve.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(serve.stdout or ()), daemon=True)
    reader.start()
    try:
        yield serve, lines
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
        serve.wait(scheduling.STOP_SECONDS + 30)
        reader.join(10)


def test_a_trigger_fired_again_after_serve_stopped_mid_send_makes_no_second_job(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    proxy = Proxy(6379)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        # A send the broker never answers outlasts serve's stop.
        with fleet_on_redis(edit_config, broker_url=url, read_timeout_seconds=90) as config:
            add_schedule(home, "quick", "maintenance", "--type", "quick")
            due_now(config, "quick")
            proxy.hold(b"LPUSH")  # the task is kept from Redis, and so is its answer
            with serving_fleet(home) as (serve, lines):
                assert proxy.held_once.wait(60), lines
                time.sleep(0.5)
                serve.send_signal(signal.SIGTERM)
                serve.wait(scheduling.STOP_SECONDS + 30)
            said = "".join(lines)
            assert "quick (cron) still running after" in said, said
            assert "sends again what of its fleet job has not begun" in said, said
            assert len(fleet_ids(config)) == 1
            proxy.release()  # the task lands after its sender is gone
            with serving_fleet(home) as (_, lines):
                wait_for(lambda: any("fleet job" in line for line in lines), "the trigger", 60)
            said = "".join(lines)
            assert "had not begun its run when serve ended; due again" in said, said
            assert "sent again" in said, said
            assert len(fleet_ids(config)) == 1  # the same job, sent again
            with running_worker(home):
                summary = only_fleet_job(config)
                time.sleep(2)  # the second delivery of the task, done too
            (row,) = summary["runs"]
            assert row["status"] == "completed", (row, (home / "worker.log").read_text())
            with StateStore(config.state_url) as store:
                assert [r["run_id"] for r in store.list_runs(limit=10)] == [row["run_id"]]
                assert store.trigger_fleet_job("quick", str(summary["due"]))["sent_at"]
    finally:
        proxy.close()
