"""`aishell fleet status` and the per-target metrics over a fleet of four SQLite targets
(tests/fleet/builders.py): each target's last run, waiting approvals, newest
restore-proven backup and next job, read in as many queries for eight targets as for
four."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.state.reached import NEVER_REACHED
from aishell.state.store import StateStore
from aishell.view.status import fleet_status
from tests.conftest import EditConfig
from tests.fleet.builders import FAILED_ERROR, RUN_IDS, build_fleet, fleet_config


@pytest.fixture
def fleet(edit_config: EditConfig, home: Path, demo_template: Path) -> Config:
    config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    return config


def test_each_target_shows_its_last_run_approvals_backup_and_next_job(fleet: Config) -> None:
    rows = {row["target"]: row for row in commands.fleet_status(fleet)["targets"]}
    assert list(rows) == ["alpha", "beta", "gamma", "idle"]
    alpha, beta, gamma, idle = (rows[name] for name in rows)
    assert alpha["last_run"]["status"] == "completed"
    assert alpha["last_run"]["run_id"] == RUN_IDS["alpha"]
    assert alpha["last_run"]["agent"] == "maintenance"
    assert 25.9 * 3600 < alpha["backup"]["age_seconds"] < 26.1 * 3600
    assert alpha["next_job"]["schedule"] == "nightly-alpha"
    assert datetime.fromisoformat(alpha["next_job"]["at"]) > datetime.now(UTC)
    assert beta["last_run"]["status"] == "failed"
    assert FAILED_ERROR in beta["last_run"]["error"]
    # Taken, never proven; and no run reached its database.
    assert beta["backup"] == {"proven_at": None, "age_seconds": None, "reason": NEVER_REACHED}
    assert gamma["last_run"]["status"] == "waiting_approval"
    assert gamma["approvals"]["waiting"] == 1
    assert gamma["approvals"]["oldest_age_seconds"] >= 0
    assert alpha["approvals"] == {"waiting": 0, "oldest_since": None, "oldest_age_seconds": None}
    assert idle["last_run"] is None
    assert idle["next_job"] is None and beta["next_job"] is None


def _statements(config: Config) -> int:
    sent: list[str] = []
    with StateStore(config.state_url) as store:
        event.listen(store.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        fleet_status(config, store, datetime.now(UTC))
    return len(sent)


def test_twice_the_targets_cost_no_more_queries(
    fleet: Config, edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    four = _statements(fleet)
    more: dict[str, Any] = {f"extra{i}": {"url": f"sqlite:///extra{i}.db"} for i in range(4)}
    bigger = edit_config({"targets": more})
    assert len(bigger.main.targets) == 8
    assert _statements(bigger) == four <= 6


def test_the_cli_table_and_json(fleet: Config) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["fleet", "status"])
    assert shown.exit_code == 0, shown.output
    assert "never ran" in shown.output and "waiting_approval" in shown.output
    assert "nightly-alpha" in shown.output and "26.0 h old" in shown.output
    as_json = runner.invoke(cli, ["fleet", "status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    found = json.loads(as_json.output)
    assert [t["target"] for t in found["targets"]] == ["alpha", "beta", "gamma", "idle"]
    assert found["targets"][3]["last_run"] is None


def _gauge(text: str, line_start: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


def test_metrics_per_target(fleet: Config) -> None:
    text = commands.metrics(fleet)
    assert _gauge(text, 'aishell_approvals_waiting{target="gamma"}') == 1
    assert _gauge(text, 'aishell_approvals_waiting{target="idle"}') == 0
    assert _gauge(text, 'aishell_approval_oldest_wait_seconds{target="gamma"}') >= 0
    assert 'aishell_approval_oldest_wait_seconds{target="alpha"}' not in text
    assert 25.9 * 3600 < _gauge(text, 'aishell_backup_age_seconds{target="alpha"}') < 26.1 * 3600
    assert 'aishell_backup_age_seconds{target="beta"}' not in text  # none proven
    failed = 'aishell_last_run_status{agent="maintenance",status="failed",target="beta"}'
    assert _gauge(text, failed) == 1
    assert _gauge(text, 'aishell_last_run_start_time_seconds{agent="maintenance",target="beta"}')
    next_run = 'aishell_schedule_next_run_time_seconds{schedule="nightly-alpha",target="alpha"}'
    assert _gauge(text, next_run) > datetime.now(UTC).timestamp()
