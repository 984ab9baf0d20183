"""A SQLite target's URL with parameters (`?mode=ro`, `?immutable=1`, `?cache=shared`)
is refused in one line naming the parameter, at `targets add` and when a config holding
it is read. aishell opens the file itself, by its path, so the parameters were ignored:
a target its owner wrote `mode=ro` for was written to by every run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import read_yaml, write_yaml

CONFIG = Path("config") / "aishell.yaml"
REFUSED = "a SQLite target's URL takes no parameters (got '{key}')"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("param", ["mode=ro", "immutable=1", "cache=shared", "mode=ro&nolock=1"])
def test_targets_add_refuses_a_sqlite_url_with_parameters(
    home: Path, demo_db: Path, param: str
) -> None:
    before = (home / CONFIG).read_bytes()
    done = CliRunner().invoke(cli, ["targets", "add", "ro", f"sqlite:///{demo_db}?{param}"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    key = param.split("=")[0]
    assert line.startswith("Error: The location is not one aishell can use: "), line
    assert REFUSED.format(key=key) in line, line
    assert (home / CONFIG).read_bytes() == before


def test_a_config_holding_mode_ro_is_refused_and_the_file_is_not_written(
    home: Path, demo_db: Path
) -> None:
    """Written by hand: every command stops at the config, naming the file and key; the
    run its owner thought read-only writes nothing (it used to ANALYZE every table)."""
    path = home / CONFIG
    data = read_yaml(path)
    data["targets"]["demo"]["url"] = f"sqlite:///{demo_db}?mode=ro"
    write_yaml(path, data)
    before = _digest(demo_db)
    for args in (["targets", "list"], ["run", "maintenance", "--type", "quick", "--yes"]):
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 2, done.output
        [line] = done.output.strip().splitlines()
        assert f"{path}: targets.demo.url: {REFUSED.format(key='mode')}" in line, line
    assert _digest(demo_db) == before


def test_a_sqlite_uri_filename_is_refused(home: Path) -> None:
    done = CliRunner().invoke(cli, ["targets", "add", "u", "sqlite:///file:x.db", "--no-check"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert "names its file by path (sqlite:///path.db), not as a SQLite URI" in line, line


def test_a_question_mark_in_the_file_name_is_written_escaped(home: Path, tmp_path: Path) -> None:
    """A file whose name holds '?' is still a target: its URL writes it %3F."""
    import sqlite3

    odd = tmp_path / "odd?name.db"
    sqlite3.connect(odd).close()
    done = CliRunner().invoke(
        cli, ["targets", "add", "odd", "sqlite:///" + str(tmp_path) + "/odd%3Fname.db"]
    )
    assert done.exit_code == 0, done.output
    assert "odd (sqlite)" in done.output, done.output
