"""A step a person approved that began and was stopped midway (here, the run's time
limit) is approved still when the run is resumed: the purge goes on from its last
batch without asking again, as long as what it was approved for still covers it. One
never approved is asked about."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import query

SLOW = {
    "table": "app_logs",
    "retention_days": 90,
    "batch_size": 100,
    "max_batch_size": 100,
    "sleep_ms": 300,
}


def test_an_approved_purge_stopped_midway_goes_on_without_asking(demo_db: Path, config) -> None:
    before = query(demo_db, "SELECT count(*) FROM app_logs")[0][0]
    stopped = commands.run_job(
        config,
        "log_cleanup",
        dict(SLOW),
        approver=PreApproved(),
        safety_level="strict",
        # Past the time a first run in a new home takes to reach the purge on a busy
        # machine (the store made, the tools' catalog loaded), well short of its end.
        max_run_seconds=8,
    )
    purge = next(s for s in stopped.steps if s.tool == "delete_old_records")
    assert purge.status == "interrupted", purge.error
    midway = query(demo_db, "SELECT count(*) FROM app_logs")[0][0]
    assert midway < before
    # Resumed without anyone to ask: the purge's approval still covers it.
    resumed = commands.resume_run(config, stopped.run_id, max_run_seconds=5)
    purge = next(s for s in resumed.steps if s.tool == "delete_old_records")
    assert purge.status != "waiting_approval", (purge.status, purge.error)
    assert query(demo_db, "SELECT count(*) FROM app_logs")[0][0] < midway
