"""A configured path that lies under a regular file (backup_dir, state.url, a SQLite
target's file, a metrics or plan file) is one line naming that file and the cause, with
the exit code of what failed, and nothing is left behind: never an internal error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from tests.helpers import corrupt_index, use_target

IN_THE_WAY = "not a folder\n"


@pytest.fixture
def plain(home: Path) -> Path:
    """A regular file where a folder of a configured path should be."""
    path = home / "plain-file"
    path.write_text(IN_THE_WAY)
    return path


def _set(home: Path, **keys: Any) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(keys)
    path.write_text(yaml.safe_dump(data))


# What any command makes in the home: the state store, the planner's cache, the key.
HOME_OWN = ("state.db", "cache", "plan-signing")


def _entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error(done: Result) -> str:
    lines = [line for line in done.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "internal error" not in done.output, done.output
    return str(lines[0])


def test_sqlite_repair_copy_under_a_file_is_one_line(
    home: Path, demo_db: Path, plain: Path
) -> None:
    """Emergency maintenance copies the database into backup_dir before its repair."""
    corrupt_index(demo_db)
    _set(home, backup_dir=str(plain / "backups"))
    before = _entries(home)
    done = commands.run_job(
        load_config(home=home), "maintenance", {"type": "emergency"}, approver=PreApproved()
    )
    assert done.status == "failed"
    error = next(s for s in done.steps if s.tool == "repair_corrupted_tables").error or ""
    assert error.startswith(f"{plain} is not a folder, so making the backup folder "), error
    assert "internal error" not in error and "\n" not in error, error
    assert plain.read_text() == IN_THE_WAY
    made = [e for e in _entries(home) if e not in before]
    assert [e for e in made if not e.startswith(HOME_OWN)] == []


def test_sqlite_repair_copy_is_taken_whole_in_a_folder(home: Path, demo_db: Path) -> None:
    corrupt_index(demo_db)
    done = commands.run_job(
        load_config(home=home), "maintenance", {"type": "emergency"}, approver=PreApproved()
    )
    assert done.status == "completed", done.error
    [copy] = (home / "backups").glob("demo-pre-repair-*.sqlite")
    assert not list((home / "backups").glob("*.partial"))
    assert copy.stat().st_mode & 0o077 == 0


def test_every_backup_command_under_a_file(home: Path, server_url: str, plain: Path) -> None:
    """A backup taken, then backup_dir moved under a file: a new backup fails in one
    line naming the file (exit 1, the run failed); the list, the drill that validates
    the backup taken, and the cleanup of the catalog, which need no new folder, work."""
    use_target(home, server_url)
    runner = CliRunner()
    assert runner.invoke(cli, ["run", "backup", "--yes"]).exit_code == 0
    _set(home, backup_dir=str(plain / "backups"))
    for kind in ("full", "incremental"):
        done = runner.invoke(cli, ["run", "backup", "--type", kind, "--yes", "--json"])
        assert done.exit_code == 1, done.output
        [failed] = [s for s in json.loads(done.stdout)["steps"] if s["status"] == "failed"]
        said = failed["error"]["message"]
        assert said.startswith(f"{plain} is not a folder, so making the backup folder"), said
    assert runner.invoke(cli, ["backups", "list"]).exit_code == 0
    drill = runner.invoke(cli, ["run", "backup", "--type", "drill", "--yes"])
    assert drill.exit_code == 0, drill.output
    assert plain.read_text() == IN_THE_WAY


def test_a_state_store_under_a_file_is_one_line(home: Path, plain: Path) -> None:
    _set(home, state={"url": f"sqlite:///{plain}/sub/state.db"})
    done = CliRunner().invoke(cli, ["runs", "list"])
    assert done.exit_code == 2, done.output
    line = _one_error(done)
    assert f"{plain} is a file, not a folder" in line and "state.url" in line, line
    assert plain.read_text() == IN_THE_WAY


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["metrics", "--textfile", "{plain}/sub/aishell.prom"], "Metrics file"),
        (["plan", "backup", "--out", "{plain}/plan.json"], "Plan file"),
    ],
)
def test_a_file_to_write_under_a_file_is_one_line(
    home: Path, demo_db: Path, plain: Path, args: list[str], what: str
) -> None:
    done = CliRunner().invoke(cli, [a.replace("{plain}", str(plain)) for a in args])
    assert done.exit_code == 2, done.output
    line = _one_error(done)
    assert line.startswith(f"Error: {what} {plain}/"), line
    assert f"cannot be written: {plain} is a file, not a folder" in line, line


def test_a_sqlite_target_under_a_file_is_one_line(home: Path, demo_db: Path, plain: Path) -> None:
    """`aishell demo` and `restore --create` make a target's file: neither can under a file."""
    use_target(home, f"sqlite:///{plain}/demo.db")
    before = _entries(home)
    demo = CliRunner().invoke(cli, ["demo"])
    assert demo.exit_code == 2, demo.output
    assert f"{plain} is a file, not a folder" in _one_error(demo)
    config = use_target(home, f"sqlite:///{demo_db}", copy=f"sqlite:///{plain}/copy.db")
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config)
    restore = CliRunner().invoke(
        cli, ["restore", str(backup["id"]), "--to", "copy", "--create", "--non-interactive"]
    )
    assert restore.exit_code == 2, restore.output
    line = _one_error(restore)
    assert f"its file {plain}/copy.db cannot be made: {plain} is a file" in line, line
    made = [e for e in _entries(home) if e not in before]
    assert [e for e in made if not e.startswith(("backups", *HOME_OWN))] == []
    assert plain.read_text() == IN_THE_WAY
