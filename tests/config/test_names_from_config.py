"""A name read from a config file that later becomes part of a path (a target's backups
folder and files, an agent's config file) is held to the rule `targets add` keeps: a
name that could lead outside its folder is refused at load with one `file: key` line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.home import find_agent_file
from aishell.config.models import load_config
from aishell.errors import ConfigError

BAD_NAMES = ["../../escape", "a/b", "..", ".hidden", "x\n", "back\\slash", "a" * 64]


def _with_target(home: Path, name: str, url: str) -> Path:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"][name] = {"url": url}
    data["backup_dir"] = "backups"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_target_name_that_is_no_plain_name_is_refused_at_load(home: Path, name: str):
    path = _with_target(home, name, "sqlite:///other.db")
    with pytest.raises(ConfigError) as refused:
        load_config(home=home)
    line = str(refused.value)
    assert line.startswith(f"{path}: targets: target name ") and "\n" not in line
    assert "letters, digits" in line


def test_a_backup_of_a_target_named_to_climb_out_is_refused_and_writes_nothing(
    home: Path, tmp_path: Path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    database = outside / "odd2.db"
    sqlite3.connect(database).execute("CREATE TABLE t (a INTEGER)").connection.commit()
    path = _with_target(home, "../../escape", f"sqlite:///{database}")
    before = sorted(p for p in tmp_path.parent.rglob("*") if "escape" in p.name)
    done = CliRunner().invoke(cli, ["run", "backup", "--target", "../../escape", "--yes"])
    assert done.exit_code == 2, done.output
    assert done.output.strip().splitlines() == [
        f"Error: {path}: targets: target name '../../escape' may hold letters, digits, "
        "'_', '.' and '-' only (at most 63), and starts with a letter or digit"
    ]
    assert sorted(p for p in tmp_path.parent.rglob("*") if "escape" in p.name) == before
    assert not (home / "backups").exists()
    # A listing reads the same rule, through its cache or not.
    listed = CliRunner().invoke(cli, ["targets", "list", "--json"])
    assert listed.exit_code == 2 and "targets: target name '../../escape'" in listed.output


def test_targets_add_keeps_the_same_rule(home: Path):
    done = CliRunner().invoke(cli, ["targets", "add", "x\n", "sqlite:///x.db", "--no-check"])
    assert done.exit_code == 2, done.output
    assert "Target name 'x\\n' may hold letters, digits" in done.output


@pytest.mark.parametrize("agent", ["../maintenance", "a/b", ".."])
def test_an_agent_name_that_is_no_plain_name_never_reaches_a_file(home: Path, agent: str):
    (home / "config" / "maintenance.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match="Agent name"):
        find_agent_file((home / "config" / "agents",), agent)
