"""What an installed package may not do to aishell: a tool of its own may not join the
built-in agents' plans (`planned:`); an agent whose class, spec or job options are
malformed is skipped by name and every other command goes on; its job options may not
take the names or flags of the commands that run it; what its planning code raises or
returns amiss is named as its own failure; and the command reference is the same
whatever is installed. Each package is made in a site folder on sys.path with its
dist-info, as pip leaves one."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from aishell import commands
from aishell.agents.available import TAKEN_FLAGS, TAKEN_NAMES
from aishell.cli import cli
from aishell.cli.doc import render
from aishell.config.models import load_config
from aishell.config.resources import bundled_catalog_dir
from tests.agents.conftest import Install, kept_rows
from tests.conftest import REPO

# A package's __init__.py naming its folder of tools (the `aishell.tools` entry point).
TOOLS = "tools = 'tools'\n"


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def _failed(package: str) -> list[str]:
    """What `aishell agents list --json` says of this package's skipped plugins."""
    result = _invoke(["agents", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    return [f"{f['name']}: {f['error']}" for f in listed["failed"] if f["package"] == package]


# -- a package's tool may not join the built-in agents' plans ------------------------


def _deleting_tool(name: str) -> dict[str, Any]:
    """A high-risk tool that deletes every row of its table, asking to be planned after
    each table's statistics in quick and standard maintenance."""
    return {
        "name": name,
        "description": "Delete every row of one table.",
        "category": "cleanup",
        "risk_level": "high",
        "required_capabilities": ["database_read", "database_write"],
        "max_execution_time": 60,
        "idempotent": False,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "required": ["table"],
            "properties": {
                "table": {"type": "string", "x-identifier": "table", "description": "Table."}
            },
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"table": "app_logs"}}],
        "locks": {
            "postgresql": [{"lock": "ROW EXCLUSIVE", "object": "table", "held": "while deleting"}]
        },
        "implementations": {"postgresql": {"sql": "DELETE FROM {table}"}},
        "planned": {
            "maintenance": {
                "after": "update_table_statistics",
                "types": ["quick", "standard"],
                "rationale": "Tidy {table}",
            }
        },
    }


def test_a_package_s_tool_asking_to_join_maintenance_is_refused_and_deletes_nothing(
    home: Path, pg_rows: str, site: Install
) -> None:
    tool = f"tidy_{uuid.uuid4().hex[:8]}"
    files = {"__init__.py": TOOLS, "tools/tool.yaml": yaml.safe_dump(_deleting_tool(tool))}
    site(files, tools={"tidy": "PKG:tools"})

    planned = _invoke(["plan", "maintenance", "--type", "quick", "--json"])
    assert planned.exit_code == 0, planned.output
    assert tool not in {s["tool"] for s in json.loads(planned.stdout)["steps"]}
    assert f"{tool}" not in planned.stdout
    assert "tool.yaml: planned: a tool from an installed package may not ask" in planned.stderr

    ran = _invoke(["run", "maintenance", "--type", "quick", "--yes", "--json"])
    assert ran.exit_code == 0, ran.output
    assert tool not in {s["tool"] for s in json.loads(ran.stdout)["steps"]}
    assert kept_rows(pg_rows) == 50

    problems = [p["problem"] for p in commands.plugin_problems(load_config(home=home))]
    assert any("tool.yaml: planned: a tool from an installed package" in p for p in problems)


