"""A fleet job's events for each target (what its deliveries were told, its resends) form
a signed chain, its head kept in the store beside them (state/fleetchain.py): a refusal,
or a person's stop, deleted from the store is seen, and the target begins or resumes
nothing until a person sends its task again; the listings say so as a delivery would.
The task opens the store with the home's key once.

Before, a signature proved what a row said, never that no row was missing: deleting a
target's not_started event (one DELETE on the shared store) let the next delivery of its
task begin it, and deleting a stopped run's end let the next delivery resume the run a
person had stopped; `fleet show` and `fleet status`, opened without the key, showed a
target as a resend written into the store left it (queued), not as a worker takes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.commands.fleet import run_fleet_target
from aishell.commands.fleetdelivery import stopped_for_good
from aishell.commands.fleetlist import fleet_summary
from aishell.config.models import Config
from aishell.errors import AishellError
from aishell.state.fleet import NOT_STARTED
from aishell.state.store import StateStore, signed_store
from tests.conftest import EditConfig
from tests.fleet.test_refused_before_resume import interrupted_fleet_run
from tests.fleet.test_resend_sealed import _carried, _forged, _not_started, _refused_once, _sql

DELETED = "'demo': its event 1 is missing (deleted)"


@pytest.fixture(params=["sqlite", "postgresql"])
def either_store(request: pytest.FixtureRequest, edit_config: EditConfig) -> Iterator[Config]:
    """The config with its state store on SQLite or on a scratch PostgreSQL database, as
    a fleet shares one."""
    if request.param == "sqlite":
        yield edit_config({})
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({"state": {"url": url}})


def _shown(config: Config, fleet_id: str) -> dict[str, Any]:
    (row,) = fleet_summary(config, fleet_id)["runs"]
    return row


def test_a_refusal_deleted_from_the_store_begins_nothing(
    either_store: Config, demo_db: Path
) -> None:
    config = either_store
    fleet_id = _refused_once(config, demo_db)
    _sql(config, "DELETE FROM events WHERE kind = :k", k=NOT_STARTED)
    # `fleet show` says what a delivery will do: nothing begins.
    assert _shown(config, fleet_id)["status"] == "not_started"
    assert DELETED in _shown(config, fleet_id)["error"]

    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert error.startswith("Not run: state.db: fleet job"), error
    assert DELETED in error and f"`aishell fleet resend {fleet_id}`" in error, error
    # Said again on every delivery, whatever is deleted next.
    _sql(config, "DELETE FROM events WHERE kind = :k", k=NOT_STARTED)
    assert "'demo': its event 2 is missing (deleted)" in _not_started(
        config, fleet_id, demo_db, _carried(config)
    )

    # A person's resend starts the chain anew: it begins.
    with signed_store(config) as store:
        store.record_resent(fleet_id, ["demo"])
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "completed"


def test_a_refusal_deleted_with_its_chain_s_head_begins_nothing(
    either_store: Config, demo_db: Path
) -> None:
    config = either_store
    fleet_id = _refused_once(config, demo_db)
    _sql(config, "DELETE FROM events WHERE kind = :k", k=NOT_STARTED)
    _sql(config, "DELETE FROM meta WHERE key LIKE 'fleet_chain:%'")
    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert "'demo' has no head (deleted)" in error, error


def test_a_run_s_link_deleted_from_the_store_begins_no_second_run(
    either_store: Config, demo_db: Path
) -> None:
    config = either_store
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", {"type": "quick"}, {}, "demo", ["demo"])
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "completed"
    (ran,) = [r["run_id"] for r in fleet_summary(config, fleet_id)["runs"]]
    # Its task delivered again (a worker lost before it acknowledged it), after the
    # fleet job's link to its run was deleted: the run is its chain's, and none begins.
    _sql(config, "DELETE FROM fleet_runs")
    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert f"names run {ran}, but its target's run is none" in error, error


def test_a_stop_deleted_from_the_store_resumes_nothing(config: Config, demo_db: Path) -> None:
    fleet_id, run_id = interrupted_fleet_run(config, "demo")
    with StateStore(config.state_url) as store:
        store.request_stop(run_id, "alice")
    assert stopped_for_good(config, fleet_id, "demo", run_id, None)
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "interrupted"

    _sql(config, "DELETE FROM events WHERE kind = :k", k=NOT_STARTED)
    _sql(config, "DELETE FROM run_controls")
    with pytest.raises(AishellError, match=r"its event 2 is missing \(deleted\)"):
        run_fleet_target(config, fleet_id, "demo", _carried(config))
    row = _shown(config, fleet_id)
    assert row["status"] == "interrupted" and "is missing (deleted)" in row["error"], row


def test_fleet_show_and_status_refuse_a_resend_written_into_the_store(
    either_store: Config, demo_db: Path
) -> None:
    config = either_store
    fleet_id = _refused_once(config, demo_db)
    _forged(config, fleet_id)
    # As a delivery takes it: the refusal stands, the forged resend clears nothing.
    row = _shown(config, fleet_id)
    assert row["status"] == "not_started" and "carries no fingerprint" in row["error"], row
    summary = commands.list_fleet_jobs(config)["fleet_jobs"]
    assert summary[0]["counts"] == {"not_started": 1}, summary


def test_fleet_status_keeps_a_refusal_a_forged_resend_would_clear(
    config: Config, demo_db: Path
) -> None:
    fleet_id, run_id = interrupted_fleet_run(config, "demo")
    with StateStore(config.state_url) as store:
        store.request_stop(run_id, "alice")
    assert stopped_for_good(config, fleet_id, "demo", run_id, None)
    _forged(config, fleet_id)
    (row,) = [r for r in commands.fleet_status(config)["targets"] if r["target"] == "demo"]
    assert row["last_run"]["delivery_refused"] is not None, row
    assert _shown(config, fleet_id)["delivery_refused"] is not None


def test_a_task_opens_the_store_with_the_key_once(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", {"type": "quick"}, {}, "demo", ["demo"])
    opened: list[bool] = []
    real = StateStore.__init__

    def counted(self: StateStore, url: str, *args: Any, **kwargs: Any) -> None:
        opened.append(kwargs.get("key") is not None)
        real(self, url, *args, **kwargs)

    monkeypatch.setattr(StateStore, "__init__", counted)
    # Its run's own work (run_job) opens the store as every run does: counted up to it.
    monkeypatch.setattr("aishell.commands.fleet._take_turn", lambda *_: str(sum(opened)))
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "1"
