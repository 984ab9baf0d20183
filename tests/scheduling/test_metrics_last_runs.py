"""`aishell metrics` keeps each target's and agent's last run in sight however many runs
are newer: a weekly job's failure, under a fleet's nightly runs, is still its last run
(its series would vanish, and an alert on it resolve, with nothing fixed). On a SQLite
store and on one on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select

from aishell import commands
from aishell.config.models import Config
from aishell.state.schema import runs
from aishell.state.store import StateStore
from tests.conftest import EditConfig

NEWER = 1001  # more than any page of runs the metrics might have read


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(
    request: pytest.FixtureRequest, demo_db: Path, edit_config: EditConfig
) -> Iterator[Config]:
    if request.param == "sqlite":
        yield edit_config()
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({"state": {"url": url}})


def _run(store: StateStore, run_id: str, agent: str, status: str) -> None:
    store.create_run(
        run_id=run_id,
        agent=agent,
        target="demo",
        dialect="sqlite",
        job={},
        plan={},
        plan_hash="0" * 64,
        tool_fingerprints={},
        dry_run=False,
        safety_level="strict",
        step_rows=[],
    )
    store.finish_run(run_id, status, "disk full" if status == "failed" else None)


def _copies(config: Config, run_id: str, count: int) -> None:
    """`count` copies of a run's row, as many nightly runs would leave (written at once:
    a thousand runs through the store would take the test's time for nothing)."""
    engine = create_engine(config.state_url)
    try:
        with engine.begin() as conn:
            row = dict(conn.execute(select(runs).where(runs.c.run_id == run_id)).one()._mapping)
            conn.execute(insert(runs), [{**row, "run_id": f"copy{n:05d}"} for n in range(count)])
    finally:
        engine.dispose()


def test_a_last_run_under_many_newer_runs_keeps_its_series(store_config: Config) -> None:
    with StateStore(store_config.state_url) as store:
        _run(store, "weeklyfail", "backup", "failed")
        _run(store, "nightly", "maintenance", "completed")
    _copies(store_config, "nightly", NEWER)
    text = commands.metrics(store_config)
    assert 'aishell_last_run_status{agent="backup",status="failed",target="demo"} 1.0' in text
    assert 'aishell_last_run_status{agent="maintenance",status="completed",target="demo"} 1.0' in (
        text
    )
