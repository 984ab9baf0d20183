"""--ignore-window: one run not held for the maintenance window, recorded with who and
why, refused without a reason, and lowering nothing else."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import UsageError
from aishell.policy.approvers import current_user

WINDOW = {"type": "maintenance_window", "allowed_hours": [1, 2, 3], "timezone": "UTC"}
WHY = "disk nearly full; the DBA on call agreed"
JOB = {"type": "full", "tables": ["orders"]}


def at_two_pm() -> datetime:
    return datetime(2026, 11, 17, 14, tzinfo=UTC)


def with_window(edit_config, *more):
    return edit_config(maintenance={"safety_constraints": [WINDOW, *more]})


def test_the_window_is_lifted_for_the_run_and_the_decision_recorded(edit_config, demo_db):
    config = with_window(edit_config)
    held = commands.run_job(config, "maintenance", JOB, clock=at_two_pm)
    assert held.status == "out_of_window"
    run = commands.run_job(
        config, "maintenance", JOB, clock=at_two_pm, ignore_window=True, reason=f"  {WHY} "
    )
    assert run.status == "completed", run.error
    shown = commands.show_run(config, run.run_id)
    [decision] = shown["window_ignored"]
    assert decision["decision"] == "ignore_window"
    assert (decision["by"], decision["reason"]) == (current_user(), WHY)
    assert commands.show_run(config, held.run_id)["window_ignored"] == []


def test_it_lowers_nothing_else(edit_config, demo_db):
    size = {"type": "max_table_size", "max_rows": 100}
    config = with_window(edit_config, size)
    run = commands.run_job(
        config, "maintenance", JOB, clock=at_two_pm, ignore_window=True, reason=WHY
    )
    # Not held for the window, but the table's size still needs a person's yes.
    assert run.status == "waiting_approval"
    rebuild = run.steps[2]
    assert rebuild.status == "waiting_approval"
    assert not any("maintenance window" in r for r in rebuild.reasons)
    assert any("max_table_size" in r for r in rebuild.reasons)


def test_a_resume_may_lift_the_window_for_itself(edit_config, demo_db):
    config = with_window(edit_config)
    held = commands.run_job(config, "maintenance", JOB, clock=at_two_pm)
    assert commands.resume_run(config, held.run_id, clock=at_two_pm).status == "out_of_window"
    resumed = commands.resume_run(
        config, held.run_id, clock=at_two_pm, ignore_window=True, reason=WHY
    )
    assert resumed.status == "completed", resumed.error
    assert [d["reason"] for d in commands.show_run(config, held.run_id)["window_ignored"]] == [WHY]


def test_no_reason_no_run(config, demo_db):
    with pytest.raises(UsageError, match="--ignore-window needs --reason"):
        commands.run_job(config, "maintenance", JOB, ignore_window=True, reason="  ")
    with pytest.raises(UsageError, match="--reason says why the maintenance window"):
        commands.run_job(config, "maintenance", JOB, reason=WHY)
    assert commands.list_runs(config) == []


def test_the_command_line(edit_config, demo_db, home: Path):
    with_window(edit_config, {"type": "max_table_size", "max_rows": 100})
    runner = CliRunner()
    words = ["run", "maintenance", "--type", "full", "--tables", "orders", "--non-interactive"]
    refused = runner.invoke(cli, [*words, "--ignore-window"])
    assert refused.exit_code == 2
    assert refused.output.splitlines() == [
        "Error: --ignore-window needs --reason: say why this run may go outside the "
        "maintenance window (recorded with who asked)"
    ]
    scheduled = runner.invoke(
        cli, ["schedule", "add", "w", "--cron", "0 2 * * *", "--", *words[1:], "--ignore-window"]
    )
    assert scheduled.exit_code == 2 and "--ignore-window needs --reason" in scheduled.output
    given = ["--ignore-window", "--reason", WHY]
    added = runner.invoke(
        cli, ["schedule", "add", "w", "--cron", "0 2 * * *", "--", *words[1:], *given]
    )
    assert added.exit_code == 0, added.output
    [stored] = commands.list_schedules(load_config(home=home))
    assert stored["options"]["ignore_window"] is True and stored["options"]["reason"] == WHY
    ran = runner.invoke(cli, [*words, "--ignore-window", "--reason", WHY, "--json"])
    assert ran.exit_code == 3, ran.output  # max_table_size still asks for a person
    run_id = json.loads(ran.stdout)["run_id"]
    shown = runner.invoke(cli, ["runs", "show", run_id])
    assert f"maintenance window ignored by {current_user()}" in shown.output
    assert WHY in shown.output
