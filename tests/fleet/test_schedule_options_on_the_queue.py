"""A schedule served with `schedule serve --fleet` runs as its stored options say, as
`schedule serve` runs it: each option a schedule stores (--dry-run, --safety-level,
--force, --ignore-window with its --reason, --planner, --max-run-time) reaches the
worker's run as run_schedule passes it, and a schedule storing one a fleet job does not
carry is refused at its trigger, nothing sent, never run without it.

Before, the fleet job of a schedule's trigger carried its --max-run-time alone: a
--dry-run schedule deleted rows, and a --safety-level strict one ran a purge that needs
a person's yes with nobody asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aishell import commands
from aishell.agents.jobs import LEVEL_ADDED_UNDER
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.fleet.queues import running_worker
from tests.fleet.schedules_on_queue import (
    add_schedule,
    fleet_ids,
    fleet_on_redis,
    only_fleet_job,
    rows,
    trigger,
)

PURGE = ("log-cleanup", "--table", "app_logs", "--retention-days", "150")


@pytest.fixture
def fleet(edit_config: EditConfig, home: Path, demo_db: Path) -> Iterator[Config]:
    with fleet_on_redis(edit_config) as config, running_worker(home):
        yield config


def test_a_dry_run_schedule_stays_a_dry_run_on_a_worker(
    fleet: Config, home: Path, demo_db: Path
) -> None:
    before = rows(demo_db)
    add_schedule(home, "dry-purge", *PURGE, "--dry-run")
    trigger(fleet, "dry-purge")
    summary = only_fleet_job(fleet)
    (row,) = summary["runs"]
    assert row["status"] == "completed", (row, (home / "worker.log").read_text())
    run = commands.show_run(fleet, row["run_id"])
    assert run["dry_run"] is True
    assert rows(demo_db) == before  # nothing deleted


def test_a_strict_schedule_waits_for_a_person_on_a_worker(
    fleet: Config, home: Path, demo_db: Path
) -> None:
    before = rows(demo_db)
    add_schedule(home, "strict-purge", *PURGE, "--safety-level", "strict")
    trigger(fleet, "strict-purge")
    (row,) = only_fleet_job(fleet)["runs"]
    assert row["status"] == "waiting_approval", (row, (home / "worker.log").read_text())
    run = commands.show_run(fleet, row["run_id"])
    assert run["safety_level"] == "strict"
    assert [s["status"] for s in run["steps"]].count("waiting_approval") == 1
    assert rows(demo_db) == before


def test_a_level_the_agent_tightened_since_holds_on_a_worker(
    fleet: Config, home: Path, demo_db: Path, edit_config: EditConfig
) -> None:
    """A --safety-level permissive given against the agent's moderate level: once the
    agent's level is strict, the trigger's fleet run is strict, as run_schedule's is."""
    before = rows(demo_db)
    add_schedule(home, "loose-purge", *PURGE, "--safety-level", "permissive")
    tightened = edit_config(log_cleanup={"default_config": {"safety_level": "strict"}})
    trigger(tightened, "loose-purge")
    summary = only_fleet_job(tightened)
    assert summary["options"]["safety_level"] == "strict"
    (row,) = summary["runs"]
    run = commands.show_run(tightened, row["run_id"])
    assert run["safety_level"] == "strict", (row, (home / "worker.log").read_text())
    assert row["status"] == "waiting_approval", row
    assert rows(demo_db) == before


def test_every_option_a_schedule_stores_reaches_its_fleet_run(
    fleet: Config, home: Path, demo_db: Path
) -> None:
    words = ("--dry-run", "--safety-level", "strict", "--force", "--planner", "rules")
    window = ("--ignore-window", "--reason", "the nightly window moved", "--max-run-time", "900")
    add_schedule(home, "every-option", *PURGE, *words, *window)
    (stored,) = [s for s in commands.list_schedules(fleet) if s["name"] == "every-option"]
    assert set(stored["options"]) == {
        "dry_run",
        "safety_level",
        "force",
        "planner",
        "ignore_window",
        "reason",
        "max_run_seconds",
        LEVEL_ADDED_UNDER,  # what the level was given against: kept, not carried
    }
    trigger(fleet, "every-option")
    summary = only_fleet_job(fleet)
    carried = {k: v for k, v in stored["options"].items() if k != LEVEL_ADDED_UNDER}
    assert summary["options"] == carried
    (row,) = summary["runs"]
    run = commands.show_run(fleet, row["run_id"])
    assert run["dry_run"] is True and run["safety_level"] == "strict", run
    # The window was ignored for the reason the schedule gave, as run_job records it.
    assert [w["reason"] for w in run["window_ignored"]] == ["the nightly window moved"], run


def test_a_stored_option_no_fleet_job_carries_refuses_the_send(
    edit_config: EditConfig, home: Path, demo_db: Path
) -> None:
    with fleet_on_redis(edit_config) as config:
        # As a newer aishell might have stored it: an option this one's fleet lacks.
        commands.add_schedule(
            config,
            "odd",
            "0 2 * * *",
            "UTC",
            list(PURGE),
            "log_cleanup",
            {"table": "app_logs", "retention_days": 150},
            "demo",
            {"dry_run": True, "sample_rows": 10},
        )
        with pytest.raises(UsageError, match="sample_rows"):
            trigger(config, "odd")
        assert fleet_ids(config) == []  # nothing sent
        with StateStore(config.state_url) as store:
            (missed,) = store.schedule_alerts()["odd"]
    assert missed["kind"] == "missed" and "sample_rows" in missed["error"]
