"""What a serving scheduler reports of its schedules besides their runs: a run going
on past the scheduler's stuck_after_seconds, a missed trigger, a trigger refused because
its schedule's row is not what the home's key signed; kept for `schedule list`, logged in
the serve log and notified."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aishell.config.models import Config
from aishell.scheduling import notify
from aishell.state.store import StateStore

# The serve log's own: these are its lines.
logger = logging.getLogger("aishell.scheduling.serve")


def report_stuck(config: Config, store: StateStore) -> None:
    """Each schedule's run going longer than stuck_after_seconds, reported once."""
    limit = config.main.scheduler.stuck_after_seconds
    now = datetime.now(UTC)
    stuck = [
        (schedule["name"], run, (now - datetime.fromisoformat(run["started_at"])).total_seconds())
        for schedule in store.list_schedules()
        for run in store.schedule_runs(schedule["name"], limit=5)
        if run["status"] == "running"
    ]
    stuck = [found for found in stuck if found[2] > limit]
    if not stuck:
        return  # the usual case, every 2 s: no need to read the alerts
    # A run whose process is gone is not stuck: it is taken back at the next trigger.
    gone = {run["run_id"] for run in store.orphaned_runs()}
    stuck = [found for found in stuck if found[1]["run_id"] not in gone]
    reported = {
        alert.get("run_id")
        for alerts in store.schedule_alerts().values()
        for alert in alerts
        if alert["kind"] == "stuck"
    }
    for name, run, running in stuck:
        if run["run_id"] not in reported:
            alert(
                config,
                store,
                name,
                "stuck",
                {"run_id": run["run_id"], "running_seconds": round(running)},
            )


def refuse_tampered(config: Config, name: str, error: str) -> None:
    """A trigger whose schedule's row is not what the home's key signed (changed in the
    store since it was added, or stored unsigned): it runs nothing, and says so."""
    with StateStore(config.state_url) as store:
        alert(config, store, name, "refused", {"error": error})


def alert(config: Config, store: StateStore, name: str, kind: str, data: dict[str, Any]) -> None:
    """A missed trigger, a stuck run or a refused trigger: kept for `schedule list`,
    logged, notified."""
    store.schedule_alert(name, kind, data)
    logger.warning("schedule %s: %s %s", name, kind, json.dumps(data, default=str))
    notify.send(config.main.notifications, {"schedule": name, "status": kind, **data})
