"""The recipe for an agent of one's own, followed outside aishell: a package in a
temporary site folder (its module, one tool file, a dist-info naming both as entry
points) is found as an installed package is, and `aishell plan NAME` and `aishell run
NAME` plan and run it on the demo database, with no file of aishell touched. Then what
goes wrong with plugins: an import that raises, a tool under-declaring its risk, an
agent that plans a tool it does not declare, a job option named as a run option."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.agents.api import (
    AgentSpec,
    BaseAgent,
    Option,
    Step,
    TaskContext,
    TaskResult,
    UsageError,
    register_agent,
    step_id,
)
from aishell.agents.available import BUILT_IN, agent_names, get_agent, reload_agents
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import PlanError
from aishell.executor import RunResult
from tests.conftest import REPO

AGENT_MODULE = '''
"""An agent of one's own: count the rows of one table, then refresh its statistics."""

from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class TidyAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Count one table's rows, then refresh its statistics.",
        options=(
            Option("table", "text", "Table to tidy.", required=True),
            Option("statistics", "flag", "Refresh statistics too.", default=True,
                   flag="--statistics/--no-statistics"),
        ),
        tools=("{tool}", "update_table_statistics"),
        privileges={{"sqlite": ("write access to the database file",)}},
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        table = job["table"]
        steps = [Step(step_id(0), "{tool}", {{"table": table}}, f"Count the rows of {{table}}")]
        if job["statistics"]:
            steps.append(
                Step(step_id(1), "update_table_statistics", {{"table": table}}, "Statistics")
            )
        return steps


def tool_folder():
    from pathlib import Path

    return Path(__file__).parent / "tools"
