"""A resumed run that stops before a step an earlier go of it finished (here its time
limit, reached at once) reports that step as the store keeps it, not "pending": the
run's own answer and `runs show` agree on every step that ended."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.policy.approvers import NonInteractive
from tests.policy.test_approvals import with_constraints


def test_a_resume_that_stops_early_reports_the_steps_done_before(
    edit_config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
):
    # A step per table: the second table's measure runs after the first one's waits.
    monkeypatch.setattr("aishell.agents.maintenance.STATISTICS_BATCH_TABLES", 1)
    config = with_constraints(
        edit_config, {"type": "max_table_size", "max_rows": 10}, level="moderate"
    )
    first = commands.run_job(
        config,
        "maintenance",
        {"type": "standard", "tables": ["users", "orders"]},
        approver=NonInteractive(),
    )
    assert first.status == "waiting_approval", first.error
    waiting = [s.index for s in first.steps if s.status == "waiting_approval"]
    done = [s.index for s in first.steps if s.status == "succeeded"]
    assert done and waiting and max(done) > min(waiting), [(s.tool, s.status) for s in first.steps]
    commands.decide_steps(config, first.run_id, "approved")

    resumed = commands.resume_run(config, first.run_id, max_run_seconds=0.001)

    assert resumed.status == "interrupted", resumed.error
    stored = {s["index"]: s["status"] for s in commands.show_run(config, first.run_id)["steps"]}
    assert [(i, resumed.steps[i].status) for i in done] == [(i, stored[i]) for i in done]
    assert all(stored[i] == "succeeded" for i in done)
