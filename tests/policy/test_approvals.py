"""Constraints, approvals, overrides, saved plans and dry runs, end to end on SQLite."""

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from aishell import commands
from aishell.cli import cli
from aishell.errors import ConfigError, PlanError, UsageError
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import NonInteractive, PreApproved
from aishell.risk import RiskLevel
from aishell.state.backups import DATABASE_KEY
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.targets.engines import open_target
from aishell.targets.identity import backup_identity
from tests.helpers import corrupt_index, digest


def clock(hour, minute=0):
    return lambda: datetime(2026, 11, 17, hour, minute, tzinfo=UTC)


def with_constraints(edit_config, *constraints, level="moderate"):
    return edit_config(
        maintenance={
            "default_config": {"safety_level": level},
            "safety_constraints": list(constraints),
        }
    )


def statuses(result):
    return [(s.tool, s.status) for s in result.steps]


def test_unknown_constraint_type_is_a_config_error(edit_config):
    config = with_constraints(edit_config, {"type": "full_moon_only"})
    with pytest.raises(ConfigError) as err:
        config.agent("maintenance")
    assert (
        "maintenance.yaml: maintenance_agent.safety_constraints.0: unknown constraint type "
        "'full_moon_only'; expected one of: max_table_size" in str(err.value)
    )


def test_bad_time_zone_is_a_config_error(edit_config):
    config = with_constraints(
        edit_config, {"type": "maintenance_window", "allowed_hours": [1], "timezone": "Mars/Base"}
    )
    with pytest.raises(ConfigError, match="timezone: unknown time zone 'Mars/Base'"):
        config.agent("maintenance")


def test_max_table_size_holds_a_big_table_for_approval(edit_config, demo_db):
    config = with_constraints(edit_config, {"type": "max_table_size", "max_rows": 2000})
    result = commands.run_job(config, "maintenance", {"type": "full", "tables": ["app_logs"]})
    assert result.status == "waiting_approval"
    rebuild = result.steps[2]
    assert rebuild.status == "waiting_approval"
    assert rebuild.reasons == ["table 'app_logs' has 5,400 rows, over max_table_size (2,000 rows)"]


def test_outside_the_window_risky_steps_wait_and_resume_inside_it(edit_config, demo_db):
    config = with_constraints(
        edit_config, {"type": "maintenance_window", "allowed_hours": [1, 2, 3], "timezone": "UTC"}
    )
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["orders"]}, clock=clock(14)
    )
    assert result.status == "out_of_window"
    assert statuses(result) == [
        ("analyze_database_health", "succeeded"),
        ("analyze_table_fragmentation", "succeeded"),
        ("rebuild_fragmented_indexes", "deferred"),
        ("optimize_table", "deferred"),
        ("update_table_statistics", "succeeded"),
        ("generate_maintenance_report", "pending"),
    ]
    assert result.error.startswith("3 step(s) left for later: outside the maintenance window")
    resumed = commands.resume_run(config, result.run_id, clock=clock(1, 30))
    assert resumed.status == "completed"
    assert [s.attempts for s in resumed.steps][:2] == [1, 1]  # not run again


def test_a_step_that_will_not_fit_the_window_is_left_for_the_next_one(edit_config, demo_db, home):
    config = with_constraints(
        edit_config, {"type": "maintenance_window", "allowed_hours": [1, 2], "timezone": "UTC"}
    )
    first = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["orders"]}, clock=clock(1)
    )
    assert first.status == "completed"
    # History says an optimize of orders takes two hours, and the file has free pages
    # again, so it has a VACUUM to do.
    conn = sqlite3.connect(home / "state.db")
    conn.execute(
        "UPDATE steps SET started_at = '2026-11-16T23:00:00.000+00:00', "
        "finished_at = '2026-11-17T01:00:00.000+00:00' WHERE tool = 'optimize_table'"
    )
    conn.commit()
    conn.close()
    free_pages(demo_db)
    second = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["orders"]}, clock=clock(2, 15)
    )
    assert second.status == "out_of_window"
    assert second.steps[3].error == (
        "expected to take 2.0 h (median of 1 earlier run(s)), but the maintenance window "
        "closes at 03:00 UTC (in 45 min)"
    )
    # The first run rebuilt what there was: this rebuild writes nothing, and a read
    # waits for no window.
    assert second.steps[2].sql == ['-- no index of "orders" is over the threshold']
    assert second.steps[2].status == "succeeded"


def free_pages(database: Path) -> None:
    """Pages on the file's free list, which optimize_table's VACUUM gives back."""
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE filler AS SELECT zeroblob(200000) AS b")
        conn.execute("DROP TABLE filler")


