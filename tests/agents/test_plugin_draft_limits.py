"""An agent of another package holds a model's draft of its job to what its own plan
keeps to, with `draft_limits` returning a `DraftLimits`, as aishell's agents do: a draft
outside it is rejected with the agent's reason and the agent's own plan runs instead.
Its `draft_limits` is its code as its other methods are: what it raises or returns
amiss is its failure, named, and it counts towards the run's time limit. Against a
local server speaking the Ollama API, on the demo database."""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import PlanError
from aishell.policy.approvers import PreApproved
from tests.agents.conftest import Install
from tests.fake_ollama import Script, fake_ollama
from tests.helpers import query
from tests.planners.test_llm_job_limits import _answer, _drafted, _settings, _step

AGENT = """
import threading

from aishell.agents.api import AgentSpec, BaseAgent, DraftLimits, Option, Step, step_id

HELD = threading.Event()


class Made(BaseAgent):
    spec = AgentSpec(
        name="NAME",
        description="Refresh one table's statistics.",
        options=(Option("table", "text", "Table to tidy.", required=True),),
        tools=("update_table_statistics",),
    )

    def plan_steps(self, job, ctx):
        table = job["table"]
        return [Step(step_id(0), "update_table_statistics", {"table": table}, "Statistics")]

    def draft_limits(self, job, ctx):
        why = f"the NAME job refreshes {job['table']} alone"
        return LIMITS
"""
HELD_TO_ITS_TABLE = (
    'DraftLimits(required={"update_table_statistics": (("table", job["table"], why),)})'
)
JOB = {"table": "users"}


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def llm_config(demo_db: Path, edit_config: Any, script: Script) -> Iterator[Config]:
    with fake_ollama(script) as host:
        settings = _settings(host)
        settings["planner"]["llm"]["tries"] = 1
        yield edit_config(settings)


def _agent(site: Install, limits: str = HELD_TO_ITS_TABLE) -> tuple[str, str]:
    """A package whose one agent holds drafts so; (agent, package)."""
    name = f"made_{uuid.uuid4().hex[:8]}"
    body = AGENT.replace("NAME", name).replace("LIMITS", limits)
    return name, site({"agent.py": body}, agents={name: "PKG.agent:Made"})


def _analyzed(demo_db: Path) -> set[str]:
    """The tables SQLite holds statistics of."""
    if not query(demo_db, "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"):
        return set()
    return {str(row[0]) for row in query(demo_db, "SELECT tbl FROM sqlite_stat1")}


def _run(config: Config, agent: str) -> Any:
    return commands.run_job(config, agent, JOB, planner="llm", approver=PreApproved())


def test_a_draft_outside_a_plugin_agent_s_limits_is_rejected_and_its_plan_runs(
    llm_config: Config, demo_db: Path, site: Install, script: Script
) -> None:
    agent, _ = _agent(site)
    assert "app_logs" not in _analyzed(demo_db)
    script.answers = [_answer(_step("update_table_statistics", {"table": "app_logs"}))]
    result = _run(llm_config, agent)
    assert result.status == "completed", result.error
    drafted = _drafted(llm_config, result)
    assert drafted["fallback_from"] == "llm", drafted
    said = " ".join(drafted["rejected"][0])
    assert f"step_0 (update_table_statistics): the {agent} job refreshes users alone" in said
    assert "app_logs" not in _analyzed(demo_db) and "users" in _analyzed(demo_db)


def test_a_draft_within_a_plugin_agent_s_limits_runs(
    llm_config: Config, demo_db: Path, site: Install, script: Script
) -> None:
    agent, _ = _agent(site)
    script.answers = [_answer(_step("update_table_statistics", {"table": "users"}))]
    result = _run(llm_config, agent)
    assert result.status == "completed", result.error
    assert _drafted(llm_config, result)["planner"] == "llm"


def test_a_plugin_agent_s_params_given_together_are_held(
    llm_config: Config, demo_db: Path, site: Install, script: Script
) -> None:
    """`together`: the table only as an earlier count's, which this draft does not give."""
    together = (
        'DraftLimits(together={"update_table_statistics": '
        '({"table": "table"}, {"count_table_rows"}, why)})'
    )
    agent, _ = _agent(site, together)
    script.answers = [_answer(_step("update_table_statistics", {"table": "users"}))]
    result = _run(llm_config, agent)
    assert result.status == "completed", result.error
    drafted = _drafted(llm_config, result)
    assert drafted["fallback_from"] == "llm", drafted
    assert f"the {agent} job refreshes users alone" in " ".join(drafted["rejected"][0])


@pytest.mark.parametrize(
    ("limits", "said"),
    [
        ("{'tables': ['users']}", "returned dict from draft_limits, not a DraftLimits"),
        ("DraftLimits(tables='users')", "returned DraftLimits from draft_limits, not a Draft"),
        ("DraftLimits(refused={'update_table_statistics': 7})", "returned DraftLimits from"),
        ("[][3]", "failed to say what a drafted plan keeps to: IndexError"),
        ("DraftLimits(together={'x': (['table'], {'y'}, 'why')})", "returned DraftLimits from"),
        ("DraftLimits(together={'x': ({'table': 3}, {'y'}, 'why')})", "returned DraftLimits"),
        ("DraftLimits(together={'x': ({'table': ''}, 'y', 'why')})", "returned DraftLimits"),
    ],
    ids=[
        "a dict",
        "a text for a set",
        "a number for a reason",
        "an error",
        "a list for params and keys",
        "a number for a key",
        "a text for tools",
    ],
)
def test_a_plugin_agent_s_limits_amiss_are_its_failure_named(
    llm_config: Config, site: Install, script: Script, limits: str, said: str
) -> None:
    agent, package = _agent(site, limits)
    script.answers = [_answer(_step("update_table_statistics", {"table": "users"}))]
    with pytest.raises(PlanError) as raised:
        _run(llm_config, agent)
    assert f"agent {agent} (package {package}) {said}" in str(raised.value)
    assert not commands.list_runs(llm_config)


def test_a_plugin_agent_s_limits_that_never_come_stop_at_the_run_s_limit(
    llm_config: Config, site: Install
) -> None:
    agent, package = _agent(site, "HELD.wait(30) and DraftLimits()")
    try:
        args = ["run", agent, "--table", "users", "--planner", "llm", "--yes", "--json"]
        ran = CliRunner().invoke(cli, [*args, "--max-run-time", "2s"])
    finally:
        importlib.import_module(f"{package}.agent").HELD.set()
    assert ran.exit_code == 4, ran.output
    error = json.loads(ran.stdout)["error"]["message"]
    assert error.startswith("interrupted by the run-time limit of 2 s (--max-run-time)"), error
    assert f"agent {agent} (package {package}) was still planning" in error, error
