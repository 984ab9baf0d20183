"""The tables the last maintenance run on a target skipped (or could not check for
corruption) because another session held them, so that the next run plans them first
(one read of the last run's steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from aishell.config.models import Config
from aishell.state.store import signed_store

# How many of the target's recent runs are looked through for the last real one.
_RECENT_RUNS = 20


def last_skipped(config: Config, target: str, agent: str) -> tuple[str, ...]:
    """The tables the last finished, real run of `agent` on `target` left out because
    their lock was not granted, in the order it named them; none without a store. Read
    only for an agent that asks for it (Agent.catalog_needs)."""
    url = make_url(config.state_url)
    if url.drivername.startswith("sqlite") and not Path(url.database or "").exists():
        return ()  # no history yet: planning makes no store
    with signed_store(config) as store:
        # The target's own runs: in a fleet, other targets' runs crowd out the newest.
        for run in store.list_runs(limit=_RECENT_RUNS, targets=[target]):
            if run["agent"] != agent or run["target"] != target or run["dry_run"]:
                continue
            if run["status"] == "running":
                continue
            found: dict[str, None] = {}
            for output in store.step_outputs(run["run_id"]):
                for entry in _held_entries(output if isinstance(output, dict) else {}):
                    if entry.get("cause") == "locked" and entry.get("table"):
                        found.setdefault(str(entry["table"]))
            return tuple(found)
    return ()


def _held_entries(output: dict[str, Any]) -> list[dict[str, Any]]:
    """A step's entries for the tables it left out: those it skipped, and those its
    corruption check (its own, or the health step's) could not check."""
    check = output.get("corruption_check")
    checks = [output, check] if isinstance(check, dict) else [output]
    return [
        *(output.get("skipped_tables") or []),
        *(e for c in checks for e in c.get("unchecked_tables") or []),
    ]
