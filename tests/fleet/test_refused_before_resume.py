"""A fleet target whose run was interrupted, then refused by the next delivery of its
task before that delivery resumed the run, for any reason (the target unknown in the
worker's config, its URL no database URL, the database it now reaches another one than
the run's), says so in `fleet show` as a refusal of its tools does: the run stays
interrupted, its last delivery refused on HOST at TIME, until its task is sent again.

Before, only the refusal of a worker's other tools was kept for a target that had a run;
every other refusal was raised into the worker's log alone, and `fleet show` kept the
run's old error, saying nothing of why nothing resumed it. A delivery that fails after
it resumed the run leaves the run's own row to say so: nothing is kept twice.

The task's work (run_fleet_target) runs here in the test's process, as a worker runs it
for each delivery: the interrupted run is one a worker's shutdown stops as it begins.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from aishell import commands
from aishell.commands.fleet import run_fleet_target
from aishell.commands.tools import load_catalog
from aishell.config.models import Config, load_config
from aishell.errors import AishellError
from aishell.executor.stopping import stops_with
from aishell.fleet.sending import sent_with
from aishell.fleet.worker import WORKER_SHUTDOWN, TryLater
from aishell.state.store import StateStore, signed_store
from tests.conftest import EditConfig
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home

JOB = {"type": "quick"}


def carried(config: Config) -> dict[str, Any]:
    """What a task sent from this config carries."""
    return sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)


def interrupted_fleet_run(config: Config, target: str) -> tuple[str, str]:
    """A fleet job on `target` whose first delivery's run a worker's shutdown stopped as
    it began: (fleet id, run id), the run interrupted and resumable."""
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", JOB, {}, target, [target])
    stop = threading.Event()
    stop.set()
    with stops_with(stop, WORKER_SHUTDOWN), pytest.raises(TryLater):
        run_fleet_target(config, fleet_id, target, carried(config))
    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "interrupted" and row["delivery_refused"] is None, row
    return fleet_id, row["run_id"]


def worker_config(home: Path, target: Any) -> Config:
    """The worker's config: the sender's, with target `second` changed (None: gone)."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    if target is None:
        del data["targets"]["second"]
    else:
        data["targets"]["second"].update(target)
    elsewhere = home / "worker-config"
    elsewhere.mkdir()
    (elsewhere / "aishell.yaml").write_text(yaml.safe_dump(data))
    (elsewhere / "agents").symlink_to(home / "config" / "agents")
    return load_config(home=home, config_path=elsewhere / "aishell.yaml")


REFUSALS = {
    "target unknown": (None, "Unknown target 'second'"),
    "its file gone": ({"url": "sqlite:///gone.db"}, "gone.db"),
    "another database": ({"url": "sqlite:///third.db"}, "now reaches"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_delivery_refused_before_it_resumed_the_run_is_said_in_fleet_show(
    edit_config: EditConfig, home: Path, demo_db: Path, kind: str
) -> None:
    config = fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    fleet_id, run_id = interrupted_fleet_run(config, "second")
    change, said = REFUSALS[kind]
    worker = worker_config(home, change)
    # Sent again from a machine whose config is the worker's: its target's fingerprint is
    # the worker's own, and the resume itself is what refuses.
    with pytest.raises(AishellError) as refused:
        run_fleet_target(worker, fleet_id, "second", carried(worker))
    assert said in str(refused.value), refused.value

    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "interrupted" and row["run_id"] == run_id, row
    shown = row["delivery_refused"]
    assert shown is not None and shown["error"] == str(refused.value), row
    assert shown["at"] and shown["hostname"]
    assert row["error"].startswith(f"its last delivery was refused on {shown['hostname']} at ")
    assert commands.fleet_summary(config, fleet_id)["going_on"] == 0

    # Sent again and resumed where it answers: the refusal no longer stands.
    # (as `fleet resend` records it: no broker here)
    with signed_store(config) as store:
        store.record_resent(fleet_id, ["second"])
    assert commands.fleet_summary(config, fleet_id)["runs"][0]["delivery_refused"] is None
    assert run_fleet_target(config, fleet_id, "second", carried(config)) == "completed"


def test_a_delivery_that_failed_after_it_resumed_the_run_is_left_to_the_run(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    """The boundary: once a delivery reopened the run (StateStore.reopen_run, as every
    resume does before its first statement), its failure is the run's to record."""
    config = fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    fleet_id, run_id = interrupted_fleet_run(config, "second")
    with StateStore(config.state_url) as store:
        changed = store.fleet_runs(fleet_id)["second"]["changed"]
        assert not store.fleet_run_went_on(fleet_id, "second", run_id, changed)
        store.reopen_run(run_id, "resumed from interrupted")
        assert store.fleet_run_went_on(fleet_id, "second", run_id, changed)
        assert not store.fleet_run_went_on(
            fleet_id, "second", run_id, store.fleet_runs(fleet_id)["second"]["changed"]
        )
