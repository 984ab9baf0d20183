"""A schedule added while no serve ran, whose trigger came due since and is now past
scheduler.misfire_grace_seconds, is reported missed when serve starts (a line of the
log and the missed alert), as a trigger of a schedule serve already knew is; never
dropped in silence."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aishell import commands
from aishell.units import stamp
from tests.scheduling.test_added_while_not_served import _added_ago
from tests.scheduling.test_scheduler_owns import notify_script
from tests.scheduling.test_schedules import add, scheduled_runs, serving, wait_for

QUICK = ["maintenance", "--type", "quick"]


def _missed_when_added(home: Path, edit_config, days_ago: int) -> None:
    """A daily schedule due an hour ago, added `days_ago` days before; grace one minute:
    the newest of its triggers is reported missed, once, and none of them runs."""
    command, received = notify_script(home)
    config = edit_config(
        {"scheduler": {"misfire_grace_seconds": 60}, "notifications": {"command": command}}
    )
    due = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    add(config, "nightly", f"{due.minute} {due.hour} * * *", QUICK)
    _added_ago(config, "nightly", 60 * 24 * days_ago + 120)
    with serving(config) as lines:
        wait_for(lambda: any("nightly: missed its run" in line for line in lines), "missed")
        wait_for(received.exists, "the notification")
    assert not any("nightly: started" in line for line in lines), lines
    assert scheduled_runs(config, "nightly") == []
    (message,) = [json.loads(line) for line in received.read_text().splitlines()]
    assert message["schedule"] == "nightly" and message["status"] == "missed"
    assert message["due"] == stamp(due), message
    (listed,) = commands.list_schedules(config)
    assert listed["alert"]["kind"] == "missed"
    assert listed["next_run"] == due + timedelta(days=1)
    # Said once: the next start has nothing to report.
    with serving(config) as lines:
        pass
    assert not any("missed" in line for line in lines), lines


def test_a_schedule_added_while_down_and_missed_past_the_grace_is_reported_missed(
    demo_db: Path, home: Path, edit_config
) -> None:
    _missed_when_added(home, edit_config, 0)


def test_of_several_triggers_missed_since_it_was_added_the_newest_is_reported(
    demo_db: Path, home: Path, edit_config
) -> None:
    _missed_when_added(home, edit_config, 3)