'''

TOOL = """
name: {tool}
description: Count the rows of one table.
category: analysis
risk_level: {risk}
required_capabilities: [database_read]
max_execution_time: 60
idempotent: true
params:
  type: object
  additionalProperties: false
  required: [table]
  properties:
    table: {{type: string, x-identifier: table, description: Table whose rows to count.}}
returns:
  type: object
  properties:
    row_count: {{type: integer}}
examples:
  - params: {{table: app_logs}}
locks:
  sqlite:
    - {{lock: SHARED, object: database file, held: while the table is read}}
implementations:
  sqlite:
    sql: {sql}
    result: one
"""

COUNT = "SELECT count(*) AS row_count FROM {table}"


def _tidy(install: Callable[..., str], risk: str = "safe", sql: str = COUNT) -> tuple[str, str]:
    """A package with the agent and its tool; (agent, tool) names unique to the test."""
    unique = uuid.uuid4().hex[:8]
    agent, tool = f"tidy_{unique}", f"count_rows_{unique}"
    package = f"tidy_{unique}"
    files = {
        "__init__.py": "",
        "agent.py": AGENT_MODULE.format(agent=agent, tool=tool),
        f"tools/{tool}.yaml": TOOL.format(tool=tool, risk=risk, sql=sql),
    }
    install(files, agents={agent: "PKG.agent:TidyAgent"}, tools={package: "PKG.agent:tool_folder"})
    return agent, tool


def _json(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_a_package_s_agent_and_tool_plan_and_run_on_the_demo_database(
    demo_db: Path, home: Path, site: Callable[..., str]
) -> None:
    agent, tool = _tidy(site)
    listed = {a["name"]: a for a in _json(["agents", "list", "--json"])["agents"]}
    assert listed[agent]["package"].startswith("plugin_")
    assert listed[agent]["tools"] == [tool, "update_table_statistics"]
    assert [k["key"] for k in listed[agent]["job_keys"]] == ["table", "statistics"]

    planned = _json(["plan", agent, "--table", "app_logs", "--json"])
    assert [s["tool"] for s in planned["steps"]] == [tool, "update_table_statistics"]

    ran = _json(["run", agent, "--table", "app_logs", "--no-statistics", "--yes", "--json"])
    assert ran["status"] == "completed", ran
    assert ran["agent"] == agent
    (step,) = ran["steps"]
    assert step["tool"] == tool and step["output"]["row_count"] > 0

    words = ["--cron", "@daily", "--", agent, "--table", "app_logs"]
    added = CliRunner().invoke(cli, ["schedule", "add", f"nightly_{agent}", *words])
    assert added.exit_code == 0, added.output
    (stored,) = commands.list_schedules(load_config(home=home))
    assert (stored["agent"], stored["job"]) == (agent, {"table": "app_logs", "statistics": True})

    shown = _json(["agents", "show", agent, "--json"])
    assert shown["package"] == listed[agent]["package"]
    assert shown["config"]["file"] is None  # no file of its own: the defaults
    assert [(t["name"], t["risk_level"]) for t in shown["tools"]] == [
        (tool, "safe"),
        ("update_table_statistics", "low"),
    ]
    assert [(s["name"], s["job"]) for s in shown["schedules"]] == [
        (f"nightly_{agent}", {"table": "app_logs", "statistics": True})
    ]


def test_a_required_job_key_left_out_is_refused_by_click_with_its_flag(
    demo_db: Path, site: Callable[..., str]
) -> None:
    agent, _ = _tidy(site)
    result = CliRunner().invoke(cli, ["plan", agent])
    assert result.exit_code == 2
    assert "Missing option '--table'" in result.output
    unknown = CliRunner().invoke(cli, ["run", f"no_{agent}"])
    assert unknown.exit_code == 2
    assert f"Error: Unknown agent 'no_{agent}'; agents are: backup, " in unknown.output


def test_a_plugin_tool_under_declaring_its_risk_is_refused_and_the_rest_loads(
    demo_db: Path, home: Path, site: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, tool = _tidy(site, risk="safe", sql="DELETE FROM {table}")
    config = load_config(home=home)
    catalog = commands.load_catalog(config)
    assert tool not in catalog.tools and "update_table_statistics" in catalog.tools
    (refused,) = catalog.refused
    assert f"{tool}.yaml: risk_level: tagged safe" in refused
    assert "was refused; its other tools loaded" in capsys.readouterr().err
    problems = [p["problem"] for p in commands.plugin_problems(config)]
    assert any(f"{tool}.yaml: risk_level" in p for p in problems)


def test_a_plugin_that_raises_at_import_is_named_and_breaks_nothing_else(
    demo_db: Path, home: Path, site: Callable[..., str]
) -> None:
    package = site({"agent.py": "1/0\n"}, agents={"broken": "PKG.agent:Agent"})
    result = CliRunner().invoke(cli, ["agents", "list"])
    assert result.exit_code == 0, result.output
    assert f"failed: broken ({package}): ZeroDivisionError" in result.stderr
    assert "maintenance (aishell)" in result.stdout
    assert get_agent("maintenance").name == "maintenance"
    assert "broken" not in agent_names()
    assert CliRunner().invoke(cli, ["run", "maintenance", "--help"]).exit_code == 0
    assert CliRunner().invoke(cli, ["--help"]).exit_code == 0
    problems = commands.plugin_problems(load_config(home=home))
    assert [p["problem"] for p in problems] == [
        f"plugin 'broken' (aishell.agents) of package {package} was skipped: "
        "ZeroDivisionError: division by zero"
    ]
    assert f"pip uninstall {package}" in problems[0]["fix"]


class _Stats(BaseAgent):
    spec = AgentSpec(
        name="stats_script",
        description="Refresh statistics of one table.",
        options=(
            Option("table", "text", "Table.", required=True),
            Option("rows", "integer", "A bounded count.", minimum=1, maximum=10, default=5),
            Option("mode", "choice", "A choice.", choices=("a", "b"), default="a"),
        ),
        tools=(),  # declares none: its plan is refused
    )

    def plan_steps(self, job: dict[str, Any], ctx: TaskContext) -> list[Step]:
        return [Step(step_id(0), "update_table_statistics", {"table": job["table"]}, "Stats")]


@pytest.fixture
def registered() -> Iterator[None]:
    reload_agents()
    yield
    reload_agents()


def test_a_registered_agent_plans_only_the_tools_it_declares(
    demo_db: Path, home: Path, registered: None
) -> None:
    register_agent(_Stats())
    config = load_config(home=home)
    with pytest.raises(PlanError, match="does not declare"):
        commands.plan_job(config, "stats_script", {"table": "app_logs"})


def test_the_base_agent_checks_a_job_against_its_declared_options(registered: None) -> None:
    agent = _Stats()
    config: Any = None  # the base agent reads no config
    assert agent.normalize_job({"table": "t"}, config) == {"table": "t", "rows": 5, "mode": "a"}
    for job, message in [
        ({}, "needs table"),
        ({"table": "t", "colour": 1}, "no key 'colour'"),
        ({"table": "t", "rows": 11}, "--rows: 11 is not a whole number from 1 to 10"),
        ({"table": "t", "rows": 2.5}, "not a whole number"),
        ({"table": "t", "mode": "c"}, "not one of: a, b"),
    ]:
        with pytest.raises(UsageError, match=message):
            agent.normalize_job(job, config)


def test_an_agent_whose_job_option_is_named_as_a_run_option_is_refused(
    registered: None,
) -> None:
    class Clash(BaseAgent):
        spec = AgentSpec(
            name="clash", description="x", options=(Option("target", "text", "Clashes."),)
        )

    with pytest.raises(UsageError, match="job option target is named as an option of the run"):
        register_agent(Clash())
    with pytest.raises(UsageError, match="already"):
        register_agent(get_agent("maintenance"))


def test_aishell_s_own_agents_are_its_package_s_entry_points() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    section = pyproject.split('[project.entry-points."aishell.agents"]\n', 1)[1].split("\n\n")[0]
    declared = dict(line.replace('"', "").split(" = ") for line in section.splitlines())
    assert declared == {ep.name: ep.value for ep in BUILT_IN}
    listed = commands.list_agents()["agents"]
    assert {a["name"]: a["package"] for a in listed} == {
        "backup": "aishell",
        "log_cleanup": "aishell",
        "maintenance": "aishell",
    }


def test_a_run_result_is_a_task_result() -> None:
    result = RunResult("r", "completed", "maintenance", "demo", False, "h", "strict", [])
    assert isinstance(result, TaskResult)


def test_no_module_of_aishell_imports_the_public_api() -> None:
    """The API is for code outside aishell: inside, each name has its own door."""
    inside = [
        p
        for p in (REPO / "aishell").rglob("*.py")
        if "aishell.agents.api" in p.read_text() and p.name != "api.py"
    ]
    assert inside == []


HANDLERS = """
from aishell.agents.api import Handler

reads = Handler(sql_templates=("SELECT 1",), run_fn=lambda params, ctx: {})
deletes = Handler(sql_templates=("DELETE FROM {table}",), run_fn=lambda params, ctx: {})
"""


def test_a_plugin_tool_names_its_handler_by_dotted_path_and_is_held_to_its_sql(
    home: Path, site: Callable[..., str]
) -> None:
    unique = uuid.uuid4().hex[:8]
    files = {"__init__.py": "", "handlers.py": HANDLERS}
    for name, handler in (("reads", "reads"), ("deletes", "deletes")):
        tool = TOOL.format(tool=f"{name}_{unique}", risk="safe", sql="x")
        files[f"tools/{name}_{unique}.yaml"] = tool.replace(
            "    sql: x\n    result: one\n", f"    handler: PKG.handlers:{handler}\n"
        )
    package = site({**files, "__init__.py": "tools = 'tools'\n"}, tools={"tidy": "PKG:tools"})
    catalog = commands.load_catalog(load_config(home=home))
    assert f"reads_{unique}" in catalog.tools
    (refused,) = catalog.refused
    assert f"deletes_{unique}.yaml: risk_level: tagged safe" in refused
    assert f"the handler {package}.handlers:deletes" in refused or "DELETE" in refused
