"""A fleet target whose run was interrupted (its first worker stopped by SIGTERM), then
refused by the next worker to take its task (that worker's tools differ from those the
task was sent with), says so in `fleet show` and its --json: the run stays interrupted,
the refusal (when, where, why) in place of its error, until its task is sent again.

Before, the refusal was recorded only for a target with no run: here it was raised into
the worker's log alone, and `fleet show` kept the run's old error, saying nothing of why
nothing resumed it."""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack
from pathlib import Path

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.commands.fleet import watch_fleet
from aishell.commands.fleetlist import _row
from tests.conftest import EditConfig
from tests.fleet.queues import delete_queue, running_worker
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home
from tests.fleet.test_sent_with import _edit_yaml, _with_site_tool
from tests.fleet.test_worker_shutdown import _received
from tests.helpers import state_store_busy

REFUSED = "this worker's tools, agent config or target differ from those"


def test_a_refused_delivery_of_an_interrupted_run_is_said_until_its_task_is_sent_again(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    _with_site_tool(home, edit_config)
    config = edit_config({"state": {"busy_timeout_ms": 120_000}})
    fleet_id = commands.fleet_run(config, "maintenance", {"type": "quick"}, "demo")["fleet_id"]
    log = home / "worker.log"
    try:
        # Its first worker is stopped by SIGTERM as the run is recorded: interrupted.
        with ExitStack() as holding:
            holding.enter_context(state_store_busy(config))
            with running_worker(home) as worker:
                _received(home, worker)
                time.sleep(1.0)
                worker.send_signal(signal.SIGTERM)
                time.sleep(1.0)
                holding.close()
                assert worker.wait(60) == 0, log.read_text()
        (interrupted,) = commands.fleet_summary(config, fleet_id)["runs"]
        assert interrupted["status"] == "interrupted", (interrupted, log.read_text())
        # The next worker's machine lacks the tool the job was sent with.
        _edit_yaml(home / "config" / "aishell.yaml", {"catalog_paths": []})
        with running_worker(home) as worker:
            deadline = time.monotonic() + 60
            while REFUSED not in log.read_text():
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        summary = commands.fleet_summary(config, fleet_id)
        (row,) = summary["runs"]
        assert row["status"] == "interrupted" and row["run_id"] == interrupted["run_id"], row
        refused = row.get("delivery_refused")
        assert refused is not None, (row, log.read_text())
        assert (
            REFUSED in refused["error"] and "count_site_rows' is missing here" in refused["error"]
        )
        assert refused["at"] and refused["hostname"]
        assert row["error"].startswith("its last delivery was refused on ")
        assert refused["error"] in row["error"] and len(row["error"].splitlines()) == 1
        assert summary["going_on"] == 0  # nothing in the queue will resume it
        shown = CliRunner().invoke(cli, ["--home", str(home), "fleet", "show", fleet_id])
        assert f"demo: interrupted (run {row['run_id']}" in shown.output, shown.output
        assert "its last delivery was refused on " in shown.output
        assert "count_site_rows' is missing here" in shown.output
        as_json = CliRunner().invoke(
            cli, ["--home", str(home), "fleet", "show", fleet_id, "--json"]
        )
        assert json.loads(as_json.stdout)["runs"] == [row]

        # Mended and sent again: the refusal no longer stands; the run is resumed.
        _edit_yaml(home / "config" / "aishell.yaml", {"catalog_paths": ["site_tools"]})
        commands.fleet_resend(config, fleet_id)
        (resent,) = commands.fleet_summary(config, fleet_id)["runs"]
        assert resent["delivery_refused"] is None and resent["error"] == interrupted["error"]
        with running_worker(home):
            (done,) = watch_fleet(config, fleet_id, 60, None)["runs"]
        assert done["status"] == "completed" and done["run_id"] == interrupted["run_id"], done
        assert done["delivery_refused"] is None and done["error"] is None
    finally:
        delete_queue(config)


def test_a_refused_duplicate_delivery_of_a_running_run_changes_nothing_shown() -> None:
    """A run another worker is running goes on whatever a duplicate delivery of its task
    was told elsewhere: it is not shown refused, and `fleet run --wait` waits for it."""
    run = {"run_id": "r1", "status": "running", "error": None, "hostname": "a", "changed": 5}
    refused = {"event": 9, "at": "2026-11-28 10:00:00", "error": REFUSED, "hostname": "b"}
    row = _row("demo", run, refused)
    assert row["delivery_refused"] is None and row["error"] is None, row
    interrupted = _row("demo", {**run, "status": "interrupted"}, refused)
    assert interrupted["delivery_refused"] is not None, interrupted
