"""An old row held by another session (a row lock on a server, the database's write
lock on SQLite) for longer than the target's lock wait: the purge's batch over it ends
at the lock wait, each try of the step does, and the step fails naming the lock, its
earlier batches kept; with the lock let go, `aishell resume` deletes, archives and
counts each old row once.

The run is bounded by the lock wait, never by the holder: it ends while the lock is
still held (a hang detector of HANG seconds, never a timing assertion)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from tests.handlers.purge.test_purge_faults import (
    RETENTION,
    Purge,
    StateLook,
    _resume_and_check,
    purge_on,
)

HANG = 120


def _short_waits(purge: Purge) -> None:
    """Lock waits of 300 ms, one retry of the step a second later."""
    path = purge.home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["lock_timeout_ms"] = 300
    path.write_text(yaml.safe_dump(data))
    path = purge.home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"]["default_config"].update(max_retries=1, retry_backoff_seconds=1.0)
    path.write_text(yaml.safe_dump(data))


def _an_old_row_past_the_middle(purge: Purge) -> int:
    """An old row the purge reaches after some batches have committed."""
    newest = max(purge.before.values())
    old = sorted(i for i, at in purge.before.items() if at < newest - timedelta(RETENTION + 2))
    return next(i for i in old if i > 300)


@contextmanager
def _held(purge: Purge, row: int) -> Iterator[None]:
    """Another session holds the row (SQLite: the whole database's write lock)."""
    if purge.dialect == "sqlite":
        conn = sqlite3.connect(str(make_url(purge.url).database), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(purge.url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT id FROM events WHERE id = :i FOR UPDATE"), {"i": row})
            yield
            conn.rollback()
    finally:
        engine.dispose()


def _run(purge: Purge) -> Any:
    outcome: dict[str, Any] = {}

    def run() -> None:
        job = purge.job(walk="keys") if purge.dialect == "postgresql" else purge.job()
        outcome["result"] = commands.run_job(purge.config, "log_cleanup", job)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG)
    assert not worker.is_alive(), (
        f"the purge still waits after {HANG}s: the lock wait did not end it"
    )
    return outcome["result"]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("archive", ["file", "table"])
def test_a_held_old_row_ends_the_step_at_the_lock_wait_and_resume_completes(home, dialect, archive):
    with purge_on(dialect, archive, home) as purge:
        _short_waits(purge)
        row = _an_old_row_past_the_middle(purge)
        with _held(purge, row):
            result = _run(purge)
            assert result.status == "failed", result.status
            purge_step = result.steps[1]
            assert purge_step.status == "failed"
            assert "the lock was still held" in (purge_step.error or ""), purge_step.error
            progress = StateLook(home).progress(result.run_id)[0] or {}
            assert progress.get("batches", 0) > 0, "no batch committed before the held row"
            assert row in _ids(purge), "the held row went"
        _resume_and_check(purge, result.run_id)


@pytest.mark.parametrize("archive", ["file", "table"])
def test_a_held_sqlite_database_ends_the_step_at_the_lock_wait_and_resume_completes(home, archive):
    with purge_on("sqlite", archive, home) as purge:
        _short_waits(purge)
        with _held(purge, 0):
            result = _run(purge)
            assert result.status == "failed", result.status
            assert result.steps[1].status == "failed"
        _resume_and_check(purge, result.run_id)


def _ids(purge: Purge) -> set[int]:
    engine = create_engine(purge.url)
    with engine.connect() as conn:
        found = {int(i) for i in conn.execute(text("SELECT id FROM events")).scalars()}
    engine.dispose()
    return found
