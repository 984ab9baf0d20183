"""A package's agent whose plan cannot be made is named with its package in the one line
that says why: a step of a tool the catalog lacks (its file refused at load, for a risk
tag aishell does not know) is the plan's validation's to name with its step, not a bare
"No tool named" from whatever looked the tool up first; a tool it does not declare
names the agent's package too."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from aishell.cli import cli
from tests.agents.conftest import Install
from tests.agents.test_agent_recipe import COUNT, TOOL

AGENT = """
from pathlib import Path

from aishell.agents.api import AgentSpec, BaseAgent, Step, step_id


class Planned(BaseAgent):
    spec = AgentSpec(name="NAME", description="Count the users.", tools=DECLARED)

    def plan_steps(self, job, ctx):
        return [Step(step_id(0), "PLANNED", {"table": "users"}, "Count")]


def tool_folder():
    return Path(__file__).parent / "tools"
"""


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def _planning(site: Install, name: str, declared: str, planned: str, risk: str) -> str:
    """A package whose agent `name` declares `declared` and plans `planned`, with its own
    tool `count_NAME` tagged `risk`; the package's name."""
    body = AGENT.replace("NAME", name).replace("DECLARED", declared)
    tool = TOOL.format(tool=f"count_{name}", risk=risk, sql=COUNT)
    return site(
        {"agent.py": body.replace("PLANNED", planned), f"tools/count_{name}.yaml": tool},
        agents={name: "PKG.agent:Planned"},
        tools={"t": "PKG.agent:tool_folder"},
    )


def test_a_tool_refused_at_load_is_named_with_the_agent_s_package_and_step(
    demo_db: Path, site: Install
) -> None:
    name = "counts_users"
    package = _planning(site, name, f'("count_{name}",)', f"count_{name}", "harmless")
    planned = _invoke(["plan", name])
    assert planned.exit_code == 2, planned.output
    lines = planned.stderr.strip().splitlines()
    assert f"count_{name}.yaml: risk_level: 'harmless' is not one of" in planned.stderr
    assert lines[-1] == (
        f"Error: The plan of agent {name} (package {package}) is invalid: step_0 "
        f"(count_{name}): No tool named 'count_{name}' in the catalog"
    ), lines


def test_a_tool_the_agent_does_not_declare_names_its_package(demo_db: Path, site: Install) -> None:
    name = "counts_more"
    package = _planning(site, name, f'("count_{name}",)', "delete_old_records", "safe")
    planned = _invoke(["plan", name])
    assert planned.exit_code == 2, planned.output
    assert planned.stderr.strip().splitlines()[-1] == (
        f"Error: The plan of agent {name} (package {package}) has delete_old_records, which "
        f"the agent does not declare (its AgentSpec.tools: count_{name})"
    ), planned.stderr
