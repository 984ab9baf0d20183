"""A SQLite file SQLite cannot open or write is named with why, in one line.

- Held by another process past busy_timeout_ms: SQLite says only "database is locked";
  the step's error (and the refusal to connect) names the file, the setting and the
  process holding it, read from /proc/locks.
- A hot journal (a writer stopped mid-transaction): a read-only connection may not roll
  it back, so `targets check`, `doctor` and a dry run said only "attempt to write a
  readonly database", and doctor's fix was to start the server. Now the journal is
  named, with what rolls it back and that it must never be deleted.
- A WAL database in a folder on a read-only file system: SQLite cannot make its -shm
  file, and said only "unable to open database file"."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.helpers import tmpfs, use_target

HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute(sys.argv[2])
conn.execute("DELETE FROM users WHERE id < 0")
print("held", flush=True)
sys.stdin.read()
"""

# A writer that dies mid-transaction after writing pages into the file: its journal is hot.
CRASH = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")
conn.execute("BEGIN")
conn.execute("UPDATE app_logs SET message = message || 'x'")
os._exit(0)
"""


@contextmanager
def held(path: Path, begin: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the file's lock (`begin`: IMMEDIATE or EXCLUSIVE)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), f"BEGIN {begin}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _quick_target(home: Path, path: Path, edit_config) -> Config:
    use_target(home, f"sqlite:///{path}")
    return edit_config(
        {"targets": {"db": {"busy_timeout_ms": 100}}},
        maintenance={"default_config": {"max_retries": 0}},
    )


def _one_line(args: list[str], code: int) -> str:
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == code, done.output
    [line] = done.output.strip().splitlines()
    return line


def test_a_step_that_meets_a_held_file_names_the_file_the_setting_and_the_holder(
    home: Path, demo_db: Path, edit_config
) -> None:
    config = _quick_target(home, demo_db, edit_config)
    with held(demo_db, "IMMEDIATE") as holder:
        result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert result.status == "failed"
    (step,) = [s for s in result.steps if s.status == "failed"]
    assert step.error.startswith(
        f"database is locked; the database file {demo_db.resolve()} was held past "
        f"targets.db.busy_timeout_ms (100 ms) by process {holder.pid} ("
    ), step.error
    assert step.error.endswith(", writing)"), step.error


def test_a_file_held_when_connecting_names_the_holder(
    home: Path, demo_db: Path, edit_config
) -> None:
    _quick_target(home, demo_db, edit_config)
    with held(demo_db, "EXCLUSIVE") as holder:
        line = _one_line(["targets", "check", "db"], 5)
    assert line.startswith(
        f"Error: Target 'db' is locked: another connection held its database file "
        f"{demo_db.resolve()} past targets.db.busy_timeout_ms (100 ms): process {holder.pid} ("
    ), line


def _hot_journal(path: Path) -> Path:
    subprocess.run([sys.executable, "-c", CRASH, str(path)], check=True)
    journal = Path(f"{path}-journal")
    assert journal.stat().st_size > 0
    return journal


def test_a_hot_journal_is_named_by_the_read_only_checks_and_rolled_back_by_a_run(
    home: Path, demo_db: Path, edit_config
) -> None:
    config = _quick_target(home, demo_db, edit_config)
    journal = _hot_journal(demo_db)
    words = f"{journal.resolve()} holds a transaction a writer left unfinished"
    line = _one_line(["targets", "check", "db"], 1)
    assert "attempt to write a readonly database: " + words in line, line
    assert "a run that may write rolls it back; never delete the journal" in line, line
    doctor = CliRunner().invoke(cli, ["doctor", "--target", "db"])
    assert words in doctor.output and "start the server" not in doctor.output, doctor.output
    result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert not journal.exists()


def test_a_hot_journal_on_a_read_only_file_system(
    home: Path, demo_template: Path, tmp_path: Path, edit_config
) -> None:
    with tmpfs(tmp_path / "ro", "64m") as folder:
        path = folder / "db.sqlite"
        path.write_bytes(demo_template.read_bytes())
        _quick_target(home, path, edit_config)
        _hot_journal(path)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        line = _one_line(["run", "maintenance", "--type", "quick", "--yes"], 1)
    assert f"{path}-journal holds a transaction a writer left unfinished" in line, line
    assert f"and {path} is on a read-only file system: make it writable" in line, line


def test_a_wal_database_in_a_read_only_folder(
    home: Path, demo_template: Path, tmp_path: Path, edit_config
) -> None:
    with tmpfs(tmp_path / "ro", "64m") as folder:
        path = folder / "db.sqlite"
        path.write_bytes(demo_template.read_bytes())
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.close()
        assert not Path(f"{path}-shm").exists()
        _quick_target(home, path, edit_config)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        line = _one_line(["targets", "check", "db"], 1)
    assert line.startswith(
        "Error: Cannot connect to target 'db': unable to open database file: "
    ), line
    assert (
        f"the database is in WAL mode, and SQLite makes {path}-shm and {path}-wal beside it "
        f"to read it, but the folder {folder} is on a read-only file system"
    ) in line, line


def test_a_database_on_a_read_only_mount_is_named_with_a_fix_no_mode_gives(
    home: Path, demo_template: Path, tmp_path: Path, edit_config
) -> None:
    """No chmod makes a file on a read-only mount writable: the check names the mount,
    and the fix is a remount or a copy."""
    with tmpfs(tmp_path / "ro", "64m") as folder:
        path = folder / "db.sqlite"
        path.write_bytes(demo_template.read_bytes())
        _quick_target(home, path, edit_config)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        done = CliRunner().invoke(cli, ["targets", "check", "db", "--json"])
    said = done.stdout
    assert f"the file system holding {path} is mounted read-only" in said, said
    assert f"remount the file system holding {path} read-write" in said, said
    assert "chmod" not in said, said
