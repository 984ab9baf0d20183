"""Where a fleet job stands, per target, as `fleet show` and `fleet jobs` give it: read
with the home's key when it has one (none is made for a listing), so a target a
delivery would refuse (its job or event chain changed in the store, a refusal a resend
not signed as it is would clear) is shown as a delivery would take it."""

from __future__ import annotations

from typing import Any

from aishell.commands.fleetdelivery import NOT_RESUMED, NOT_STARTED
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.executor import INTERRUPTED
from aishell.state.fleet import standing_refusal
from aishell.state.store import StateStore, checking_store

# A target's task is over once its run is in none of these.
GOING_ON = ("running", INTERRUPTED)

__all__ = ["GOING_ON", "fleet_summary", "list_fleet_jobs"]


def fleet_summary(config: Config, fleet_id: str) -> dict[str, Any]:
    """A fleet job and, per target, its run and status: "queued" before it has one,
    "not_started" when its task ended before a run began (its error says why)."""
    with checking_store(config) as store:
        fleet = store.get_fleet_job(fleet_id, strict=False)
        if fleet is None:
            raise UsageError(f"No fleet job {fleet_id[:80]!r}; `aishell fleet jobs` lists them")
        return _summary(store, fleet)


def list_fleet_jobs(config: Config, limit: int = 20) -> dict[str, Any]:
    """The newest fleet jobs, each with how many of its targets stand where."""
    with checking_store(config) as store:
        found = [_summary(store, fleet) for fleet in store.list_fleet_jobs(limit)]
    return {"fleet_jobs": [{k: v for k, v in job.items() if k != "runs"} for job in found]}


def _summary(store: StateStore, fleet: dict[str, Any]) -> dict[str, Any]:
    started = store.fleet_runs(fleet["fleet_id"])
    not_started = store.fleet_not_started(fleet["fleet_id"])
    # With the home's key (a home that has one), as a delivery reads them: a target whose
    # job, or event chain, is not what the key signed begins nothing.
    broken = store.fleet_chain_breaks(fleet, list(fleet["targets"]))
    rows = [
        _row(t, started.get(t), not_started.get(t), fleet["seal_error"] or broken.get(t))
        for t in fleet["targets"]
    ]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    # A run whose last delivery was refused waits for nothing the queue holds: its
    # task is over until it is sent again.
    going_on = sum(
        1 for r in rows if r["status"] in (*GOING_ON, "queued") and not r["delivery_refused"]
    )
    return {**fleet, "runs": rows, "counts": counts, "going_on": going_on}


def _row(
    target: str,
    run: dict[str, Any] | None,
    refused: dict[str, Any] | None,
    tampered: str | None = None,
) -> dict[str, Any]:
    """Where a target stands. A run, once begun, says so; before, the last reason its
    task ended without one (not_started), or why none begins (`tampered`: its job or
    event chain changed in the store). An interrupted run whose last delivery was
    refused since its last change keeps its status, the refusal in place of its error."""
    if run is None:
        status = NOT_STARTED if refused or tampered else "queued"
        found = refused or {}
        return {
            "target": target,
            "run_id": None,
            "status": status,
            "error": tampered or found.get("error"),
            "host": found.get("hostname"),
            "delivery_refused": None,
        }
    error = tampered or run["error"]
    shown = standing_refusal(run, refused)
    if shown is not None:
        ended = "its task ended" if shown["error"].startswith(NOT_RESUMED) else None
        error = f"{ended or 'its last delivery was refused'} on {shown['hostname']} at "
        error += f"{shown['at']}: {shown['error']}"
    return {
        "target": target,
        "run_id": run["run_id"],
        "status": run["status"],
        "error": error,
        "host": run["hostname"],
        "delivery_refused": shown,
    }
