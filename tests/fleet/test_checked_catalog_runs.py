"""A fleet task's run is given the tool catalog its worker held the task's fingerprints
against: the catalog is not read again between that check and the run (a tool file
changed in between would have run unchecked), when the run starts and when a later
delivery resumes it.

Before, the check loaded the catalog, then `run_job` and `resume_run` each loaded it
again from disk."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from aishell.commands import starting
from aishell.commands.fleet import run_fleet_target
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.executor.stopping import stops_with
from aishell.fleet.sending import sent_with
from aishell.fleet.worker import TryLater
from aishell.state.store import StateStore, signed_store


def _fleet_job(config: Config) -> tuple[str, dict[str, Any]]:
    """A quick-maintenance fleet job on the demo target, as a sender would record it,
    and what its task carries."""
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", {"type": "quick"}, {}, "demo", ["demo"])
    return fleet_id, sent_with(
        load_catalog(config), config.agent("maintenance"), config.main.targets
    )


def _no_second_load(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Any load of the catalog by the run commands is recorded and refused."""
    loads: list[Config] = []

    def loaded_again(config: Config) -> Any:
        loads.append(config)
        raise AssertionError("the run loaded the tool catalog again after the task's check")

    monkeypatch.setattr(starting, "load_catalog", loaded_again)
    return loads


def test_a_fleet_task_runs_with_the_catalog_it_checked(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_id, carried = _fleet_job(config)
    loads = _no_second_load(monkeypatch)
    assert run_fleet_target(config, fleet_id, "demo", carried) == "completed"
    assert loads == []


def test_a_resumed_fleet_run_runs_with_the_catalog_it_checked(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_id, carried = _fleet_job(config)
    loads = _no_second_load(monkeypatch)
    # The first delivery's worker is told to stop as the run begins: interrupted.
    told = threading.Event()
    told.set()
    with stops_with(told, "the worker is shutting down"), pytest.raises(TryLater):
        run_fleet_target(config, fleet_id, "demo", carried)
    with StateStore(config.state_url) as store:
        (run,) = store.fleet_runs(fleet_id).values()
    assert run["status"] == "interrupted"
    # The next delivery resumes it, with the catalog it checked the task against.
    assert run_fleet_target(config, fleet_id, "demo", carried) == "completed"
    with StateStore(config.state_url) as store:
        assert store.fleet_runs(fleet_id)["demo"]["run_id"] == run["run_id"]
    assert loads == []
