"""A usage error is one line on stderr (`--help` shows the usage), or with --json anywhere
among the words (not after `--`: those are a schedule's job) the error object on stdout,
the top-level options' errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli


def _run(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(cli, list(args))
    return done.exit_code, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--config", "{dir}", "runs", "list"], "Invalid value for '--config': File '{dir}' is a"),
        (["--bogus", "runs", "list"], "No such option '--bogus'"),
        (["runs", "--bogus", "list"], "No such option '--bogus'"),
        (["runs", "list", "--bogus"], "No such option '--bogus'"),
        (["runs", "list", "--limit", "x"], "Invalid value for '--limit'"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (["run", "maintenance", "--type", "bogus"], "Invalid value for '--type'"),
    ],
)
def test_a_usage_error_is_one_line_or_with_json_the_error_object(
    home: Path, tmp_path: Path, args: list[str], says: str
):
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    says = says.replace("{dir}", str(tmp_path))
    code, out, err = _run(*args)
    assert code == 2 and out == ""
    assert err.splitlines() == [err.strip()] and err.startswith(f"Error: {says}"), err

    for at in range(len(args) + 1):
        code, out, err = _run(*args[:at], "--json", *args[at:])
        if code == 2 and out:  # --json among the top-level words is itself no option
            error = json.loads(out)["error"]
            assert error["code"] == "usage_error" and error["exit_code"] == 2
            assert says in error["message"] or "--json" in error["message"], error
            assert err == ""
    code, out, err = _run(*args, "--json")
    assert code == 2 and says in json.loads(out)["error"]["message"] and err == ""


def test_json_after_the_words_of_a_job_is_the_jobs(home: Path):
    code, out, err = _run(
        "schedule", "add", "s", "--cron", "0 2 * * *", "--", "maintenance", "--bogus", "--json"
    )
    assert code == 2 and out == ""
    assert err == "Error: Job words: No such option '--bogus'.\n"


def test_help_is_as_click_shows_it(home: Path):
    code, out, _ = _run("runs", "--help")
    assert code == 0 and out.startswith("Usage: ") and "Commands:" in out
    code, out, err = _run("runs")  # a group with no command shows its help
    assert "Usage: " in out + err and "Commands:" in out + err
    code, out, _ = _run("--help")
    assert code == 0 and "Exit codes:" in out
