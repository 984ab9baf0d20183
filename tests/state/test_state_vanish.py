"""History that cannot vanish quietly.

- A run whose state.db is deleted, replaced by another file, or emptied (truncated to 0
  bytes) while it runs stops at its next commit, within RUN_BOUND seconds of the fault:
  exit code 1 and one line naming the store and what happened to it; it never ends
  `completed` into a file no one reads.
- Where a store with history was (its `.has-history` marker beside it), an empty,
  missing or foreign state.db is refused with what is missing and the copy to put back,
  instead of becoming a new, empty store; the copy put back is the store again, and
  with the marker removed too a new store is made on purpose. A new store that another
  process made (and marked) while this one was opening it is no lost store.
- `aishell doctor --backup-state` writes a consistent copy (mode 0600) beside the store
  that opens with the runs in it.
- An unwritable -shm file is one line naming it, before any step runs (not SIGBUS).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import EXIT_FAILED, StateError
from aishell.plan.model import Plan, Step
from aishell.state import history, identity
from aishell.state.faults import sqlite_path
from aishell.state.history import HEAD_REVISION
from aishell.state.store import StateStore
from tests.helpers import slow_read_tool, use_target

# Seconds from the fault to the run's exit: the fault is seen at the next commit, which
# comes at the end of the step running then (one slow read: 4 to 10 s on a busy
# two-core machine).
RUN_BOUND = 60.0
STEPS = 4


def store_of(config: Config) -> Path:
    path = sqlite_path(config.state_url)
    assert path is not None
    return path


def slow_plan_file(home: Path, url: str) -> tuple[Config, Path]:
    """A signed plan of STEPS slow reads on the scratch database `url`."""
    use_target(home, url)
    config = slow_read_tool(home)
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    plan = Plan(
        "maintenance",
        "db",
        dialect,
        {"type": "custom"},
        tuple(Step(f"s{i}", "long_count", {"floor": i}) for i in range(STEPS)),
    )
    out = home / "slow.plan.json"
    commands.save_plan(config, plan, out)
    return config, out


def wait_for_a_running_step(store: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + RUN_BOUND
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
                if conn.execute("SELECT 1 FROM steps WHERE status = 'running'").fetchone():
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.1)
    raise AssertionError("the run never started a step")


def run_with_a_fault(
    home: Path, url: str, fault: Callable[[Path], None], exit_code: int = EXIT_FAILED
) -> tuple[str, float]:
    """`aishell apply` of a slow plan, the fault done to its state.db while a step runs;
    the child's stderr and the seconds it took to end (with exit_code) after the fault."""
    config, plan = slow_plan_file(home, url)
    store = store_of(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aishell", "apply", str(plan), "--non-interactive"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_a_running_step(store, proc)
        fault(store)
        faulted = time.monotonic()
        _, err = proc.communicate(timeout=RUN_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == exit_code, (proc.returncode, err)
    return err, time.monotonic() - faulted


def one_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_a_store_deleted_mid_run_stops_the_run_with_one_line(home: Path, pg_url: str) -> None:
    err, took = run_with_a_fault(home, pg_url, os.unlink)
    one_line(err, "state.db was deleted", "in no store")
    assert took < RUN_BOUND
    # The marker remembers the history: the next command does not start a new store.
    result = CliRunner().invoke(cli, ["runs", "list"])
    assert result.exit_code == StateError.exit_code, result.output
    assert "is missing" in result.output and "has-history" in result.output


def test_a_store_replaced_mid_run_stops_the_run(home: Path, pg_url: str) -> None:
    def replace(store: Path) -> None:
        other = store.with_name("other.db")
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
        os.replace(other, store)

    err, took = run_with_a_fault(home, pg_url, replace)
    one_line(err, "state.db was replaced by another file")
    assert took < RUN_BOUND


def test_a_store_emptied_mid_run_stops_the_run(home: Path, pg_url: str) -> None:
    err, took = run_with_a_fault(home, pg_url, lambda store: os.truncate(store, 0))
    one_line(err, "state.db was emptied (0 bytes)")
    assert took < RUN_BOUND


def foreign(store: Path) -> None:
    store.unlink()
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE notes (x INTEGER)")


LOSSES: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (lambda store: os.truncate(store, 0), "state.db is empty (0 bytes)"),
    "missing": (os.unlink, "state.db is missing"),
    "foreign": (foreign, "state.db holds another database's tables"),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_a_lost_store_where_history_was_is_refused_until_a_copy_is_put_back(
    home: Path, demo_db: Path, loss: str
) -> None:
    config = commands_ready(home)
    store = store_of(config)
    before = CliRunner().invoke(cli, ["doctor", "--backup-state"])
    assert before.exit_code == 0, before.output
    copy = Path(before.output.strip())
    for side in ("-wal", "-shm"):
        store.with_name(store.name + side).unlink(missing_ok=True)
    lose, what = LOSSES[loss]
    lose(store)
    size = store.stat().st_size if store.exists() else None
    result = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert result.exit_code == StateError.exit_code, result.output
    line = json.loads(result.output)["error"]["message"]
    assert what in line and "a store with history was there" in line
    assert "runs, backup catalog and schedules are missing" in line
    assert copy.name in line  # the copy to put back is named
    # Refused before SQLite wrote into it (or made it).
    assert (store.stat().st_size if store.exists() else None) == size
    # Put back, the copy is the store again, with its run.
    shutil.copyfile(copy, store)
    listed = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [run["status"] for run in json.loads(listed.output)["runs"]] == ["completed"]


def test_a_new_store_is_made_once_the_marker_is_removed_too(home: Path, demo_db: Path) -> None:
    store = store_of(commands_ready(home))
    os.truncate(store, 0)
    store.with_name(store.name + ".has-history").unlink()
    result = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["runs"] == []


def test_a_new_store_another_opener_makes_meanwhile_is_not_taken_for_a_lost_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes open one new store: this one finds no tables; before it looks for
    # the marker, the other has made the tables and written the marker.
    path = tmp_path / "state.db"
    real_read, others = history.read_schema, []

    def read_then_another_opens(conn: Any) -> Any:
        found = real_read(conn)
        if not others:
            others.append(path)
            StateStore(f"sqlite:///{path}").close()
            assert path.with_name(path.name + ".has-history").exists()
        return found

    monkeypatch.setattr(history, "read_schema", read_then_another_opens)
    with StateStore(f"sqlite:///{path}") as store:
        assert store.schema_revision == HEAD_REVISION
    monkeypatch.undo()
    # A store that lost its tables where the marker was is still refused.
    with closing(sqlite3.connect(path)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (name,) in tables:
            conn.execute(f'DROP TABLE "{name}"')
        conn.commit()
    with pytest.raises(StateError, match="holds no tables, but a store with history"):
        StateStore(f"sqlite:///{path}")


def test_a_wal_file_another_process_removes_meanwhile_is_not_taken_for_an_unwritable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process killed with the store open leaves its -wal; another's last close of the
    # store removes it between this one's look for the file and its access(2) on it,
    # which then says no.
    path = tmp_path / "state.db"
    StateStore(f"sqlite:///{path}").close()
    wal = path.with_name(path.name + "-wal")
    wal.touch(mode=0o600)
    real_access = os.access

    def access_after_the_other_closes(file: Any, mode: int) -> bool:
        if Path(file) == wal:
            wal.unlink(missing_ok=True)
        return real_access(file, mode)

    monkeypatch.setattr(identity.os, "access", access_after_the_other_closes)
    with StateStore(f"sqlite:///{path}") as store:
        assert store.schema_revision == HEAD_REVISION
    # A -wal that is there and cannot be written is still refused.
    wal.touch(mode=0o600)
    monkeypatch.setattr(identity.os, "access", lambda file, mode: Path(file) != wal)
    with pytest.raises(StateError, match="-wal cannot be written"):
        StateStore(f"sqlite:///{path}")


def commands_ready(home: Path) -> Config:
    """A home whose store holds one finished run."""
    config = use_target(home, f"sqlite:///{home / 'demo.db'}")
    result = commands.run_job(config, "maintenance", {"type": "quick"})
    assert result.status == "completed", result.error
    return config


def test_backup_state_writes_a_private_copy_that_opens_with_the_runs(
    home: Path, demo_db: Path
) -> None:
    config = commands_ready(home)
    result = CliRunner().invoke(cli, ["doctor", "--backup-state", "--json"])
    assert result.exit_code == 0, result.output
    copy = Path(json.loads(result.output)["backup"])
    assert copy.parent == store_of(config).parent
    assert copy.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(copy) as conn:
        runs = conn.execute("SELECT status FROM runs").fetchall()
    assert runs == [("completed",)]
    plain = CliRunner().invoke(cli, ["doctor", "--backup-state"])
    assert plain.exit_code == 0 and Path(plain.output.strip()).is_file()


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """The file made unwritable even for root (chattr +i); skipped only where the file
    system has no such flag."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr is not installed")
def test_an_unwritable_shm_is_one_line_before_any_step(home: Path, demo_db: Path) -> None:
    config = commands_ready(home)
    store = store_of(config)
    shm = store.with_name(store.name + "-shm")
    shm.write_bytes(b"\0" * 32768)
    with immutable(shm):
        done = subprocess.run(
            [sys.executable, "-m", "aishell", "run", "maintenance", "--type", "quick"],
            capture_output=True,
            text=True,
            timeout=RUN_BOUND,
        )
    assert done.returncode == StateError.exit_code, (done.returncode, done.stderr)
    one_line(done.stderr, f"{shm} cannot be written")
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_an_upgrade_keeps_a_private_copy_that_a_refusal_names(tmp_path: Path) -> None:
    """Before each schema upgrade the store is copied aside (history.copy_aside)."""
    store = tmp_path / "state.db"
    with sqlite3.connect(store) as conn:
        conn.executescript(
            (Path(__file__).parents[1] / "data" / "state_before_alembic.sql").read_text()
        )
    conn.close()
    StateStore(f"sqlite:///{store}").close()
    copy = store.with_name(f"state.db.before-{HEAD_REVISION}")
    assert copy.stat().st_mode & 0o777 == 0o600
    os.truncate(store, 0)
    with pytest.raises(StateError, match=f"copies: {copy.name}"):
        StateStore(f"sqlite:///{store}")
