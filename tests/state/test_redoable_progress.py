"""Progress whose loss only repeats idempotent work (a shared step's tables done) commits
without waiting on the disk (StateStore.save_progress(durable=False)): it survives a
crash of the process that saved it, and every commit after it is durable again. On a
SQLite store and on a PostgreSQL one; a MySQL store's commits stay durable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from aishell.state.steps import _PROGRESS_FIRST
from aishell.state.store import StateStore

SAVE_THEN_DIE = """
import os, signal, sys
from aishell.state.store import StateStore
store = StateStore(sys.argv[1])
store.save_progress("r1", 3, {"done": ["a", "b"]}, durable=False)
store.save_progress("r1", 3, {"done": ["a", "b", "c"]}, durable=False)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _synchronous(store: StateStore) -> int:
    level = store._conn.exec_driver_sql("PRAGMA synchronous").scalar()
    store._conn.rollback()
    return int(level)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield url


def test_redoable_progress_outlives_a_killed_process(store_url: str) -> None:
    url = store_url
    StateStore(url).close()  # the schema, made before the process that dies
    died = subprocess.run([sys.executable, "-c", SAVE_THEN_DIE, url], timeout=120)
    assert died.returncode == -9
    with StateStore(url) as store:
        assert store.get_progress("r1", 3) == {"done": ["a", "b", "c"]}


def test_every_commit_after_a_redoable_save_is_durable_again(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert _synchronous(store) == 2  # FULL
        store.save_progress("r1", 0, {"done": ["a"]}, durable=False)
        assert _synchronous(store) == 2
        store.save_progress("r1", 0, {"done": ["a", "b"]}, durable=False)
        assert store.get_progress("r1", 0) == {"done": ["a", "b"]}
        assert _synchronous(store) == 2
        # A save that fails leaves nothing of it, and the store durable.
        saved = {"run_id": "r1", "step_idx": 9, "progress": "{}", "updated_at": "now"}
        with pytest.raises(RuntimeError), store._hot_tx(durable=False):
            store._send(_PROGRESS_FIRST, saved)
            raise RuntimeError("the step failed mid-save")
        assert _synchronous(store) == 2
        assert store.get_progress("r1", 9) is None


def _commit_levels(store: StateStore) -> list[str]:
    """synchronous_commit as each progress write's transaction has it, asked on the
    store's own session right after the write (a save's UPDATE, and its INSERT where the
    UPDATE found no row)."""
    levels: list[str] = []

    def after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE STEP_PROGRESS"):
            levels.append(cursor.connection.execute("SHOW synchronous_commit").fetchone()[0])

    event.listen(store._conn, "after_cursor_execute", after)
    return levels


def test_a_postgresql_store_waits_on_the_disk_for_all_but_redoable_progress(
    pg_url: str,
) -> None:
    with StateStore(pg_url) as store:
        levels = _commit_levels(store)
        store.save_progress("r1", 0, {"done": ["a"]}, durable=False)
        store.save_progress("r1", 0, {"done": ["a", "b"]}, durable=False)
        store.save_progress("r1", 1, {"batch": 1})  # a purge's: durable
        store.save_progress("r1", 0, {"done": ["a", "b", "c"]}, durable=False)
        store.save_progress("r1", 1, {"batch": 2})
        assert levels == ["off", "off", "on", "off", "on"]
        assert store.get_progress("r1", 0) == {"done": ["a", "b", "c"]}
        assert store.get_progress("r1", 1) == {"batch": 2}
        # The setting lasts its transaction alone: the session's own is untouched.
        assert store._conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        store._conn.rollback()


def test_a_mysql_store_keeps_every_commit_durable(mysql_url: str) -> None:
    with StateStore(mysql_url) as store:
        sent: list[str] = []
        event.listen(
            store._conn, "before_cursor_execute", lambda *a: sent.append(a[2]), named=False
        )
        store.save_progress("r1", 0, {"done": ["a"]}, durable=False)
        assert store.get_progress("r1", 0) == {"done": ["a"]}
        assert not [s for s in sent if "synchronous" in s.lower() or "flush" in s.lower()]
