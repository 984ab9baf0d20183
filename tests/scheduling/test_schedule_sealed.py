"""A schedule is signed with the home's key as a run and a fleet job are: `schedule
serve` runs each trigger with the job, options, target, agent and cron `schedule add`
stored, never with what was written into the state store since (a safety level
loosened, --force or --ignore-window written in, another job or target), nor a schedule
stored without a signature. Such a trigger runs nothing and says so in one line naming
the field: in serve's log, as the schedule's alert in `schedule list`, and notified.

Before, anyone who could write to the state store (a fleet's shared PostgreSQL store,
whose login every machine holds) could change what every night's trigger ran."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.errors import StateTampered
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.helpers import logged
from tests.scheduling.test_schedules import add, due_now, scheduled_runs, serving, wait_for

QUICK = ["maintenance", "--type", "quick"]
LOOSENED = {"safety_level": "permissive", "force": True, "ignore_window": True, "reason": "x"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, edit_config: EditConfig) -> Iterator[Config]:
    """The config with its state store on SQLite (state.db) or on a scratch PostgreSQL
    database, as a fleet shares one."""
    if request.param == "sqlite":
        yield edit_config()
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({"state": {"url": url}})


def written(config: Config, name: str, column: str, value: object) -> None:
    """A schedule's column changed in the store, as anyone who can write to it could."""
    engine = create_engine(config.state_url)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE schedules SET {column} = :v WHERE name = :n"), {"v": value, "n": name}
        )
    engine.dispose()


CHANGES = [
    ("options", json.dumps(LOOSENED), "options"),
    ("job", json.dumps({"type": "full"}), "job"),
    ("target", "elsewhere", "target"),
    ("agent", "log_cleanup", "agent"),
    ("cron", "* * * * *", "cron"),
]


@pytest.mark.parametrize(("column", "value", "named"), CHANGES)
def test_a_schedule_changed_in_the_store_runs_nothing_and_says_which_field(
    demo_db: Path, store_config: Config, column: str, value: str, named: str
) -> None:
    config = store_config
    add(config, "nightly", "0 2 * * *", QUICK)
    written(config, "nightly", column, value)
    before = demo_db.stat().st_mtime_ns
    said = f"schedule nightly's {named} does not match its signature"

    with logged() as lines:
        assert commands.run_schedule(config, "nightly", "cron") is None
    assert demo_db.stat().st_mtime_ns == before  # nothing ran
    assert scheduled_runs(config, "nightly") == []
    refused = [line for line in lines if "schedule nightly: refused" in line]
    assert len(refused) == 1 and said in refused[0], lines

    (listed,) = commands.list_schedules(config)
    assert said in listed["seal_error"] and len(listed["seal_error"].splitlines()) == 1
    assert listed["alert"]["kind"] == "refused" and said in listed["alert"]["error"]

    with pytest.raises(StateTampered, match=said):
        commands.run_schedule(config, "nightly", "run-now")
    with pytest.raises(StateTampered, match=said):  # a pause would sign what was written
        commands.pause_schedule(config, "nightly", True)
    assert scheduled_runs(config, "nightly") == []


def test_a_schedule_stored_without_a_signature_runs_nothing(demo_db: Path, config: Config) -> None:
    with StateStore(config.state_url) as store:  # no key: as an older aishell stored it
        store.add_schedule(
            name="old",
            cron="0 2 * * *",
            timezone="UTC",
            words=QUICK,
            agent="maintenance",
            job={"type": "quick"},
            target="demo",
            options={},
        )
    assert commands.run_schedule(config, "old", "cron") is None
    assert scheduled_runs(config, "old") == []
    (listed,) = commands.list_schedules(config)
    assert "schedule old carries no signature" in listed["seal_error"], listed
    assert "aishell schedule remove old" in listed["seal_error"]
    # Removed and added again, it is signed and runs.
    commands.remove_schedule(config, "old")
    add(config, "old", "0 2 * * *", QUICK)
    result = commands.run_schedule(config, "old", "cron")
    assert result is not None and result.status == "completed"


def test_serve_runs_no_trigger_of_a_changed_schedule(demo_db: Path, config: Config) -> None:
    add(config, "nightly", "0 2 * * *", QUICK)
    due_now(config, "nightly")
    written(config, "nightly", "options", json.dumps(LOOSENED))
    with serving(config) as lines:
        wait_for(lambda: any("nightly: refused" in line for line in lines), "the refusal")
    assert scheduled_runs(config, "nightly") == []
    refused = [line for line in lines if "nightly: refused" in line]
    assert len(refused) == 1, lines  # said once per serve, however often it reconciles
    assert "schedule nightly's options does not match its signature" in refused[0]


def test_a_paused_and_resumed_schedule_stays_signed(demo_db: Path, config: Config) -> None:
    add(config, "nightly", "0 2 * * *", QUICK)
    commands.pause_schedule(config, "nightly", True)
    commands.pause_schedule(config, "nightly", False)
    (listed,) = commands.list_schedules(config)
    assert listed["seal_error"] is None and not listed["paused"]
    result = commands.run_schedule(config, "nightly", "cron")
    assert result is not None and result.status == "completed"
    # Its pause is signed too: a schedule paused in the store alone is refused.
    written(config, "nightly", "paused", True)
    (listed,) = commands.list_schedules(config)
    assert "schedule nightly's paused does not match its signature" in listed["seal_error"]
