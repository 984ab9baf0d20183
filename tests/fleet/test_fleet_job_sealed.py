"""A fleet job is signed with the home's key as a run is: a worker runs a target's run
with the job and options the sender gave, never with what was written into the store
since (a safety level loosened, --force or --ignore-window set), nor with a job stored
without a signature. Such a job runs on no target: the refusal is kept for `fleet show`
and the task ends not started, not retried.

Before, the job and options were read from the store as they stood: whoever could write
to the state store could loosen every target's run of a queued fleet job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell.commands.fleet import run_fleet_target
from aishell.commands.fleetlist import fleet_summary
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.fleet.sending import sent_with
from aishell.state.store import StateStore, signed_store

JOB = {"type": "quick"}


def _carried(config: Config) -> dict[str, Any]:
    return sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)


def _written(config: Config, fleet_id: str, column: str, value: str) -> None:
    """A fleet job's column changed in the store, as anyone who can write to it could."""
    engine = create_engine(config.state_url)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE fleet_jobs SET {column} = :v WHERE fleet_id = :f"),
            {"v": value, "f": fleet_id},
        )
    engine.dispose()


def _refused(config: Config, fleet_id: str, demo_db: Path) -> str:
    before = demo_db.stat().st_mtime_ns
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "not_started"
    assert demo_db.stat().st_mtime_ns == before  # nothing ran
    (row,) = [r for r in fleet_summary(config, fleet_id)["runs"] if r["target"] == "demo"]
    assert row["status"] == "not_started" and row["run_id"] is None, row
    assert len(row["error"].splitlines()) == 1, row["error"]
    return str(row["error"])


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [
        ("options", json.dumps({"safety_level": "permissive", "force": True}), "options"),
        ("job", json.dumps({"type": "full"}), "job"),
        ("targets", json.dumps(["demo", "another"]), "targets"),
    ],
)
def test_a_fleet_job_changed_in_the_store_runs_on_no_target(
    config: Config, demo_db: Path, column: str, value: str, named: str
) -> None:
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", JOB, {}, "demo", ["demo"])
    _written(config, fleet_id, column, value)
    error = _refused(config, fleet_id, demo_db)
    assert f"fleet job {fleet_id}'s {named} does not match its signature" in error, error


def test_a_fleet_job_stored_without_a_signature_runs_on_no_target(
    config: Config, demo_db: Path
) -> None:
    with StateStore(config.state_url) as store:  # no key: as written outside aishell
        fleet_id = store.create_fleet_job("maintenance", JOB, {}, "demo", ["demo"])
    error = _refused(config, fleet_id, demo_db)
    assert f"fleet job {fleet_id} carries no signature" in error, error


def test_a_fleet_job_as_signed_runs(config: Config, demo_db: Path) -> None:
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", JOB, {}, "demo", ["demo"])
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "completed"
