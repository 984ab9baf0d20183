"""A backup that cannot write its file ends as a failed step with one line naming the
file or folder and the cause (the process's file size limit, a folder that is not one),
never as an internal error, and leaves nothing behind.

The size limit is set for real (RLIMIT_FSIZE, what `ulimit -f` sets) in an `aishell`
process the test starts. Tests run as root, whom permission bits do not stop, so an
unwritable folder is made as a path whose parent is a regular file."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from tests.helpers import use_target
from tests.services import engine

REPO = Path(__file__).resolve().parents[3]
# The limit set on the `aishell` process, and the data that outgrows it.
_LIMIT = 1536 * 1024
_DATA = 6 * 1024 * 1024


def _run_limited(home: Path, *args: str) -> tuple[int, dict, str]:
    """`aishell run backup ...` under a file size limit: exit code, JSON, stderr."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (_LIMIT, _LIMIT))

    env = {**os.environ, "AISHELL_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "aishell", "run", "backup", "--type", "full", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
        check=False,
    )
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def _backup_step(found: dict) -> dict:
    return next(s for s in found["steps"] if s["tool"] == "backup_database_full")


def _left(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_sqlite_backup_over_the_file_size_limit_says_so(home):
    conn = sqlite3.connect(home / "demo.db")
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)")
    conn.executemany("INSERT INTO blobs (b) VALUES (randomblob(?))", [(65536,)] * (_DATA >> 16))
    conn.commit()
    conn.close()
    # The home is made (state, key, catalog) before the limit is set.
    assert CliRunner().invoke(cli, ["backups", "list"]).exit_code == 0
    code, found, err = _run_limited(home, "--yes", "--json")
    assert code == 1, (code, found, err)
    error = _backup_step(found)["error"]["message"]
    assert "File size limit reached" in error and str(home / "backups" / "demo") in error, error
    assert "internal error" not in error and "disk I/O error" not in error, error
    assert _left(home / "backups") == []


def test_a_postgresql_backup_over_the_file_size_limit_says_so(home, pg_url):
    with engine(pg_url).connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY, v text)"))
        # Hex of random digests: about 4 bits in each character, so pg_dump's compression
        # leaves the archive well over the limit.
        conn.execute(
            text(
                "INSERT INTO t SELECT g, (SELECT string_agg(md5(random()::text || g || h), '') "
                "FROM generate_series(1, 64) h) FROM generate_series(1, :n) g"
            ),
            {"n": _DATA // 2048},
        )
    use_target(home, pg_url)
    assert CliRunner().invoke(cli, ["backups", "list"]).exit_code == 0
    code, found, err = _run_limited(home, "--yes", "--json")
    assert code == 1, (code, found, err)
    error = _backup_step(found)["error"]["message"]
    assert "File size limit reached" in error and str(home / "backups" / "db") in error, error
    assert "internal error" not in error, error
    assert _left(home / "backups") == []


def _backup_dir(home: Path, folder: Path) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["backup_dir"] = str(folder)
    path.write_text(yaml.safe_dump(data))


def test_a_backup_folder_under_a_regular_file_is_named_with_the_cause(home, demo_db):
    plain = home / "plain-file"
    plain.write_text("not a folder\n")
    _backup_dir(home, plain / "backups")
    done = commands.run_job(load_config(home=home), "backup", {"type": "full"})
    assert done.status == "failed"
    error = next(s for s in done.steps if s.tool == "backup_database_full").error
    assert f"{plain} is not a folder, so making the backup folder {plain}/backups/demo" in error
    assert "internal error" not in error, error


def test_a_target_folder_that_is_a_regular_file_is_named_with_the_cause(home, demo_db):
    (home / "backups").mkdir(exist_ok=True)
    (home / "backups" / "demo").write_text("not a folder\n")
    done = commands.run_job(load_config(home=home), "backup", {"type": "full"})
    assert done.status == "failed"
    error = next(s for s in done.steps if s.tool == "backup_database_full").error
    assert f"{home}/backups/demo is not a folder" in error, error
    assert "internal error" not in error, error
