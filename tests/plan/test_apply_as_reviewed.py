"""`apply` runs a saved plan as its preview showed it: at the safety level it was judged
at (a stricter one given or configured now stands), and a step that would send a write
its preview did not show (a rebuild that found nothing to do then, an index bloated
since) waits for a person's yes to it, naming the statement."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.handlers.purge.test_log_cleanup import ROWS, _database, fill, job, rows_of
from tests.helpers import run_sql, use_target


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


AUDIT_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER audit_gone BEFORE DELETE ON events "
        "BEGIN INSERT INTO audit VALUES (old.id); END"
    ],
    "postgresql": [
        "CREATE FUNCTION audit_it() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO audit VALUES (old.id); RETURN old; END $$",
        "CREATE TRIGGER audit_gone BEFORE DELETE ON events FOR EACH ROW "
        "EXECUTE FUNCTION audit_it()",
    ],
    "mysql": [
        "CREATE TRIGGER audit_gone BEFORE DELETE ON events FOR EACH ROW "
        "INSERT INTO audit VALUES (OLD.id)"
    ],
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_step_judged_higher_than_the_saved_plan_showed_waits_for_a_yes(
    dialect: str, home: Path
) -> None:
    """A purge saved as a plan at medium risk, needing no yes; a trigger that writes on
    each deleted row is added since: `apply --yes` covers what the plan showed, not the
    trigger, so the step waits for a person's yes to it, naming the new risk and reason.
    Nothing is deleted, nothing audited."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_sql(url, "CREATE TABLE audit (id INT)")
        config = use_target(home, url)
        saved = home / "purge.json"
        preview = commands.plan_job(config, "log_cleanup", job(), out=saved)
        purge = next(s for s in preview.steps if s.tool == "delete_old_records")
        assert purge.risk_level == "medium" and not purge.requires_approval, purge
        run_sql(url, *AUDIT_TRIGGER[dialect])

        run = commands.apply_plan(config, saved, approver=PreApproved())

        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert step.status == "waiting_approval", (step.status, step.error)
        said = " ".join(step.personal)
        assert "the saved plan showed it medium" in said, step.personal
        assert "a reason the saved plan did not show" in said, step.personal
        assert len(rows_of(url)) == ROWS
        assert _count(url) == 0


def _count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = int(conn.execute(text("SELECT count(*) FROM audit")).scalar_one())
    engine.dispose()
    return found
