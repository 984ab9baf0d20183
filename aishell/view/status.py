"""The status of every configured target, read in one query per aspect: the newest
run, the steps waiting for approval, the newest restore-proven backup, and the next
scheduled job (the schedules and the scheduler's own job table)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aishell.config.models import Config
from aishell.config.selection import select_targets
from aishell.scheduling import nextruns
from aishell.state.reached import Restorable
from aishell.state.store import StateStore
from aishell.units import stamp


def fleet_targets(config: Config, selector: str | None = None) -> list[str]:
    """The targets the view shows: those the selector picks (config/selection.py), else
    every configured one, by name."""
    if selector is not None:
        return sorted(select_targets(config, selector))
    return sorted(config.main.targets)


def age_seconds(now: datetime, when: str | None) -> float | None:
    return None if when is None else round((now - datetime.fromisoformat(when)).total_seconds())


def next_jobs(config: Config, store: StateStore) -> dict[str, dict[str, Any]]:
    """Per target, the schedule that runs on it next, and when (a schedule that names no
    target runs on the default one); `refused` is None, or, for a schedule whose row the
    home's key did not sign (serve runs none of its triggers), why: shown before any
    other of the target's, with no time, as `schedule list` shows it. `store` is opened
    with the home's key (the fleet page, `fleet status`): a row written into the store
    since it was added is never shown as a run to come."""
    schedules = store.list_schedules()
    held = nextruns.next_runs(config, schedules)
    found: dict[str, dict[str, Any]] = {}
    for schedule in schedules:
        target = schedule["target"] or config.main.default_target
        job = {"schedule": schedule["name"], "agent": schedule["agent"]}
        if schedule["seal_error"] is not None:
            if found.get(target, {}).get("refused") is None:
                found[target] = {**job, "at": None, "refused": schedule["seal_error"]}
            continue
        at, _ = nextruns.upcoming(schedule, held)
        if at is None or found.get(target, {}).get("refused"):
            continue
        if target not in found or at < found[target]["at"]:
            found[target] = {**job, "at": at, "refused": None}
    return {
        target: {**job, "at": None if job["at"] is None else stamp(job["at"].astimezone(UTC))}
        for target, job in found.items()
    }


def fleet_status(
    config: Config, store: StateStore, now: datetime, selector: str | None = None
) -> list[dict[str, Any]]:
    """One row per target (of the selector's, else all): `last_run` is None for a target
    that never ran; its `delivery_refused`, the refusal of its fleet task's last
    delivery that still stands, as `fleet show` gives it (None: none); `backup`, as
    backup_age gives it."""
    names = fleet_targets(config, selector)
    last = store.last_runs(names)
    refused = store.delivery_refusals(last.values())
    waiting = store.waiting_counts(names)
    newest = store.newest_restorable(config, names)
    upcoming = next_jobs(config, store)
    rows = []
    for name in names:
        run = last.get(name)
        theirs = waiting.get(name, {"waiting": 0, "oldest_since": None})
        oldest = theirs["oldest_since"]
        rows.append(
            {
                "target": name,
                "environment": config.main.targets[name].environment,
                "last_run": None if run is None else _run_row(run, refused),
                "approvals": {
                    "waiting": theirs["waiting"],
                    "oldest_since": oldest,
                    "oldest_age_seconds": age_seconds(now, oldest),
                },
                "backup": backup_age(newest[name], now),
                "next_job": upcoming.get(name),
            }
        )
    return rows


def backup_age(newest: Restorable, now: datetime) -> dict[str, Any]:
    """A target's newest restore-proven backup of the database it reaches now: when it
    was taken and its age in whole seconds; both None with `reason` when none is
    vouched (its database unknown, or no such backup)."""
    proven = newest.created_at
    return {"proven_at": proven, "age_seconds": age_seconds(now, proven), "reason": newest.reason}


def _run_row(run: dict[str, Any], refused: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ("run_id", "agent", "status", "created_at", "finished_at", "error", "dry_run")
    return {**{key: run[key] for key in keys}, "delivery_refused": refused.get(run["run_id"])}
