"""A reader that closes the pipe (`aishell ... | head -1`) never stops a command midway.

The pipe's read end is closed before aishell writes a byte, so every write meets a
closed pipe: the command still goes on to its end, says nothing of the pipe on stderr and
exits as it would have; a run finishes and is recorded with its real status.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.render.runs import run_detail
from aishell.state.faults import sqlite_path
from tests.helpers import query

HANG = 120  # seconds: a hang detector, never a timing assertion


def closed_reader(*args: str) -> subprocess.CompletedProcess[str]:
    """aishell with stdout (and stderr, when asked) a pipe no one reads any more."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "aishell", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=HANG,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [["doctor"], ["tools", "list"], ["tools", "list", "--json"], ["runs", "list"], ["--help"]],
)
def test_a_listing_command_ends_quietly(home: Path, demo_db: Path, args: list[str]) -> None:
    done = closed_reader(*args)
    assert done.stderr == ""
    assert done.returncode == 0


def test_a_run_whose_reader_is_gone_finishes_and_is_recorded(home: Path, demo_db: Path) -> None:
    done = closed_reader("run", "maintenance", "--type", "quick", "--non-interactive")
    assert done.stderr == "", done.stderr
    assert done.returncode == 0
    store = sqlite_path(load_config(home=home).state_url)
    assert store is not None
    statuses = query(store, "SELECT status FROM runs")
    assert statuses == [("completed",)]


def test_a_failing_command_still_exits_with_its_code(home: Path, demo_db: Path) -> None:
    # The error's line goes to stderr, which is still read; only stdout's reader left.
    done = closed_reader("runs", "show", "nosuchrun")
    assert done.returncode == 2, done
    assert done.stderr.startswith("Error: "), done.stderr


def test_runs_show_says_an_unfinished_run_is_not_finished(config: Config, demo_db: Path) -> None:
    ran = CliRunner().invoke(cli, ["run", "maintenance", "--type", "quick", "--non-interactive"])
    assert ran.exit_code == 0, ran.output
    run_id = commands.list_runs(config)[0]["run_id"]
    run = commands.show_run(config, run_id)
    out = Console(file=io.StringIO(), width=200)
    run_detail(out, run)
    assert "; finished 20" in out.file.getvalue()
    run["finished_at"] = None  # as a run still going, or one whose process was killed, has it
    out = Console(file=io.StringIO(), width=200)
    run_detail(out, run)
    assert "not finished" in out.file.getvalue() and "None" not in out.file.getvalue()
