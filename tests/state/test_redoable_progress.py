"""Progress whose loss only repeats idempotent work (a shared step's tables done) commits
without waiting on the disk (StateStore.save_progress(durable=False)): it survives a
crash of the process that saved it, and every commit after it is durable again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_redoable_progress_outlives_a_killed_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
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