def test_a_site_tool_may_join_maintenance_and_is_named_as_joining(home: Path, pg_rows: str) -> None:
    folder = home / "site_tools"
    folder.mkdir()
    tool = _deleting_tool("site_tidy")
    tool["planned"]["maintenance"]["types"] = ["standard"]
    (folder / "site_tidy.yaml").write_text(yaml.safe_dump(tool))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(data))

    planned = _invoke(["plan", "maintenance", "--type", "standard", "--json"])
    assert planned.exit_code == 0, planned.output
    assert "site_tidy" in {s["tool"] for s in json.loads(planned.stdout)["steps"]}
    catalog = commands.load_catalog(load_config(home=home))
    assert catalog.joining_plans(bundled_catalog_dir()) == [
        f"tool site_tidy ({folder / 'site_tidy.yaml'}) joins the maintenance agent's plans "
        "after update_table_statistics in standard runs"
    ]
    # The doctor says so: a change to nightly maintenance is never silent.
    report = json.loads(_invoke(["doctor", "--json"]).stdout)
    assert report["joining_plans"] == catalog.joining_plans(bundled_catalog_dir())
    shown = _invoke(["doctor"]).output
    assert "tool site_tidy (" in shown and "joins the maintenance agent's plans" in shown
    assert kept_rows(pg_rows) == 50


# -- a malformed agent is skipped by name --------------------------------------------

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, step_id


class Made(BaseAgent):
    spec = AgentSpec(
        name="NAME",
        description="Refresh one table's statistics.",
        options=OPTIONS,
        tools=("update_table_statistics",),
    )

    def plan_steps(self, job, ctx):
        return PLANNED
"""
STEP = '[Step(step_id(0), "update_table_statistics", {"table": "users"}, "Statistics")]'


def _agent(
    install: Install, options: str = "()", planned: str = STEP, extra: str = ""
) -> tuple[str, str]:
    """A package whose one agent declares these options and plans this; (agent, package)."""
    name = f"made_{uuid.uuid4().hex[:8]}"
    body = AGENT.replace("NAME", name).replace("OPTIONS", options).replace("PLANNED", planned)
    package = install({"agent.py": body + textwrap.dedent(extra)}, agents={name: "PKG.agent:Made"})
    return name, package


def _commands_work(package: str) -> None:
    """The built-in agent runs, and the agents' listing and the doctor name the package."""
    ran = _invoke(["run", "maintenance", "--type", "quick", "--dry-run"])
    assert ran.exit_code == 0, ran.output
    assert "internal error" not in ran.output
    listed = _invoke(["agents", "list"])
    assert listed.exit_code == 0 and "maintenance (aishell)" in listed.stdout
    doctor = _invoke(["doctor", "--json"])
    assert "internal error" not in doctor.output
    found = [p["problem"] for p in json.loads(doctor.stdout)["problems"]]
    assert any(f"of package {package} was skipped" in p for p in found)


@pytest.mark.parametrize(
    ("options", "extra", "said"),
    [
        ('(Option("x", "text", "h"))', "", "its spec's options must be a tuple of Option"),
        ('("x",)', "", "its spec's options must be a tuple of Option"),
        (
            "()",
            """
            class Made(Made):
                @property
                def spec(self):
                    raise RuntimeError("spec needs a config file")
            """,
            "RuntimeError: spec needs a config file",
        ),
    ],
)
def test_a_malformed_agent_is_skipped_by_name_and_every_command_goes_on(
    demo_db: Path, site: Install, options: str, extra: str, said: str
) -> None:
    name, package = _agent(site, options=options, extra=extra)
    assert any(f.startswith(f"{name}: ") and said in f for f in _failed(package))
    _commands_work(package)


def test_a_spec_whose_tools_are_not_names_is_skipped(demo_db: Path, site: Install) -> None:
    name, package = _agent(
        site,
        extra="Made.spec = Made.spec.__class__(name=Made.spec.name, "
        "description='x', tools='update_table_statistics')\n",
    )
    assert _failed(package) == [f"{name}: its spec's tools must be a tuple of tool names"]


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ('Option("x", "bogus", "h")', "has kind 'bogus'; kinds are: number, integer"),
        ('Option("x", "choice", "h")', "is a choice: its choices must be a non-empty tuple"),
        (
            'Option("x", "choice", "h", choices=("a", "b"), default="c")',
            "has the default 'c', which is not one of: a, b",
        ),
        (
            'Option("x", "integer", "h", minimum=1, maximum=5, default=9)',
            "has the default 9, which is not a whole number from 1 to 5",
        ),
        ('Option("x", "integer", "h", default=2.5)', "has the default 2.5, which is not a whole"),
        ('Option("x", "text", "h", required=True, default="a")', "is required and has a default"),
        ('Option("x", "integer", "h", minimum=5, maximum=1)', "has a minimum above its maximum"),
        ('Option("x", "text", "h", flag="--x/--no-x")', "has the flag '--x/--no-x': only a flag"),
        ('Option("x", "text", "h", flag="x")', "has the flag 'x'; a flag is -x or --words"),
    ],
)
def test_a_job_option_that_cannot_work_is_refused_at_load(
    demo_db: Path, site: Install, option: str, said: str
) -> None:
    name, package = _agent(site, options=f"({option},)")
    (failed,) = _failed(package)
    assert failed.startswith(f"{name}: job option 'x' {said}"), failed
    assert _invoke(["run", "maintenance", "--type", "quick", "--dry-run"]).exit_code == 0


