"""A fleet task carries the fingerprint of its target's config as the sender held it; a
worker whose own config of that target differs (re-pointed at another database, another
environment, other trusted functions) runs nothing of it: the target is `not_started`,
naming what differs, and its database is left alone.

Before, a task carried the tools and the agent's config alone, and a worker ran the job
on whatever database its own config named the target, under its own environment."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from aishell.commands.fleet import run_fleet_target
from aishell.commands.fleetlist import fleet_summary
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.fleet.sending import sent_with
from aishell.state.store import signed_store
from tests.conftest import EditConfig


def _sent(config: Config) -> tuple[str, dict[str, Any]]:
    """A quick maintenance fleet job on the demo target, as the sender records and sends it."""
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", {"type": "quick"}, {}, "demo", ["demo"])
    carried = sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)
    return fleet_id, carried


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"url": "sqlite:///elsewhere.db"}, "url"),
        ({"environment": "production"}, "environment"),
        ({"trusted_functions": ["main.f"]}, "trusted_functions"),
    ],
    ids=["re-pointed", "other environment", "other trusted functions"],
)
def test_a_worker_whose_target_differs_from_the_sender_s_runs_nothing(
    edit_config: EditConfig, home: Path, demo_db: Path, change: dict[str, Any], named: str
) -> None:
    elsewhere = home / "elsewhere.db"
    shutil.copyfile(demo_db, elsewhere)
    sender = edit_config({"targets": {"demo": {"environment": "staging"}}})
    fleet_id, carried = _sent(sender)
    before = {p: p.stat().st_mtime_ns for p in (demo_db, elsewhere)}
    worker = edit_config({"targets": {"demo": change}})  # the worker's machine's config
    assert run_fleet_target(worker, fleet_id, "demo", carried) == "not_started"
    (row,) = fleet_summary(worker, fleet_id)["runs"]
    assert row["status"] == "not_started" and row["run_id"] is None, row
    assert len(row["error"].splitlines()) == 1
    assert f"target 'demo' differs here ({named})" in row["error"], row["error"]
    assert f"aishell fleet resend {fleet_id}" in row["error"]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing ran anywhere


def test_a_task_that_carries_no_fingerprint_of_its_target_runs_nothing(
    config: Config, demo_db: Path
) -> None:
    fleet_id, carried = _sent(config)
    forged = {**carried, "targets": {}}  # anyone who can write to the broker
    assert run_fleet_target(config, fleet_id, "demo", forged) == "not_started"
    (row,) = fleet_summary(config, fleet_id)["runs"]
    assert "carries no fingerprint of target 'demo'" in row["error"], row["error"]


def test_a_worker_with_the_sender_s_target_runs_it(config: Config, demo_db: Path) -> None:
    fleet_id, carried = _sent(config)
    assert run_fleet_target(config, fleet_id, "demo", carried) == "completed"
