"""An agent's own code counts towards the run's time limit while it plans: a plugin
whose normalize_job, check_job or plan_steps never returns (a loop, a sleep, a service
that never answers: Python the run cannot cancel) ends the command at the limit with
one line naming the agent, exit 4, and no run recorded. What its code raises in time is
still its own failure, and its check still goes through the guard."""

from __future__ import annotations

import importlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.test_plugin_guards import STEP, _agent
from tests.agents.test_plugin_own_failures import Install

# Held until the test lets go (at most HELD_SECONDS, so that code without the bound
# fails the test instead of hanging it): the agent's method then returns as usual.
HELD_SECONDS = 30
HOLDING = f"""
import threading

HELD = threading.Event()


def held(value):
    HELD.wait({HELD_SECONDS})
    return value
"""
STEP_LATE = f"held({STEP})"
CHECK_LATE = "\nMade.check_job = lambda self, job, conn: held(None)\n"
NORMALIZE_LATE = "\nMade.normalize_job = lambda self, job, config: held(dict(job))\n"


@pytest.fixture
def release() -> Iterator[list[str]]:
    """The packages whose held agents are let go when the test ends."""
    packages: list[str] = []
    yield packages
    for package in packages:
        importlib.import_module(f"{package}.agent").HELD.set()


def _runs() -> list[dict]:
    listed = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    return json.loads(listed.stdout)


@pytest.mark.parametrize(
    ("planned", "extra", "command"),
    [
        (STEP_LATE, "", "run"),
        (STEP, CHECK_LATE, "run"),
        (STEP, NORMALIZE_LATE, "run"),
        (STEP_LATE, "", "dry-run"),
    ],
    ids=["plan_steps", "check_job", "normalize_job", "plan_steps in a dry run"],
)
def test_an_agent_that_never_ends_planning_is_stopped_at_the_run_s_limit(
    demo_db: Path,
    site: Install,
    release: list[str],
    planned: str,
    extra: str,
    command: str,
) -> None:
    agent, package = _agent(site, planned=planned, extra=HOLDING + extra)
    release.append(package)
    before = _runs()
    args = ["run", agent, "--yes", "--json", "--max-run-time", "2s"]
    args += ["--dry-run"] if command == "dry-run" else []
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 4, ran.output
    error = json.loads(ran.stdout)["error"]["message"]
    assert error.startswith("interrupted by the run-time limit of 2 s (--max-run-time)"), error
    assert f"agent {agent} (package {package}) was still planning" in error, error
    assert "nothing was changed" in error
    assert _runs() == before


def test_an_agent_that_plans_in_time_runs_and_its_failure_is_its_own(
    demo_db: Path, site: Install
) -> None:
    agent, _ = _agent(site)
    ran = CliRunner().invoke(cli, ["run", agent, "--yes", "--json", "--max-run-time", "60s"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["status"] == "completed"
    failing, package = _agent(site, planned=f"[][{uuid.uuid4().int % 7 + 1}]")
    ran = CliRunner().invoke(cli, ["run", failing, "--yes", "--json", "--max-run-time", "60s"])
    assert ran.exit_code == 2, ran.output
    error = json.loads(ran.stdout)["error"]["message"]
    assert f"agent {failing} (package {package}) failed to plan: IndexError" in error, error


def test_an_agent_s_check_still_goes_through_the_guard_on_its_own_thread(
    demo_db: Path, site: Install
) -> None:
    check = (
        "\nfrom sqlalchemy import text\n\n"
        "Made.check_job = lambda self, job, conn: conn.execute(text('DELETE FROM users'))\n"
    )
    agent, _ = _agent(site, extra=check)
    ran = CliRunner().invoke(cli, ["run", agent, "--yes", "--json", "--max-run-time", "60s"])
    assert ran.exit_code != 0, ran.output
    assert "DELETE" in ran.stdout, ran.stdout
    with closing(sqlite3.connect(demo_db)) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0
