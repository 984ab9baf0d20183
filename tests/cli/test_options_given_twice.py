"""An option given twice is refused in one line, not settled by the last one: click
keeps the last value, so `--tables orders --tables users` ran on users alone and
`--retention-days 90 ... --retention-days 1` kept one day. A flag given twice says one
thing and stays allowed; a value that looks like an option is a value."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM app_logs").fetchone()[0])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["run", "maintenance", "--type", "quick", "--tables", "users", "--tables", "orders"],
            "--tables given more than once; give each option once (a list of tables is "
            "comma-separated)",
        ),
        (
            [
                "run",
                "log-cleanup",
                "--table",
                "app_logs",
                "--retention-days",
                "90",
                "--retention-days=1",
            ],
            "--retention-days given more than once",
        ),
        (
            ["plan", "maintenance", "--type", "full", "--update-stats", "--no-update-stats"],
            "--update-stats and --no-update-stats given more than once",
        ),
        (
            ["run", "maintenance", "--target", "demo", "--type", "quick", "--target", "demo"],
            "--target given more than once",
        ),
    ],
    ids=["tables", "retention", "flag-sides", "target"],
)
def test_an_option_given_twice_is_one_line_and_nothing_runs(
    demo_db: Path, args: list[str], named: str
) -> None:
    before = _rows(demo_db)
    done = CliRunner().invoke(cli, [*args, "--non-interactive"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: {named}"), done.output
    assert _rows(demo_db) == before


def test_a_flag_twice_and_a_value_like_an_option_are_taken(demo_db: Path) -> None:
    args = ["run", "log-cleanup", "--table", "app_logs", "--retention-days", "90"]
    done = CliRunner().invoke(
        cli,
        [
            *args,
            "--dry-run",
            "--dry-run",
            "--ignore-window",
            "--reason",
            "--retention-days",
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    assert _rows(demo_db) > 0
