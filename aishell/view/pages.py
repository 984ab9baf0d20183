"""What each page of the web view reads from the state store, as plain data for its
template: the fleet, the runs, one run with its steps, the waiting approvals and the
backups' ages. Each page opens the store for itself and reads; none writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aishell.config.models import Config
from aishell.state.store import StateStore, checking_store
from aishell.view.status import age_seconds, backup_age, fleet_status, fleet_targets

RUNS_SHOWN = 200
# The most rows of one table a page shows (a run's steps or decisions, the waiting
# approvals): a run of 100,000 steps is a page of a bounded size, saying what it leaves.
ROWS_SHOWN = 500
# The newest rows of a target the backups page reads for its newest backup in place and
# signed: a target of 100,000 unsigned rows costs what one of ten does.
KEPT_LOOKED = 10


def fleet_page(config: Config) -> dict[str, Any]:
    now = datetime.now(UTC)
    with checking_store(config) as store:
        return {"targets": fleet_status(config, store, now)}


def runs_page(config: Config, after: str | None = None) -> dict[str, Any]:
    """The newest RUNS_SHOWN runs, or those listed after the run `after` (the last of the
    page before): one more is read, to know whether a next page has any."""
    with StateStore(config.state_url) as store:
        found = store.list_runs(limit=RUNS_SHOWN + 1, after=after)
    shown = found[:RUNS_SHOWN]
    more = shown[-1]["run_id"] if len(found) > RUNS_SHOWN else None
    return {"runs": shown, "limit": RUNS_SHOWN, "after": after, "next_after": more}


def run_page(config: Config, run_id: str, start: int = 0, decided: int = 0) -> dict[str, Any]:
    """A run and ROWS_SHOWN of its steps from the index `start` on, and of its decisions
    past the first `decided`, checked against the home's key when there is one (as
    `aishell runs show` checks them; no key is made for a view). The store counts the
    rest and reads no other row: a run of 100,000 steps is a page of ROWS_SHOWN."""
    with checking_store(config) as store:
        run = store.run_head(run_id)
        full_id = run["run_id"]
        steps = store.run_steps(full_id, start, ROWS_SHOWN + 1)
        decisions = store.run_decisions(full_id, decided, ROWS_SHOWN)
        sizes = store.run_sizes(full_id)
    shown = steps[:ROWS_SHOWN]
    return {
        "run": {**run, "steps": shown, "approvals": decisions},
        "sizes": sizes,
        "start": start,
        "decided": decided,
        # Where the next page of steps begins (an index: a step never moves), if any.
        "next_start": steps[-1]["index"] if len(steps) > ROWS_SHOWN else None,
        "next_decided": decided + ROWS_SHOWN if sizes["approvals"] > decided + ROWS_SHOWN else None,
    }


def approvals_page(config: Config, offset: int = 0) -> dict[str, Any]:
    """ROWS_SHOWN of the steps waiting for approval, oldest first, past the first
    `offset`; the store counts them all."""
    now = datetime.now(UTC)
    with StateStore(config.state_url) as store:
        waiting, total = store.waiting_page(offset, ROWS_SHOWN)
    return {
        "waiting": [{**w, "age_seconds": age_seconds(now, w["since"])} for w in waiting],
        "total": total,
        "offset": offset,
        "next_offset": offset + ROWS_SHOWN if total > offset + ROWS_SHOWN else None,
    }


def backups_page(config: Config, offset: int = 0) -> dict[str, Any]:
    """ROWS_SHOWN targets by name, from the `offset`-th on, of every configured one and
    any other the catalog keeps backup rows under (the store counts them): the newest
    restore-proven backup of the database each reaches now (or why none is vouched), the
    newest of its KEPT_LOOKED newest rows signed and in place, and how many rows the
    catalog keeps under its name, counted by the store. No other row is read."""
    now = datetime.now(UTC)
    # With the home's key: a row not signed as it is is counted nowhere (sealed).
    with checking_store(config) as store:
        names, total = store.backup_targets(fleet_targets(config), offset, ROWS_SHOWN)
        recorded = store.backup_counts(names)
        kept = store.newest_kept(names, KEPT_LOOKED)
        newest = store.newest_restorable(config, names)
    rows = []
    for name in names:
        proven = backup_age(newest[name], now)
        rows.append(
            {
                "target": name,
                "recorded": recorded.get(name, 0),
                "newest_at": kept.get(name),
                "proven_at": proven["proven_at"],
                "reason": proven["reason"],
                "proven_age_seconds": proven["age_seconds"],
                "newest_age_seconds": age_seconds(now, kept.get(name)),
            }
        )
    after = offset + len(names)
    return {
        "backups": rows,
        "total": total,
        "offset": offset,
        "looked": KEPT_LOOKED,
        "next_offset": after if total > after else None,
    }