def test_job_options_repeating_a_key_or_flag_are_refused(demo_db: Path, site: Install) -> None:
    twice = 'Option("x", "text", "h"), Option("x", "text", "again")'
    name, package = _agent(site, options=f"({twice},)")
    assert _failed(package) == [f"{name}: its job options repeat the key x"]
    flags = 'Option("x", "text", "h", flag="--same"), Option("y", "text", "h", flag="--same")'
    name, package = _agent(site, options=f"({flags},)")
    assert _failed(package) == [f"{name}: its job options repeat the name same"]


# -- a job option may not take what the commands running it take ---------------------


@pytest.mark.parametrize(
    ("option", "clash"),
    [
        ('Option("wait", "flag", "h", default=False)', "wait"),
        ('Option("wait_seconds", "integer", "h")', "wait_seconds"),
        ('Option("targets", "text", "h")', "targets"),
        ('Option("all_targets", "flag", "h", default=False)', "all_targets"),
        ('Option("selector", "text", "h")', "selector"),
        ('Option("yolo", "flag", "h", default=False, flag="-y")', "-y"),
        ('Option("fast", "flag", "h", default=True, flag="--fast/--dry-run")', "--dry-run"),
        ('Option("pace", "text", "h", flag="-h")', "-h"),
        ('Option("when", "text", "h", flag="--cron")', "--cron"),
    ],
)
def test_a_job_option_named_or_typed_as_the_run_s_own_is_refused(
    demo_db: Path, site: Install, option: str, clash: str
) -> None:
    name, package = _agent(site, options=f"({option},)")
    (failed,) = _failed(package)
    assert failed.startswith(f"{name}: job option "), failed
    assert "is named as an option of the run itself" in failed and clash in failed, failed


def test_what_the_commands_take_is_what_a_job_option_may_not(site: Install) -> None:
    """The names and flags refused are every parameter of the commands that take a
    declared agent's job, made for an agent that declares none."""
    from aishell.cli import fleet_jobs, plans, run_jobs, schedules

    name, _ = _agent(site)
    made = [
        run_jobs.declared_run(name),
        plans.declared_plan(name),
        fleet_jobs.declared_fleet_run(name),
        schedules.schedule_add,
    ]
    names = {p.name for c in made for p in c.params}
    flags = {f for c in made for p in c.params for f in (*p.opts, *p.secondary_opts)}
    flags -= {"name", "words"}  # schedule add's arguments: names, not flags
    flags |= set(cli.context_settings["help_option_names"])
    assert names <= TAKEN_NAMES, names - TAKEN_NAMES
    assert flags <= TAKEN_FLAGS, flags - TAKEN_FLAGS


# -- what a plugin's planning code raises or returns is its own failure -------------------


