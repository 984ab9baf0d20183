"""What each page of the web view reads from the state store, as plain data for its
template: the fleet, the runs, one run with its steps, the waiting approvals and the
backups' ages. Each page opens the store for itself and reads; none writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aishell.config.models import Config
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.view.status import age_seconds, backup_age, fleet_status, fleet_targets

RUNS_SHOWN = 200
# The most rows of one table a page shows (a run's steps or decisions, the waiting
# approvals): a run of 100,000 steps is a page of a bounded size, saying what it leaves.
ROWS_SHOWN = 500


def fleet_page(config: Config) -> dict[str, Any]:
    now = datetime.now(UTC)
    with StateStore(config.state_url, key=load_key(config.home, create=False)) as store:
        return {"targets": fleet_status(config, store, now)}


def runs_page(config: Config) -> dict[str, Any]:
    with StateStore(config.state_url) as store:
        return {"runs": store.list_runs(limit=RUNS_SHOWN), "limit": RUNS_SHOWN}


def run_page(config: Config, run_id: str) -> dict[str, Any]:
    """A run and its steps, checked against the home's key when there is one (as
    `aishell runs show` checks them); no key is made for a view."""
    with StateStore(config.state_url, key=load_key(config.home, create=False)) as store:
        run = store.get_run(run_id)
    steps, decisions = run["steps"], run["approvals"]
    return {
        "run": {**run, "steps": steps[:ROWS_SHOWN], "approvals": decisions[:ROWS_SHOWN]},
        "steps_left": max(0, len(steps) - ROWS_SHOWN),
        "decisions_left": max(0, len(decisions) - ROWS_SHOWN),
    }


def approvals_page(config: Config) -> dict[str, Any]:
    now = datetime.now(UTC)
    with StateStore(config.state_url) as store:
        waiting = store.steps_waiting()
    return {
        "waiting": [
            {**w, "age_seconds": age_seconds(now, w["since"])} for w in waiting[:ROWS_SHOWN]
        ],
        "waiting_left": max(0, len(waiting) - ROWS_SHOWN),
    }


def backups_page(config: Config) -> dict[str, Any]:
    """Every configured target, and any other the catalog holds backups of (the first
    ROWS_SHOWN by name): the newest restore-proven backup of the database it reaches now
    (or why none is vouched), and the backups kept under its name."""
    now = datetime.now(UTC)
    with StateStore(config.state_url) as store:
        summary = store.backup_summary()
        every = sorted({*fleet_targets(config), *summary})
        names = every[:ROWS_SHOWN]
        newest = store.newest_restorable(config, names)
    rows = []
    for name in names:
        found = summary.get(name, {"newest_at": None, "kept": 0})
        proven = backup_age(newest[name], now)
        rows.append(
            {
                "target": name,
                **found,
                "proven_at": proven["proven_at"],
                "reason": proven["reason"],
                "proven_age_seconds": proven["age_seconds"],
                "newest_age_seconds": age_seconds(now, found["newest_at"]),
            }
        )
    return {"backups": rows, "backups_left": len(every) - len(names)}
