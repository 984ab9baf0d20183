"""An agent has one name, the one `aishell agents list` shows: every command that names
an agent shows that name and takes it, and takes it typed with `-` for `_` too."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aishell.cli import cli
from tests.helpers import digest

PURGE = ("--table", "app_logs", "--retention-days", "30")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def as_json(*args: str) -> Any:
    done = invoke(*args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def test_the_help_of_each_job_group_names_the_agent_as_agents_list_does(home: Path):
    listed = {agent["name"] for agent in as_json("agents", "list")["agents"]}
    assert {"backup", "log_cleanup", "maintenance"} <= listed
    for group in (("run",), ("plan",)):
        shown = invoke(*group, "--help").output
        assert "  log_cleanup " in shown and "  log-cleanup " not in shown, shown


@pytest.mark.parametrize("spelled", ["log_cleanup", "log-cleanup"])
def test_either_spelling_plans_and_runs_the_agent_named_as_listed(
    demo_db: Path, spelled: str
) -> None:
    before = digest(demo_db)
    planned = as_json("plan", spelled, *PURGE)
    assert planned["agent"] == "log_cleanup", planned
    dry = invoke("run", spelled, *PURGE, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert digest(demo_db) == before
    for group in (("run",), ("plan",), ("fleet", "run")):
        usage = invoke(*group, spelled, "--help")
        assert usage.exit_code == 0, usage.output
        assert f"{' '.join(group)} log_cleanup [OPTIONS]" in usage.output, usage.output
    assert as_json("agents", "show", spelled)["name"] == "log_cleanup"


@pytest.mark.parametrize("spelled", ["log_cleanup", "log-cleanup"])
def test_a_schedule_shows_its_job_as_the_agent_is_named(demo_db: Path, spelled: str) -> None:
    name = f"purge-{uuid.uuid4().hex[:8]}"
    cron = ("--cron", "30 1 * * *")
    added = invoke("schedule", "add", name, *cron, "--", spelled, *PURGE)
    assert added.exit_code == 0, added.output
    (found,) = [s for s in as_json("schedule", "list")["schedules"] if s["name"] == name]
    assert found["agent"] == "log_cleanup"
    assert found["words"][0] == "log_cleanup", found["words"]
    assert f"log_cleanup {' '.join(PURGE)}" in invoke("schedule", "list").output
