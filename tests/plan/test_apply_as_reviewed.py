"""`apply` runs a saved plan as its preview showed it: at the safety level it was judged
at (a stricter one given or configured now stands), and a step that would send a write
its preview did not show (a rebuild that found nothing to do then, an index bloated
since) waits for a person's yes to it, naming the statement."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel


def _bloat(path: Path) -> None:
    """app_logs' rows deleted and written again in another order: its indexes' pages
    half empty, its rows and index set as they were."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TEMP TABLE kept AS SELECT * FROM app_logs")
        db.execute("DELETE FROM app_logs")
        db.execute("INSERT INTO app_logs SELECT * FROM kept ORDER BY random()")


def test_a_write_the_saved_plan_did_not_show_waits_for_a_yes(
    config: Config, demo_db: Path, tmp_path: Path
) -> None:
    with sqlite3.connect(demo_db) as db:  # compact: nothing for a rebuild to do
        db.execute("VACUUM")
    saved = tmp_path / "plan.json"
    preview = commands.plan_job(config, "maintenance", {"type": "full"}, out=saved)
    rebuild = next(s for s in preview.steps if s.tool == "rebuild_fragmented_indexes")
    assert all(sql.startswith("--") for sql in rebuild.sql), rebuild.sql  # nothing to do
    _bloat(demo_db)

    run = commands.apply_plan(config, saved, approver=PreApproved(up_to=RiskLevel.HIGH))

    step = next(s for s in run.steps if s.tool == "rebuild_fragmented_indexes")
    assert run.status == "waiting_approval", (run.status, run.error)
    assert step.status == "waiting_approval", step.status
    said = [r for r in step.reasons if "the saved plan did not show" in r]
    assert said and "REINDEX" in said[0], step.reasons
    sent = [s["sql"] for s in commands.run_statements(config, run.run_id)]
    assert not any(s.lstrip().upper().startswith("REINDEX") for s in sent), sent

    # A yes to that very step runs it (each later step whose writes were not shown
    # waits for its own).
    commands.decide_steps(config, run.run_id, "approved", step=step.index)
    resumed = commands.resume_run(config, run.run_id)
    while resumed.status == "waiting_approval":
        for waiting in (s for s in resumed.steps if s.status == "waiting_approval"):
            commands.decide_steps(config, run.run_id, "approved", step=waiting.index)
        resumed = commands.resume_run(config, run.run_id)
    assert resumed.status == "completed", resumed.error
    sent = [s["sql"] for s in commands.run_statements(config, run.run_id)]
    assert any(s.lstrip().upper().startswith("REINDEX") for s in sent), sent


def test_a_plan_saved_at_a_stricter_level_runs_at_it(
    config: Config, demo_db: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    commands.plan_job(config, "maintenance", {"type": "quick"}, safety_level="strict", out=saved)
    assert json.loads(saved.read_text())["reviewed"]["safety_level"] == "strict"

    run = commands.apply_plan(config, saved)

    assert run.safety_level == "strict"
    # One saved at the configured level runs at a stricter level given now.
    other = tmp_path / "other.json"
    commands.plan_job(config, "maintenance", {"type": "quick"}, out=other)
    assert commands.apply_plan(config, other, safety_level="strict").safety_level == "strict"
