"""A MariaDB backup holds every table the database's catalog lists as the dump starts: a
dump program that leaves one out (an --ignore-table its wrapper adds) is no backup of
the database and is not kept, where before its manifest listed only what the dump held
and the backup was "proven by restore". And with no dump program on PATH, the error
names both that would do."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from aishell import commands
from tests.handlers.backup.conftest import Source
from tests.helpers import run_sql, use_target

# mariadb-dump (and mysqldump) on PATH leaving out the table `big` of the database it
# dumps, as a site's wrapper with an --ignore-table of its own would.
_IGNORING = """
import subprocess, sys
args = sys.argv[1:]
at = args.index("--")
args.insert(at, "--ignore-table=" + args[at + 1] + ".big")
sys.exit(subprocess.run([REAL, *args]).returncode)
"""


def _ignoring_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    assert real is not None
    folder = tmp_path / "ignoring-bin"
    folder.mkdir()
    for name in ("mariadb-dump", "mysqldump"):
        program = folder / name
        program.write_text(f"#!{sys.executable}\nREAL = {real!r}\n{_IGNORING}")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def ignoring_dump_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ignoring_on_path(tmp_path, monkeypatch)


def _tables(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE small (id INTEGER PRIMARY KEY)",
        "INSERT INTO small VALUES (1), (2)",
        "CREATE TABLE big (id INTEGER PRIMARY KEY)",
        "INSERT INTO big VALUES (1), (2), (3)",
    )


def test_a_dump_that_leaves_out_a_table_is_not_kept(
    home: Path, mariadb_source: Source, ignoring_dump_program: None
) -> None:
    _tables(mariadb_source.url)
    config = use_target(home, mariadb_source.url)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "failed"
    backup = done.steps[1]
    assert backup.status == "failed"
    assert "'s dump lacks tables the database holds: big; it was not kept" in backup.error
    assert commands.list_backups(config) == []


def test_an_increment_cut_from_a_dump_that_leaves_out_a_table_is_not_kept(
    home: Path, mariadb_source: Source, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _tables(mariadb_source.url)
    config = use_target(home, mariadb_source.url)
    full = commands.run_job(config, "backup", {"type": "full"})
    assert full.status == "completed", full.error
    run_sql(mariadb_source.url, "INSERT INTO small VALUES (3)")
    _ignoring_on_path(tmp_path, monkeypatch)
    done = commands.run_job(config, "backup", {"type": "incremental"})
    assert done.status == "failed"
    assert "lacks tables the database holds: big" in done.steps[1].error
    assert len(commands.list_backups(config)) == 1


def test_with_no_dump_program_the_error_names_both(
    home: Path, mariadb_source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tables(mariadb_source.url)
    config = use_target(home, mariadb_source.url)
    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    done = commands.run_job(config, "backup", {"type": "full", "verify": False})
    assert done.status == "failed"
    assert done.steps[1].error == (
        "Neither mariadb-dump nor mysqldump is installed (on PATH); install the "
        "database's client tools"
    )