def test_backup_required_asks_unless_a_verified_backup_is_fresh(edit_config, demo_db):
    config = with_constraints(
        edit_config, {"type": "backup_required", "before_operations": ["optimize_table"]}
    )
    result = commands.run_job(config, "maintenance", {"type": "full", "tables": ["orders"]})
    optimize = result.steps[3]
    assert optimize.status == "waiting_approval"
    assert optimize.reasons == [
        "optimize_table needs a verified backup of 'demo' (of the database it reaches now) "
        "from the last 24 h and none was found; take a backup first or approve without one"
    ]
    # A backup whose file is there: one whose file is gone proves nothing.
    taken = demo_db.with_name("taken.sqlite")
    taken.write_bytes(b"a backup")
    handle = open_target(config, "demo", read_only=True)
    with handle.connect() as conn:
        database = backup_identity(conn)
    handle.close()
    # Recorded as a run records one: signed with the home's key.
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        now = datetime.now(UTC).isoformat()
        store.record_backup(
            target="demo",
            kind="full",
            path=str(taken),
            created_at=now,
            verified_at=now,
            manifest={DATABASE_KEY: database},
        )
    again = commands.run_job(config, "maintenance", {"type": "full", "tables": ["orders"]})
    assert again.status == "completed"


def test_low_risk_steps_run_and_notify(config, demo_db):
    result = commands.run_job(config, "maintenance", {"type": "quick", "tables": ["users"]})
    events = commands.show_run(config, result.run_id)["events"]
    notes = [e for e in events if e["kind"] == "notify"]
    assert [e["data"]["tool"] for e in notes] == ["update_table_statistics"]
    assert result.steps[1].confirmation == "notify"


def test_approve_up_to_approves_that_far_and_no_further(config, demo_db):
    corrupt_index(demo_db)
    approver = PreApproved(up_to=RiskLevel.MEDIUM, how="--approve-up-to medium")
    result = commands.run_job(config, "maintenance", {"type": "emergency"}, approver=approver)
    repair = result.steps[2]
    assert repair.status == "waiting_approval" and repair.confirmation == "review"
    with pytest.raises(ValueError, match="critical steps cannot be approved in advance"):
        PreApproved(up_to=RiskLevel.CRITICAL)


def test_approve_up_to_critical_is_refused_by_the_cli(demo_db):
    result = CliRunner().invoke(cli, ["run", "maintenance", "--approve-up-to", "critical"])
    assert result.exit_code == 2 and "'critical' is not one of" in result.output


def test_safety_level_override_tightens_freely(config, demo_db):
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["orders"]}, safety_level="strict"
    )
    assert result.status == "waiting_approval" and result.safety_level == "strict"
    events = commands.show_run(config, result.run_id)["events"]
    assert any(e["kind"] == "safety_level_override" and e["data"]["to"] == "strict" for e in events)


def test_loosening_production_needs_force(edit_config, demo_db, home):
    config = edit_config(
        {"targets": {"demo": {"environment": "production"}}},
        maintenance={"default_config": {"safety_level": "strict"}},
    )
    before = digest(demo_db)
    with pytest.raises(
        UsageError,
        match="is production: loosening the safety level from strict to permissive needs --force",
    ):
        commands.run_job(config, "maintenance", {"type": "quick"}, safety_level="permissive")
    assert digest(demo_db) == before
    result = commands.run_job(
        config,
        "maintenance",
        {"type": "full", "tables": ["users"]},
        safety_level="permissive",
        force=True,
    )
    # Production still needs approval from medium, whatever the level.
    assert result.steps[2].status == "waiting_approval"
    assert "target 'demo' is production" in result.steps[2].reasons[0]
    override = [
        e
        for e in commands.show_run(config, result.run_id)["events"]
        if e["kind"] == "safety_level_override"
    ]
    assert override[0]["data"]["force"] is True and override[0]["data"]["by"]


def test_a_write_under_dry_run_fails_at_the_database(config, demo_db):
    before = digest(demo_db)
    handle = open_target(config, None, read_only=True)
    conn = handle.connect()
    try:
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("DELETE FROM app_logs"))
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("VACUUM"))
    finally:
        conn.close()
        handle.close()
    assert digest(demo_db) == before


