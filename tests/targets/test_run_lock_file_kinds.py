"""A SQLite database's run lock is a file beside it, in a folder others may write to (an
application's shared folder): whatever is put in the lock file's place (a symbolic
link, a FIFO) is refused in one line, and nothing it names is made, opened or locked."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.targets.engines import open_target
from aishell.targets.identity import database_identity
from aishell.targets.locks import run_lock_key
from tests.helpers import use_target


def _database(folder: Path) -> Path:
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # an application's folder, others' to write in
    path = folder / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    conn.executemany("INSERT INTO t (b) VALUES (?)", [("x" * 50,)] * 200)
    conn.commit()
    conn.close()
    return path


def _lock_file(home: Path, database: Path) -> Path:
    """Where the run lock of this database is: beside it, named by its identity, a name
    anyone who can see the file can work out."""
    config = use_target(home, f"sqlite:///{database}")
    handle = open_target(config, "db")
    try:
        with handle.connect() as conn:
            key = run_lock_key(database_identity(conn))
    finally:
        handle.close()
    return database.with_name(
        f"{database.name}.aishell-{hashlib.sha1(key.encode()).hexdigest()[:12]}.lock"
    )


@pytest.mark.parametrize("planted", ["dangling link", "link to a file", "fifo"])
def test_what_is_put_in_the_lock_files_place_is_refused_and_left_alone(
    planted: str, home: Path, tmp_path: Path
) -> None:
    database = _database(tmp_path / "shared")
    lock = _lock_file(home, database)
    named = tmp_path / "named-by-the-link"
    if planted == "fifo":
        os.mkfifo(lock)
    else:
        if planted == "link to a file":
            named.write_bytes(b"the user's own file\n")
            named.chmod(0o644)
        lock.symlink_to(named)
    before = database.read_bytes()

    result = CliRunner().invoke(cli, ["run", "maintenance", "--type", "quick", "--yes"])

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(lock) in lines[0], result.output
    assert ("symbolic link" if planted != "fifo" else "FIFO") in lines[0], result.output
    assert "internal error" not in result.output
    # Nothing the link names was made or changed, the link itself left where it was.
    if planted == "dangling link":
        assert not named.exists()
    elif planted == "link to a file":
        assert named.read_bytes() == b"the user's own file\n"
        assert named.stat().st_mode & 0o777 == 0o644
    assert os.path.lexists(lock)
    assert database.read_bytes() == before
    # Once it is removed, the run takes its lock and goes on; the lock file goes with it.
    lock.unlink()
    result = CliRunner().invoke(cli, ["run", "maintenance", "--type", "quick", "--yes"])
    assert result.exit_code == 0, result.output
    assert not os.path.lexists(lock)
