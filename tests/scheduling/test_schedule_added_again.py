"""A schedule removed and added again under its name while nothing served is a new
schedule: the trigger its old job still held (missed while serve was down, before the
new schedule existed) is not the new one's, and does not run its job when serve starts
(a new schedule's first trigger counts from when it was added)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from tests.scheduling.test_schedules import (
    add,
    job_store_next_run,
    scheduled_runs,
    serving,
    wait_for,
)


def test_a_trigger_of_the_removed_schedule_does_not_run_the_one_added_again(
    demo_db: Path, config: Config
) -> None:
    add(config, "nightly", "0 3 * * *", ["maintenance", "--type", "quick"])
    with serving(config) as lines:
        wait_for(lambda: any("nightly: added" in line for line in lines), "the job")
    # Missed while nothing served: the old schedule's trigger, ten minutes ago.
    job_store_next_run(config, "nightly", datetime.now(UTC) - timedelta(minutes=10))
    commands.remove_schedule(config, "nightly")
    add(config, "nightly", "0 3 * * *", ["maintenance", "--type", "full"])
    with serving(config) as lines:
        time.sleep(3)
    assert scheduled_runs(config, "nightly") == [], lines
    assert any(line.startswith("schedule nightly: added, next run") for line in lines), lines
    [listed] = commands.list_schedules(config)
    assert listed["next_run"] > datetime.now(UTC), listed
