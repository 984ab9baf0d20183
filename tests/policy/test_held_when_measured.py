"""A table another session holds when its step is measured against a row limit is not
done on the catalog's estimate once the session lets go.

The measure waits the lock wait for the table's size, then gives up on it. It was then
judged by the planner's statistics, and a table analyzed at 10 rows and grown past the
limit since (written without an ANALYZE) was analyzed, rebuilt or compacted as soon as
the other session let go, nobody asked. Now a step of that table meets the lock's
error: it is tried again as a lock wait is, measured afresh, and held for a person's yes;
a step shared by many tables leaves that one out, named, and does the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.plan.model import Plan, Step
from aishell.policy import measured
from aishell.policy.approvers import NonInteractive, PreApproved
from aishell.risk import RiskLevel
from tests.policy.test_limits_on_facts import _limited, _pg_stale, _sql, pg_url

__all__ = ["pg_url"]  # the fixture, found by pytest in this module

LIMIT = 1_000
LOCK_WAIT_MS = 300
MEASURING = (
    "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' "
    "AND query LIKE '%/* aishell measure */%'"
)


def _config(home: Path, url: str) -> Config:
    """max_table_size at LIMIT rows, a short lock wait, retries 0.1 s apart."""
    _limited(home, url, LIMIT)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["lock_timeout_ms"] = LOCK_WAIT_MS
    path.write_text(yaml.safe_dump(data))
    agent = home / "config" / "agents" / "maintenance.yaml"
    agents = yaml.safe_load(agent.read_text())
    agents["maintenance_agent"]["default_config"]["retry_backoff_seconds"] = 0.1
    agent.write_text(yaml.safe_dump(agents))
    return load_config(home=home)


@contextmanager
def held_through_the_measure(
    url: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """`table` locked by a session of the test's as aishell's measure of a step's table
    sizes begins (after the step was rendered and estimated, which read the table
    unhindered), until that measure has waited for it and given up (no measure waiting
    for a tenth of a second since one was): then let go, before the step's own work.
    Yields two events: a measure was seen waiting for it; it was let go so."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    holder, looker = engine.connect(), engine.connect()
    seen, released, done = threading.Event(), threading.Event(), threading.Event()

    def watch() -> None:
        quiet = 0
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            if looker.execute(text(MEASURING)).scalar():
                seen.set()
                quiet = 0
            else:
                quiet += 1
            if seen.is_set() and quiet >= 5:
                holder.execute(text("ROLLBACK"))
                released.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    sizes = measured._sizes

    def locked_first(*args: Any) -> Any:
        if not watcher.is_alive() and not released.is_set():
            holder.execute(text("BEGIN"))
            holder.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            watcher.start()
        return sizes(*args)

    monkeypatch.setattr(measured, "_sizes", locked_first)
    try:
        yield seen, released
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join(10)
        holder.close()
        looker.close()
        engine.dispose()


def _apply(config: Config, step: Step, approver: Any) -> Any:
    plan = Plan("maintenance", "db", "postgresql", {"type": "custom"}, (step,))
    return commands.apply_plan(config, plan, approver=approver)


def test_a_table_held_when_measured_is_measured_again_before_its_step_runs(
    home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_stale(pg_url, "fixheld_big", 10, 3_000)
    config = _config(home, pg_url)
    step = Step("s0", "update_table_statistics", {"table": "fixheld_big"})
    with held_through_the_measure(pg_url, "fixheld_big", monkeypatch) as (_, released):
        result = _apply(config, step, NonInteractive())
    # Let go before the step's work: it could have analyzed the table.
    assert released.is_set(), [(s.status, s.error) for s in result.steps]
    assert result.status == "waiting_approval", (result.status, result.error)
    (held,) = result.steps
    assert held.status == "waiting_approval", (held.status, held.error)
    reason = f"table 'fixheld_big' has at least {LIMIT + 1:,} rows, over max_table_size"
    assert any(reason in r for r in held.reasons), held.reasons
    # Not analyzed behind the limit's back: the planner still has its old 10 rows.
    assert _sql(pg_url, "SELECT reltuples FROM pg_class WHERE relname = 'fixheld_big'") == [10]


def test_a_shared_step_leaves_out_the_table_held_when_measured_and_does_the_others(
    home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each with dead rows: a compaction writes (an empty one only reads, and is not
    # held to the limit).
    _pg_stale(pg_url, "fixheld_big", 10, 3_000)
    _pg_stale(pg_url, "fixheld_small", 10, 90)
    _sql(
        pg_url,
        "DELETE FROM fixheld_big WHERE id % 2 = 0",
        "DELETE FROM fixheld_small WHERE id % 2 = 0",
    )
    config = _config(home, pg_url)
    tables = ["fixheld_small", "fixheld_big"]
    step = Step("s0", "optimize_table", {"tables": tables})
    with held_through_the_measure(pg_url, "fixheld_big", monkeypatch) as (seen, _):
        result = _apply(config, step, PreApproved(up_to=RiskLevel.MEDIUM))
    assert seen.is_set(), "the measure never waited for the table"
    (shared,) = result.steps
    assert shared.status == "succeeded", (shared.status, shared.error)
    assert shared.output["tables_done"] == ["fixheld_small"]
    (skipped,) = shared.output["skipped_tables"]
    assert skipped["table"] == "fixheld_big" and skipped["cause"] == "locked"
    assert "when its rows were to be counted against max_table_size" in skipped["reason"]
