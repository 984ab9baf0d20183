"""A fleet job's resend is signed with the home's key, as the fleet job is: it is what
lets a target whose task ended not started begin, and what a late trigger's age is
counted from. One written into the state store (or changed there) begins nothing and
restarts no age: the worker refuses the task in one line, kept as its `not_started`
error; and a copy of a signed one, stored after a later refusal, clears none.

Before, a resend was an unsigned event: anyone who could write to the state store (a
fleet's shared PostgreSQL store, whose login every machine holds) could let a refused
target begin, or a trigger's task begin hours late with the night's --ignore-window."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell.commands.fleet import run_fleet_target
from aishell.commands.fleetlist import fleet_summary
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.fleet.sending import sent_with
from aishell.scheduling.due import trigger_key
from aishell.state.fleet import RESENT
from aishell.state.store import signed_store
from aishell.state.values import now
from tests.conftest import EditConfig

JOB = {"type": "quick"}
WINDOW_IGNORED = {"ignore_window": True, "reason": "the night's window"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, edit_config: EditConfig) -> Iterator[Config]:
    """The config with its state store on SQLite or on a scratch PostgreSQL database, as
    a fleet shares one; a grace of a minute for a trigger's task."""
    grace = {"scheduler": {"misfire_grace_seconds": 60}}
    if request.param == "sqlite":
        yield edit_config(grace)
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({**grace, "state": {"url": url}})


def _carried(config: Config) -> dict[str, Any]:
    return sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)


def _sql(config: Config, sql: str, **values: Any) -> None:
    """A statement on the store, as anyone who can write to it could send it."""
    engine = create_engine(config.state_url)
    with engine.begin() as conn:
        conn.execute(text(sql), values)
    engine.dispose()


def _forged(config: Config, fleet_id: str) -> None:
    """A resend event written into the store, now, with no signature."""
    data = json.dumps({"fleet_id": fleet_id, "targets": ["demo"]})
    _sql(
        config,
        "INSERT INTO events (run_id, step_idx, at, kind, data) VALUES ('-', NULL, :at, :k, :d)",
        at=now(),
        k=RESENT,
        d=data,
    )


def _not_started(config: Config, fleet_id: str, demo_db: Path, carried: Any) -> str:
    before = demo_db.stat().st_mtime_ns
    assert run_fleet_target(config, fleet_id, "demo", carried) == "not_started"
    assert demo_db.stat().st_mtime_ns == before  # nothing ran
    with signed_store(config) as store:
        (row,) = [r for r in fleet_summary(config, fleet_id)["runs"] if r["target"] == "demo"]
        kept = store.fleet_not_started(fleet_id)["demo"]["error"]
    assert row["run_id"] is None, row
    assert len(kept.splitlines()) == 1, kept
    return str(kept)


def _refused_once(config: Config, demo_db: Path) -> str:
    """A fleet job whose target's task ended not started (sent with no fingerprint)."""
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", JOB, {}, "demo", ["demo"])
    assert "carries no fingerprint" in _not_started(config, fleet_id, demo_db, None)
    return fleet_id


def test_a_resend_written_into_the_store_begins_no_refused_target(
    store_config: Config, demo_db: Path
) -> None:
    config = store_config
    fleet_id = _refused_once(config, demo_db)
    _forged(config, fleet_id)
    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert f"fleet job {fleet_id}'s resend event" in error, error
    assert "carries no signature" in error, error
    assert f"`aishell fleet resend {fleet_id}` sends it again" in error, error

    # A resend from the home (as `fleet resend` records it) begins it.
    with signed_store(config) as store:
        store.record_resent(fleet_id, ["demo"])
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "completed"


def test_a_resend_written_into_the_store_restarts_no_late_triggers_age(
    store_config: Config, demo_db: Path
) -> None:
    config = store_config
    due = trigger_key(datetime.now(UTC) - timedelta(hours=2))
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job(
            "maintenance", JOB, WINDOW_IGNORED, "demo", ["demo"], trigger=("nightly", due)
        )
    _forged(config, fleet_id)
    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert f"fleet job {fleet_id}'s resend event" in error, error
    assert "carries no signature" in error, error


def test_a_signed_resend_moved_in_time_is_refused(
    store_config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = store_config
    due = trigger_key(datetime.now(UTC) - timedelta(hours=2))
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job(
            "maintenance", JOB, WINDOW_IGNORED, "demo", ["demo"], trigger=("nightly", due)
        )
        # Sent again an hour and a half ago: too long ago for its task to begin now.
        long_ago = (datetime.now(UTC) - timedelta(minutes=90)).isoformat()
        with monkeypatch.context() as then:
            then.setattr("aishell.state.fleet.now", lambda: long_ago)
            store.record_resent(fleet_id, ["demo"])
    _sql(config, "UPDATE events SET at = :at WHERE kind = :k", at=now(), k=RESENT)
    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert f"fleet job {fleet_id}'s resend event" in error, error
    assert "(at) does not match its signature" in error, error


def test_a_copy_of_a_signed_resend_clears_no_later_refusal(
    store_config: Config, demo_db: Path
) -> None:
    config = store_config
    fleet_id = _refused_once(config, demo_db)
    with signed_store(config) as store:
        store.record_resent(fleet_id, ["demo"])
    # Refused again (sent with no fingerprint), after the resend.
    assert "carries no fingerprint" in _not_started(config, fleet_id, demo_db, None)
    # The signed resend copied, as a new event: it is newer than that refusal.
    _sql(
        config,
        "INSERT INTO events (run_id, step_idx, at, kind, data) "
        "SELECT run_id, step_idx, at, kind, data FROM events WHERE kind = :k",
        k=RESENT,
    )
    again = _not_started(config, fleet_id, demo_db, _carried(config))
    # Its place in the target's event chain is the original's: the copy is seen.
    assert "'demo': its event 2 is there twice (copied)" in again, again
