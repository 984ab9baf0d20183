"""A SQLite file another connection holds is a busy target, not an unreachable one: a
preview (or a run) that meets it ends saying so (exit 5, as a locked target), and the
circuit breaker, which keeps every run away from a target that fails to connect, does
not count it: once the file is free, the next run runs."""

from __future__ import annotations

import sqlite3

import pytest
import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.errors import EXIT_LOCKED
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target


def _held_file_target(home):
    path = home / "held.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(100)])
    use_target(home, f"sqlite:///{path}")
    config_file = home / "config" / "aishell.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["targets"]["db"]["busy_timeout_ms"] = 100
    config_file.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("how", [["--dry-run"], []], ids=["dry run", "run"])
def test_a_held_file_is_locked_not_unreachable_and_trips_no_breaker(home, how):
    path = _held_file_target(home)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(4):  # past the breaker's three failures
            done = CliRunner().invoke(
                cli, ["run", "maintenance", "--type", "quick", "--target", "db", *how]
            )
            assert done.exit_code == EXIT_LOCKED, done.output
            assert "is locked: another connection held its database file" in done.output
            assert "leaves" not in done.output  # no breaker
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    config = use_target(home, f"sqlite:///{path}")
    result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert result.status == "completed", result.error


def test_doctor_names_a_held_file_as_a_problem(home):
    path = _held_file_target(home)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = CliRunner().invoke(cli, ["doctor", "--target", "db"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "internal error" not in done.output, done.output
    assert "is locked" in done.output, done.output