def test_dry_run_previews_risk_approval_and_effect(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    result = commands.run_job(
        config, "maintenance", {"type": "full", "tables": ["app_logs"]}, dry_run=True
    )
    rebuild = result.steps[2]
    assert rebuild.status == "previewed" and rebuild.requires_approval
    assert rebuild.estimate["tables"]["app_logs"]["rows"] == 5400
    assert "idx_app_logs_level" in rebuild.estimate["indexes_to_rebuild"]
    assert result.steps[3].estimate["free_bytes_to_reclaim"] > 0


# --- saved plans --------------------------------------------------------------------------


def test_plan_out_then_apply_runs_exactly_that_plan(demo_db, home):
    runner = CliRunner()
    out = home / "plan.json"
    made = runner.invoke(cli, ["plan", "maintenance", "--type", "full", "--out", str(out)])
    assert made.exit_code == 0 and out.is_file()
    saved = json.loads(out.read_text())
    applied = runner.invoke(cli, ["apply", str(out), "--json"])
    assert applied.exit_code == 0, applied.output
    data = json.loads(applied.stdout)
    assert data["plan_hash"] == saved["plan_hash"] and data["status"] == "completed"


def test_an_edited_plan_file_is_refused(demo_db, home):
    out = home / "plan.json"
    CliRunner().invoke(cli, ["plan", "maintenance", "--type", "quick", "--out", str(out)])
    data = json.loads(out.read_text())
    data["steps"][1]["params"]["table"] = "users"
    out.write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["apply", str(out)])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: Plan file {out}: plan hash does not match its contents; the plan was edited\n"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("CREATE INDEX idx_users_name ON users (name)", "indexes of 'users' changed"),
        ("CREATE TABLE audit (id INTEGER PRIMARY KEY)", "new tables: audit"),
        ("DELETE FROM users WHERE id % 2 = 0", "'users' has 750 rows, the plan assumed 1,500"),
    ],
)
def test_a_plan_for_a_target_that_drifted_is_refused(config, demo_db, home, change, message):
    out = home / "plan.json"
    commands.plan_job(config, "maintenance", {"type": "quick"}, out=out)
    conn = sqlite3.connect(demo_db)
    conn.execute(change)
    conn.commit()
    conn.close()
    before = digest(demo_db)
    with pytest.raises(PlanError, match="changed since the plan was made") as err:
        commands.apply_plan(config, commands.load_plan_file(out))
    assert message in str(err.value)
    assert digest(demo_db) == before


def test_a_plan_whose_tools_changed_is_refused(config, demo_db):
    plan = Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "x"},
        (Step("step_0", "count_table_rows", {"table": "users"}),),
        tool_fingerprints={"count_table_rows": "0" * 64},
    )
    with pytest.raises(PlanError, match="Tool 'count_table_rows' changed since the plan was made"):
        commands.apply_plan(config, plan)


def test_resume_refuses_a_finished_or_unknown_run(config, demo_db):
    done = commands.run_job(config, "maintenance", {"type": "quick"})
    with pytest.raises(UsageError, match="is completed; there is nothing to resume"):
        commands.resume_run(config, done.run_id)
    with pytest.raises(UsageError, match="has no step waiting for approval"):
        commands.decide_steps(config, done.run_id, "approved")


def test_resume_without_a_decision_keeps_waiting(edit_config, demo_db):
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    first = commands.run_job(config, "maintenance", {"type": "full", "tables": ["users"]})
    again = commands.resume_run(config, first.run_id, approver=NonInteractive())
    assert again.status == "waiting_approval"
    assert [s.attempts for s in again.steps][:2] == [1, 1]


class _LateYes:
    """A person who answers yes at the prompt once the clock has passed `later`."""

    def __init__(self, now: list[datetime], later: datetime) -> None:
        self.now, self.later = now, later

    def decide(self, request):
        from aishell.policy.approvers import Answer, Decision

        self.now[0] = self.later
        return Answer(Decision.APPROVE, "dba", "prompt", "approved at the prompt", waited=True)


def test_a_yes_given_after_the_window_closed_defers_the_step(edit_config, demo_db):
    """Asked at 02:50 in a window that ends at 03:00, answered at 03:10: the step waits
    for the next window instead of running outside this one."""
    config = with_constraints(
        edit_config,
        {"type": "maintenance_window", "allowed_hours": [1, 2], "timezone": "UTC"},
        {"type": "max_table_size", "max_rows": 10},
    )
    now = [datetime(2026, 11, 17, 2, 50, tzinfo=UTC)]
    result = commands.run_job(
        config,
        "maintenance",
        {"type": "full", "tables": ["orders"]},
        clock=lambda: now[0],
        approver=_LateYes(now, datetime(2026, 11, 17, 3, 10, tzinfo=UTC)),
    )
    asked = [s for s in result.steps if s.approval is not None]
    assert asked, statuses(result)
    assert asked[0].status == "deferred", (asked[0].tool, asked[0].status, asked[0].error)
    assert "outside the maintenance window" in str(asked[0].error)
