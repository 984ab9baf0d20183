"""A home whose folder is a file, or lies under one, is one line and exit 2 from every
command (as `init` gives it), with --json the error object; and a defect's line under
--debug does not ask for --debug."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.cli.context import AishellGroup


@pytest.fixture
def a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AISHELL_HOME", raising=False)
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(tmp_path / "no-system-config"))
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize("command", [["runs", "list"], ["doctor"], ["demo"], ["init"]])
def test_a_home_under_a_file_is_one_line(a_file: Path, command: list[str]):
    home = a_file / "sub"
    done = CliRunner().invoke(cli, ["--home", str(home), *command])
    assert done.exit_code == 2, done.output
    assert done.output.splitlines() == [
        f"Error: The home's folder {home} cannot be made: {a_file} is a file, not a folder; "
        "choose another home with --home or AISHELL_HOME"
    ]
    assert a_file.read_text() == "not a folder\n"


def test_a_home_under_a_file_with_json_is_the_error_object(a_file: Path):
    done = CliRunner().invoke(cli, ["--home", str(a_file / "sub"), "runs", "list", "--json"])
    assert done.exit_code == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "usage_error" and error["exit_code"] == 2
    assert f"{a_file} is a file, not a folder" in error["message"]


def test_a_home_that_is_a_file_named_by_aishell_home(a_file: Path, monkeypatch):
    monkeypatch.setenv("AISHELL_HOME", str(a_file))
    done = CliRunner().invoke(cli, ["targets", "list"])
    assert done.exit_code == 2, done.output
    assert done.output.startswith(f"Error: The home's folder {a_file} cannot be made: {a_file}")


def test_an_internal_error_under_debug_does_not_ask_for_debug():
    @click.group(cls=AishellGroup)
    @click.option("--debug", is_flag=True)
    def root(debug: bool) -> None:
        pass

    @root.command()
    def boom() -> None:
        raise RuntimeError("a defect")

    for args, hint in [
        ([], "; run with --debug for the traceback"),
        (["--debug"], "; the traceback is above"),
    ]:
        done = CliRunner().invoke(root, [*args, "boom"])
        assert done.exit_code == 1
        assert done.output.splitlines()[-1] == (
            f"Error: internal error (RuntimeError: a defect){hint}"
        )
    assert "Traceback (most recent call last)" in done.output