@pytest.mark.parametrize(
    ("planned", "extra", "said"),
    [
        ('boom("plan")', "", "failed to plan: RuntimeError: boom in plan"),
        ("None", "", "returned NoneType from plan_steps, not a list of Step"),
        ('[{"tool": "update_table_statistics"}]', "", "returned list of dict from plan_steps"),
        (
            STEP,
            """
            class Made(Made):
                def check_job(self, job, conn):
                    boom("check")
            """,
            "failed to check its job on the target: RuntimeError: boom in check",
        ),
        (
            STEP,
            """
            class Made(Made):
                def normalize_job(self, job, config):
                    return None
            """,
            "returned NoneType from normalize_job, not the job as a dict",
        ),
    ],
)
def test_a_plugin_s_planning_failure_is_named_as_its_own(
    demo_db: Path, site: Install, planned: str, extra: str, said: str
) -> None:
    boom = 'def boom(what):\n    raise RuntimeError(f"boom in {what}")\n'
    name, package = _agent(site, planned=planned, extra=boom + textwrap.dedent(extra))
    for args in (["plan", name], ["run", name, "--dry-run"]):
        result = _invoke(args)
        assert result.exit_code == 2, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line == f"Error: agent {name} (package {package}) {said}" or (
            line.startswith(f"Error: agent {name} (package {package}) {said}")
        ), line


# -- the command reference is aishell's own -------------------------------------------


def test_the_command_reference_leaves_installed_agents_out(site: Install) -> None:
    name, _ = _agent(site)
    assert name in _invoke(["run", "--help"]).output
    rendered = render()
    assert name not in rendered
    assert rendered == (REPO / "docs" / "cli.md").read_text()


# -- a handler named the wrong way says the right way ---------------------------------

HANDLERS = """
from aishell.agents.api import Handler


def counts(params, ctx):
    return {}


reads = Handler(sql_templates=("SELECT 1",), run_fn=counts)
"""


@pytest.mark.parametrize(
    ("handler", "said"),
    [
        ("PKG.handlers.reads", "a package's own handler is named 'package.module:name'"),
        ("PKG.handlers:counts", "PKG.handlers.counts is a function, not a Handler; make the"),
    ],
)
def test_a_handler_named_the_wrong_way_says_the_right_way(
    home: Path, site: Install, handler: str, said: str
) -> None:
    from tests.registry.test_registry import tool

    data = tool(name=f"h_{uuid.uuid4().hex[:8]}", implementations={"sqlite": {"handler": handler}})
    files = {"__init__.py": TOOLS, "handlers.py": HANDLERS, "tools/tool.yaml": yaml.safe_dump(data)}
    package = site(files, tools={"h": "PKG:tools"})
    catalog = commands.load_catalog(load_config(home=home))
    (refused,) = catalog.refused
    assert said.replace("PKG", package) in refused, refused


# -- aishell's own agents do not plan a package's tools ----------------------------------


def test_aishell_s_agents_are_never_offered_nor_given_a_package_s_tool(
    home: Path, pg_rows: str, site: Install, edit_config: Any
) -> None:
    """A package's tools are for its own agents, judged at their safety level: a model
    drafting for maintenance is not offered one, and a draft naming one is refused."""
    from tests.fake_ollama import Script, fake_ollama

    tool = f"tidy_{uuid.uuid4().hex[:8]}"
    unplanned = {k: v for k, v in _deleting_tool(tool).items() if k != "planned"}
    files = {"__init__.py": TOOLS, "tools/tool.yaml": yaml.safe_dump(unplanned)}
    site(files, tools={"tidy": "PKG:tools"})
    step = {"tool": tool, "params": {"table": "kept_rows"}, "rationale": "as asked"}
    script = Script(answers=[{"agent": "maintenance", "summary": "tidy", "steps": [step]}])
    with fake_ollama(script) as host:
        llm = {"host": host, "model": "planner-test", "tries": 1, "retry_backoff_seconds": 0.01}
        edit_config({"planner": {"llm": llm}})
        asked = _invoke(["ask", "tidy kept_rows", "--yes", "--non-interactive", "--json"])
    assert asked.exit_code != 0, asked.output
    offered = json.loads(script.chats[0]["messages"][1]["content"])["AGENTS"]
    assert all(tool not in agent["tools"] for agent in offered.values())
    assert "count_table_rows" in offered["maintenance"]["tools"]
    assert kept_rows(pg_rows) == 50
