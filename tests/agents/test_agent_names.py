"""A package's agent is named as `aishell agents list` names it by every command, and
typed with `-` for `_` it is the same agent, shown by its own name."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from aishell.cli import cli
from tests.agents.conftest import Install
from tests.helpers import digest

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class StatsAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Refresh one table's statistics.",
        options=(Option("table", "text", "Table.", required=True),),
        tools=("update_table_statistics",),
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        params = {{"table": job["table"]}}
        return [Step(step_id(0), "update_table_statistics", params, "Statistics")]
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_package_s_agent_takes_either_spelling_and_shows_its_own(
    demo_db: Path, site: Install
) -> None:
    agent = f"fresh_stats_{uuid.uuid4().hex[:8]}"
    site({"agent.py": AGENT.format(agent=agent)}, agents={agent: "PKG.agent:StatsAgent"})
    listed = json.loads(invoke("agents", "list", "--json").stdout)["agents"]
    assert agent in {each["name"] for each in listed}
    assert f"  {agent} " in invoke("run", "--help").output
    before = digest(demo_db)
    for spelled in (agent, agent.replace("_", "-")):
        planned = invoke("plan", spelled, "--table", "orders", "--json")
        assert planned.exit_code == 0, planned.output
        assert json.loads(planned.stdout)["agent"] == agent
        for group in (("run",), ("plan",), ("fleet", "run")):
            usage = invoke(*group, spelled, "--help")
            assert usage.exit_code == 0, usage.output
            assert f"{' '.join(group)} {agent} [OPTIONS]" in usage.output, usage.output
        shown = json.loads(invoke("agents", "show", spelled, "--json").stdout)
        assert shown["name"] == agent
    assert digest(demo_db) == before
