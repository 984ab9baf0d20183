"""The risk a run records for a step is the risk it was judged at: raised from its tool's
where the server runs user code for it (a trigger the purge's DELETE fires), as the
plan and the prompt showed it, whether the step ran or waits for a yes. Before, `runs
show` gave the tool's own risk, lower than what was approved."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aishell import commands
from aishell.policy.approvers import NonInteractive, PreApproved
from tests.helpers import use_target

JOB = {"table": "logs", "date_column": "created_at", "retention_days": 30}


def _logs_with_a_trigger(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
        db.execute("CREATE TABLE gone (id INTEGER)")
        db.executemany(
            "INSERT INTO logs VALUES (?, ?)",
            [(i, "2020-01-01" if i <= 30 else "2099-01-01") for i in range(1, 101)],
        )
        db.execute(
            "CREATE TRIGGER noted AFTER DELETE ON logs BEGIN INSERT INTO gone VALUES (old.id); END"
        )


def _purge_risk(config, run_id: str) -> str:
    steps = commands.show_run(config, run_id)["steps"]
    (risk,) = [s["risk_level"] for s in steps if s["tool"] == "delete_old_records"]
    return str(risk)


def test_a_step_run_at_a_raised_risk_is_recorded_at_it(home: Path, tmp_path: Path) -> None:
    _logs_with_a_trigger(tmp_path / "logs.db")
    config = use_target(home, f"sqlite:///{tmp_path / 'logs.db'}")
    planned = commands.plan_job(config, "log_cleanup", JOB).to_dict()["steps"]
    assert [s["risk_level"] for s in planned if s["tool"] == "delete_old_records"] == ["high"]
    ran = commands.run_job(config, "log_cleanup", JOB, approver=PreApproved())
    assert ran.status == "completed", ran.error
    assert _purge_risk(config, ran.run_id) == "high"


def test_a_step_waiting_at_a_raised_risk_is_recorded_at_it(home: Path, tmp_path: Path) -> None:
    _logs_with_a_trigger(tmp_path / "logs.db")
    config = use_target(home, f"sqlite:///{tmp_path / 'logs.db'}")
    waiting = commands.run_job(config, "log_cleanup", JOB, approver=NonInteractive(why="test"))
    assert waiting.status == "waiting_approval", waiting.error
    assert _purge_risk(config, waiting.run_id) == "high"
