"""A preview of a SQLite target in WAL mode leaves no file beside the database: the -wal
and -shm a read-only connection makes are removed when the target closes, unless another
connection has the database open, whose files they then are (targets/engines.py)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import use_target

HANG = 60  # seconds: a hang detector, never a timing assertion


def database(folder: Path, journal: str = "wal") -> Path:
    path = folder / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT, msg TEXT)")
    conn.executemany(
        "INSERT INTO events (at, msg) VALUES (date('now', ?), 'x')",
        [(f"-{i} days",) for i in range(100)],
    )
    conn.commit()
    conn.close()
    return path


def beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


PREVIEWS = [
    ["plan", "maintenance", "--type", "quick", "--target", "db"],
    ["plan", "maintenance", "--type", "full", "--target", "db"],
    ["run", "maintenance", "--type", "quick", "--target", "db", "--dry-run"],
]


@pytest.mark.parametrize("argv", PREVIEWS, ids=lambda a: " ".join(a[:4]))
def test_a_preview_of_a_wal_database_leaves_no_file(home, tmp_path, argv):
    folder = tmp_path / "data"
    folder.mkdir()
    path = database(folder)
    assert beside(path) == []
    before = digest(path)
    use_target(home, f"sqlite:///{path}")
    done = CliRunner().invoke(cli, argv)
    assert done.exit_code == 0, done.output
    assert beside(path) == []
    assert digest(path) == before


def test_files_another_connection_uses_stay_and_it_goes_on(home, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = database(folder)
    use_target(home, f"sqlite:///{path}")
    app = sqlite3.connect(path)
    try:
        app.execute("SELECT count(*) FROM events").fetchone()
        done = CliRunner().invoke(cli, PREVIEWS[0])
        assert done.exit_code == 0, done.output
        assert beside(path) == ["app.db-shm", "app.db-wal"]
        app.execute("INSERT INTO events (at, msg) VALUES (date('now'), 'after')")
        app.commit()
        assert app.execute("SELECT count(*) FROM events").fetchone() == (101,)
    finally:
        app.close()
    assert beside(path) == []  # its own close removed them


_HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM events").fetchone()
print("open", flush=True)
sys.stdin.read()
conn.execute("INSERT INTO events (at, msg) VALUES (date('now'), 'other process')")
conn.commit()
print(conn.execute("SELECT count(*) FROM events").fetchone()[0], flush=True)
"""


def test_files_another_process_made_stay_while_it_has_the_database_open(home, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = database(folder)
    use_target(home, f"sqlite:///{path}")
    other = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "open\n"
        done = CliRunner().invoke(cli, PREVIEWS[0])
        assert done.exit_code == 0, done.output
        assert beside(path) == ["app.db-shm", "app.db-wal"]
        said, _ = other.communicate("", timeout=HANG)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert other.returncode == 0 and said.strip() == "101"


def test_a_preview_of_a_rollback_journal_database_makes_no_file(home, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = database(folder, journal="delete")
    use_target(home, f"sqlite:///{path}")
    done = CliRunner().invoke(cli, PREVIEWS[0])
    assert done.exit_code == 0, done.output
    assert beside(path) == []
