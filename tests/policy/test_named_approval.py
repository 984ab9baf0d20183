"""Guards no flag waives: a purge over its limits needs a person's yes for that very step
(at the prompt, or `aishell approve RUN --step N`); the preview says so before the run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved, Prompting
from aishell.risk import RiskLevel
from tests.handlers.purge.test_log_cleanup import SMALL, job, logs, rows_of  # noqa: F401 - the fixture

PURGE = 1  # the purge is the second step of a log cleanup plan


def test_yes_never_covers_a_purge_over_its_limits(logs):  # noqa: F811
    config, url = logs
    before = rows_of(url)
    for approver in (PreApproved(), PreApproved(up_to=RiskLevel.MEDIUM, how="--approve-up-to")):
        run = commands.run_job(config, "log_cleanup", job(retention_days=0), approver=approver)
        purge = run.steps[PURGE]
        assert run.status == "waiting_approval", run.error
        assert purge.status == "waiting_approval"
        assert any("retention of 0 days is under 7" in r for r in purge.personal)
    assert rows_of(url) == before


def test_the_prompt_answer_all_does_not_cover_it(logs):  # noqa: F811
    config, url = logs
    asked: list[str] = []

    def answer(request):
        asked.append(request.tool)
        return "no" if request.personal else "all"

    run = commands.run_job(
        config, "log_cleanup", job(retention_days=0), approver=Prompting(ask=answer)
    )
    assert "delete_old_records" in asked
    assert run.steps[PURGE].status == "denied"
    assert rows_of(url)  # nothing was purged


def test_approve_needs_the_step_number_then_resume_purges(logs):  # noqa: F811
    config, _url = logs
    run = commands.run_job(config, "log_cleanup", job(retention_days=0, **SMALL))
    assert run.status == "waiting_approval"
    with pytest.raises(UsageError, match=rf"--step {PURGE}`"):
        commands.decide_steps(config, run.run_id, "approved")
    assert commands.show_run(config, run.run_id)["steps"][PURGE]["status"] == "waiting_approval"
    commands.decide_steps(config, run.run_id, "approved", step=PURGE)
    resumed = commands.resume_run(config, run.run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error
    assert resumed.steps[PURGE].output["rows_deleted"] > 0


def test_preview_and_dry_run_say_what_the_run_asks(logs):  # noqa: F811
    config, _url = logs
    preview = commands.plan_job(config, "log_cleanup", job(retention_days=10))
    purge = preview.steps[PURGE]
    assert purge.requires_approval
    assert any("over max_share" in r for r in purge.personal)
    dry = commands.run_job(config, "log_cleanup", job(retention_days=10), dry_run=True)
    assert dry.steps[PURGE].requires_approval
    assert dry.steps[PURGE].personal == list(purge.personal)
    real = commands.run_job(config, "log_cleanup", job(retention_days=10), approver=PreApproved())
    assert real.steps[PURGE].status == "waiting_approval"
    assert real.steps[PURGE].personal == list(purge.personal)


def test_cli_yes_with_zero_retention_waits_and_says_why(demo_db):
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "run",
            "log-cleanup",
            "--table",
            "app_logs",
            "--retention-days",
            "0",
            "--yes",
            "--json",
        ],
    )
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    purge = data["steps"][PURGE]
    assert purge["status"] == "waiting_approval"
    assert any("retention of 0 days is under 7" in r for r in purge["personal"])
    plan = runner.invoke(
        cli, ["plan", "log-cleanup", "--table", "app_logs", "--retention-days", "0", "--json"]
    )
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["steps"][PURGE]["requires_approval"] is True


def test_yes_never_covers_a_restore_over_tables_that_hold_data(config, demo_db):
    from tests.handlers.backup.test_restore_prechecks import sqlite_backup
    from tests.helpers import digest

    backup = sqlite_backup(config)
    before = digest(demo_db)
    run = commands.restore(config, backup["id"], "demo", replace=True, approver=PreApproved())
    [step] = run.steps
    assert run.status == "waiting_approval" and step.status == "waiting_approval"
    assert any("replaces 4 object(s) holding data in 'demo'" in r for r in step.personal)
    with pytest.raises(UsageError, match="needs its own approval"):
        commands.decide_steps(config, run.run_id, "approved")
    assert digest(demo_db) == before
    commands.decide_steps(config, run.run_id, "approved", step=0)
    done = commands.resume_run(config, run.run_id)
    assert done.status == "completed", done.error
