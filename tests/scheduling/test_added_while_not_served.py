"""A schedule added while no serve ran, and due since (within the misfire grace), runs
when serve starts, as a trigger missed while serve was down does; its first fire is not
counted from the moment serve happened to start."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from aishell.config.models import Config
from aishell.state.seals import seal
from aishell.state.signing import load_key
from tests.scheduling.test_schedules import add, scheduled_runs, serving, wait_for


def _added_ago(config: Config, name: str, minutes: int) -> None:
    """As if `schedule add` had run minutes ago, with nothing serving since: the row
    signed again with the home's key, as `schedule add` would have signed it then."""
    path = make_url(config.state_url).database
    assert path is not None
    when = (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
    with sqlite3.connect(path) as raw:
        raw.row_factory = sqlite3.Row
        row = dict(raw.execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone())
        row["created_at"] = when
        sealed = seal(load_key(config.home), "schedule", name, row)
        raw.execute(
            "UPDATE schedules SET created_at = ?, seal = ? WHERE name = ?", (when, sealed, name)
        )
    raw.close()


def test_a_schedule_due_since_it_was_added_runs_when_serve_starts(
    demo_db: Path, config: Config
) -> None:
    add(config, "often", "*/2 * * * *", ["maintenance", "--type", "quick"])
    _added_ago(config, "often", 5)
    with serving(config):
        wait_for(lambda: scheduled_runs(config, "often"), "the missed first trigger's run", 60)
        wait_for(lambda: scheduled_runs(config, "often")[0]["status"] != "running", "it", 60)
    runs = scheduled_runs(config, "often")
    assert len(runs) == 1 and runs[0]["status"] == "completed", runs


def test_a_paused_schedule_added_earlier_does_not_run(demo_db: Path, config: Config) -> None:
    from aishell import commands

    add(config, "held", "*/2 * * * *", ["maintenance", "--type", "quick"])
    commands.pause_schedule(config, "held", True)
    _added_ago(config, "held", 5)
    with serving(config) as lines:
        wait_for(lambda: any("held: added" in line for line in lines), "the job")
    assert scheduled_runs(config, "held") == []
