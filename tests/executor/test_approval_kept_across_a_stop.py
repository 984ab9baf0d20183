"""A step a person approved that began and was stopped midway (here, `aishell stop`
after its second batch) is approved still when the run is resumed: the purge goes on
from its last batch without asking again, as long as what it was approved for still
covers it. One never approved is asked about."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.handlers.purge.test_log_cleanup import _batches_done
from tests.helpers import query

SLOW = {
    "table": "app_logs",
    "retention_days": 90,
    "batch_size": 100,
    "max_batch_size": 100,
    "sleep_ms": 300,
}


def _stopped_after_two_batches(config: Config, home: Path) -> Any:
    outcome: dict[str, Any] = {}

    def purge() -> None:
        outcome["result"] = commands.run_job(
            config, "log_cleanup", dict(SLOW), approver=PreApproved(), safety_level="strict"
        )

    worker = threading.Thread(target=purge)
    worker.start()
    while _batches_done(home) < 2 and worker.is_alive():
        time.sleep(0.02)
    commands.stop_run(config, commands.list_runs(config, limit=1)[0]["run_id"])
    worker.join(120)
    return outcome["result"]


def test_an_approved_purge_stopped_midway_goes_on_without_asking(
    demo_db: Path, config: Config, home: Path
) -> None:
    before = query(demo_db, "SELECT count(*) FROM app_logs")[0][0]
    stopped = _stopped_after_two_batches(config, home)
    purge = next(s for s in stopped.steps if s.tool == "delete_old_records")
    assert purge.status == "interrupted", purge.error
    midway = query(demo_db, "SELECT count(*) FROM app_logs")[0][0]
    assert midway < before
    # Resumed without anyone to ask: the purge's approval still covers it.
    resumed = commands.resume_run(config, stopped.run_id)
    purge = next(s for s in resumed.steps if s.tool == "delete_old_records")
    assert resumed.status == "completed", (purge.status, purge.error)
    assert query(demo_db, "SELECT count(*) FROM app_logs")[0][0] < midway
    # The one question is the first go's, which --yes answered.
    events = commands.show_run(config, stopped.run_id)["events"]
    assert len([e for e in events if e["kind"] == "approval_requested"]) == 1, events
