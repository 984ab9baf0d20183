"""The maintenance window holds a step by the risk it is judged at, not its tool's label.

A low-risk tool's step runs user code the server calls for it (ANALYZE evaluates an
expression index's function), and is judged high risk for it: "steps above low risk
run only in the window" holds it outside the window like any high-risk step, even
approved in advance (--yes). A low-risk step that runs no user code is not held.
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.executor.results import RunResult
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target


def _at_two_pm() -> datetime:
    return datetime(2026, 11, 17, 14, tzinfo=UTC)


def _windowed(home: Path, url: str) -> Config:
    use_target(home, url)
    path = home / "config" / "agents" / "maintenance.yaml"
    agent = yaml.safe_load(path.read_text())
    window = {"type": "maintenance_window", "allowed_hours": [1, 2, 3], "timezone": "UTC"}
    agent["maintenance_agent"]["safety_constraints"] = [window]
    path.write_text(yaml.safe_dump(agent))
    return load_config(home=home)


def _analyze(config: Config, table: str) -> RunResult:
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "update_table_statistics", {"tables": [table]}
    )
    return commands.apply_plan(config, plan, approver=PreApproved(), clock=_at_two_pm)


def test_postgresql_analyze_running_user_code_waits_for_the_window(home: Path, pg_url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    table, plain, function = f"wr_{suffix}", f"wp_{suffix}", f"wr_f_{suffix}"
    run_sql(
        pg_url,
        f"CREATE FUNCTION {function}(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE "
        "AS $$ BEGIN RETURN v * 2; END $$",
        f"CREATE TABLE {table} (id int PRIMARY KEY, v int)",
        f"CREATE INDEX {table}_f ON {table} ({function}(v))",
        f"INSERT INTO {table} SELECT g, g FROM generate_series(1, 200) g",
        f"CREATE TABLE {plain} (id int PRIMARY KEY, v int)",
    )
    config = _windowed(home, pg_url)
    held = _analyze(config, table)
    step = held.steps[0]
    assert step.risk_level == "high", (step.risk_level, step.reasons)
    assert held.status == "out_of_window", (held.status, step.status, step.error)
    assert step.status == "deferred" and "maintenance window" in (step.error or "")
    # Its tool's own risk (low) is not held by the window.
    assert _analyze(config, plain).status == "completed"
