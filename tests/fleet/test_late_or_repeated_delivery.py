"""A fleet task begins its target's run only when its job still holds for it. A task of a
schedule's trigger delivered more than scheduler.misfire_grace_seconds after the trigger
was due (its queue held it while no worker ran, say) begins nothing: the schedule's
options (--ignore-window, --force) were given for that night, not for whenever the task
arrives, and serve itself reports a trigger so late missed, not run. And a target whose
task ended not started begins only when a person sends it again (`fleet resend`), not on
any later delivery of the same task. Each refusal is kept for `fleet show`, in one line.

Before, a trigger's task ran whenever it was delivered, with the window ignored, and a
target refused on one worker was begun by the next delivery anywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aishell.commands.fleet import run_fleet_target
from aishell.commands.fleetlist import fleet_summary
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.fleet.sending import sent_with
from aishell.scheduling.due import trigger_key
from aishell.state.store import signed_store
from tests.conftest import EditConfig

JOB = {"type": "quick"}
WINDOW_IGNORED = {"ignore_window": True, "reason": "the night's window"}


def _carried(config: Config) -> dict[str, Any]:
    return sent_with(load_catalog(config), config.agent("maintenance"), config.main.targets)


def _not_started(config: Config, fleet_id: str, demo_db: Path, carried: Any) -> str:
    before = demo_db.stat().st_mtime_ns
    assert run_fleet_target(config, fleet_id, "demo", carried) == "not_started"
    assert demo_db.stat().st_mtime_ns == before  # nothing ran
    (row,) = fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "not_started" and row["run_id"] is None, row
    assert len(row["error"].splitlines()) == 1, row["error"]
    return str(row["error"])


def _resent(config: Config, fleet_id: str) -> None:
    """What `fleet resend` records before it sends the task again."""
    with signed_store(config) as store:
        store.record_resent(fleet_id, ["demo"])


def test_a_triggers_task_delivered_past_its_grace_begins_no_run(
    demo_db: Path, edit_config: EditConfig
) -> None:
    config = edit_config({"scheduler": {"misfire_grace_seconds": 60}})
    due = trigger_key(datetime.now(UTC) - timedelta(hours=2))
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job(
            "maintenance", JOB, WINDOW_IGNORED, "demo", ["demo"], trigger=("nightly", due)
        )
    error = _not_started(config, fleet_id, demo_db, _carried(config))
    assert f"schedule nightly's trigger due {due}" in error, error
    assert "past scheduler.misfire_grace_seconds (60 s)" in error, error
    assert f"`aishell fleet resend {fleet_id}`" in error, error

    _resent(config, fleet_id)  # a person's decision, now: it begins
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "completed"


def test_a_target_not_started_begins_on_no_delivery_but_a_resend(
    demo_db: Path, config: Config
) -> None:
    with signed_store(config) as store:
        fleet_id = store.create_fleet_job("maintenance", JOB, {}, "demo", ["demo"])
    first = _not_started(config, fleet_id, demo_db, None)  # carries no fingerprint
    assert "carries no fingerprint" in first, first

    # The same task delivered again, to a worker that would run it: still not begun.
    again = _not_started(config, fleet_id, demo_db, _carried(config))
    assert again.startswith("Not run: its task was delivered again, not sent again"), again
    assert "carries no fingerprint" in again and f"aishell fleet resend {fleet_id}" in again
    # Said once, however often it comes again.
    assert _not_started(config, fleet_id, demo_db, _carried(config)) == again

    _resent(config, fleet_id)
    assert run_fleet_target(config, fleet_id, "demo", _carried(config)) == "completed"
