"""Progress kept without waiting for the disk: a shared step of an idempotent tool saves
each table's outcome with a commit that outlives aishell's death (SIGKILL included) but
is on the disk only with the next commit that waits for it, which comes within
steps.RIDE_SECONDS; a purge's progress, and any progress once no commit waited for the
disk for that long, still waits for it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.state import steps as state_steps
from aishell.state.store import StateStore

RUN = "a" * 32


@contextmanager
def traced(path: Path) -> Iterator[list[str]]:
    """What the store at `path` sends to sqlite while it lasts: its synchronous settings
    and its commits, in order."""
    seen: list[str] = []

    def on_connect(dbapi: Any, _record: Any) -> None:
        if not isinstance(dbapi, sqlite3.Connection):
            return
        if Path(dbapi.execute("PRAGMA database_list").fetchall()[0][2]) == path:
            dbapi.set_trace_callback(
                lambda sql: seen.append(sql) if "synchronous" in sql or sql == "COMMIT" else None
            )

    event.listen(Engine, "connect", on_connect)
    try:
        yield seen
    finally:
        event.remove(Engine, "connect", on_connect)


def commits(seen: list[str]) -> list[str]:
    """Each COMMIT as "synced" or "kept" (made under synchronous = NORMAL)."""
    out, level = [], "FULL"
    for sql in seen:
        if sql.startswith("PRAGMA synchronous ="):
            level = sql.split("=")[1].strip()
        elif sql == "COMMIT":
            out.append("kept" if level == "NORMAL" else "synced")
    return out


def synchronous(store_path: Path, store: StateStore) -> int:
    """The store connection's synchronous setting now (2: FULL)."""
    driver = store._conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return int(driver.execute("PRAGMA synchronous").fetchone()[0])


def test_kept_progress_commits_without_waiting_for_the_disk_and_is_seen_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with traced(path) as seen, StateStore(f"sqlite:///{path}") as store:
        seen.clear()
        store.save_progress(RUN, 1, {"done": ["a"]}, synced=False)
        store.save_progress(RUN, 1, {"done": ["a", "b"]}, synced=False)
        assert commits(seen) == ["kept", "kept"]
        assert synchronous(path, store) == 2  # back to FULL for every other commit
        # Another connection (another process) reads it at once.
        other = sqlite3.connect(path)
        try:
            row = other.execute("SELECT progress FROM step_progress").fetchone()
        finally:
            other.close()
        assert '"b"' in row[0]
        store.save_progress(RUN, 2, {"cursor": 10})
        assert commits(seen) == ["kept", "kept", "synced"]


def test_progress_waits_for_the_disk_once_none_did_for_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_steps, "RIDE_SECONDS", 0.0)
    path = tmp_path / "state.db"
    with traced(path) as seen, StateStore(f"sqlite:///{path}") as store:
        seen.clear()
        store.save_progress(RUN, 1, {"done": ["a"]}, synced=False)
        assert commits(seen) == ["synced"]


def test_a_step_that_ends_after_kept_progress_waits_for_the_disk(tmp_path: Path) -> None:
    """Kept progress is on the disk with the next commit that waits: the step's end
    waits even when it could ride, as it would before any commit of its own."""
    path = tmp_path / "state.db"
    with traced(path) as seen, StateStore(f"sqlite:///{path}") as store:
        seen.clear()
        store.step_started(RUN, 1, {}, [], 1, durable=False)
        store.save_progress(RUN, 1, {"done": ["a"]}, synced=False)
        store.step_finished(RUN, 1, "succeeded", output={"ok": True}, replayable=True)
        assert commits(seen) == ["kept", "synced"]


KILLED = """
import os, signal, sys
from aishell.state.store import StateStore
store = StateStore(sys.argv[1])
store.save_progress("{run}", 1, {{"done": ["t1", "t2"]}}, synced=False)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kept_progress_outlives_a_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    StateStore(url).close()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED.format(run=RUN), url], capture_output=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr.decode()
    with StateStore(url) as store:
        assert store.get_progress(RUN, 1) == {"done": ["t1", "t2"]}


def test_a_shared_step_keeps_each_tables_progress_and_syncs_its_end(
    config: Config, demo_db: Path
) -> None:
    """Full maintenance of the demo target: every per-table checkpoint of a shared step
    is kept, the steps' ends and the run's end wait for the disk."""
    path = Path(config.state_url.removeprefix("sqlite:///"))
    commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    with traced(path) as seen:
        result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    shared = [s for s in result.steps if isinstance(s.params.get("tables"), list)]
    assert shared, [s.tool for s in result.steps]
    with StateStore(config.state_url) as store:
        kept = [store.get_progress(result.run_id, s.index) for s in shared]
    done = sum(len(p["done"]) for p in kept if p)
    made = commits(seen)
    assert done and made.count("kept") == done, (made, kept)
    assert made[-1] == "synced"
