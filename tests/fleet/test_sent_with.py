"""A fleet task carries the fingerprints of the tools and the agent's config it was sent
with; a worker whose own differ (another tool catalog, another agent config) never runs
it: its target is `not_started` with one line saying what differs and how to go on.

Before, a task carried its fleet job and target alone, and a worker ran the job with
whatever tools and config it had."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.commands.fleet import watch_fleet
from aishell.config.models import Config
from tests.conftest import EditConfig
from tests.fleet.queues import delete_queue, running_worker
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home

SITE_TOOL = {
    "name": "count_site_rows",
    "description": "Counts the rows of the site's ledger.",
    "category": "analysis",
    "risk_level": "safe",
    "required_capabilities": ["database_read"],
    "max_execution_time": 60,
    "idempotent": True,
    "params": {"type": "object", "properties": {}},
    "returns": {"type": "object"},
    "examples": [{"params": {}}],
    "implementations": {"sqlite": {"sql": "SELECT count(*) AS n FROM users", "result": "one"}},
    "locks": {"sqlite": []},
}


def _with_site_tool(home: Path, edit_config: EditConfig) -> Config:
    folder = home / "site_tools"
    folder.mkdir()
    (folder / "count_site_rows.yaml").write_text(yaml.safe_dump(SITE_TOOL))
    return edit_config({"catalog_paths": ["site_tools"]})


def _edit_yaml(path: Path, change: dict[str, object]) -> None:
    data = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        place = data
        for key in parents:
            place = place[key]
        place[last] = value
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("differs", ["tool missing", "tool added", "agent config"])
def test_a_worker_with_other_tools_or_agent_config_refuses_the_task_in_one_line(
    edit_config: EditConfig, home: Path, demo_db: Path, differs: str
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    config = _with_site_tool(home, edit_config)
    if differs == "tool added":
        config = edit_config({"catalog_paths": []})
    before = demo_db.stat().st_mtime_ns
    sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, "demo")
    fleet_id = sent["fleet_id"]
    # The worker's machine has another config than the sender's.
    if differs == "tool missing":
        _edit_yaml(home / "config" / "aishell.yaml", {"catalog_paths": []})
        expected = "tool 'count_site_rows' is missing here"
    elif differs == "tool added":
        _edit_yaml(home / "config" / "aishell.yaml", {"catalog_paths": ["site_tools"]})
        expected = "tool 'count_site_rows' is only here"
    else:
        agent_file = home / "config" / "agents" / "maintenance.yaml"
        _edit_yaml(agent_file, {"maintenance_agent.default_config.max_retries": 1})
        expected = "the maintenance agent's config differs"
    try:
        started = time.monotonic()
        with running_worker(home):
            summary = watch_fleet(config, fleet_id, 60, None)
        assert time.monotonic() - started < 55, (home / "worker.log").read_text()
    finally:
        delete_queue(config)
    (row,) = summary["runs"]
    assert row["status"] == "not_started" and row["run_id"] is None, row
    error = row["error"]
    assert len(error.splitlines()) == 1
    assert "this worker's tools, agent config or target differ from those" in error
    assert expected in error
    assert f"aishell fleet resend {fleet_id}" in error
    assert demo_db.stat().st_mtime_ns == before  # nothing ran on the target


def test_a_worker_with_the_sender_s_tools_and_config_runs_the_task(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    config = _with_site_tool(home, edit_config)
    try:
        sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, "demo")
        with running_worker(home):
            summary = watch_fleet(config, sent["fleet_id"], 60, None)
    finally:
        delete_queue(config)
    assert [(r["target"], r["status"]) for r in summary["runs"]] == [("demo", "completed")]
