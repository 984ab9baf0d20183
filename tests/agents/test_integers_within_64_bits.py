"""An integer given through the Python API (a job of aishell's agents or of a package's,
a step's param of a package's tool) is held to the 64 bits SQLite and the servers hold,
as the command line holds it: refused in one line naming its flag or param before
anything runs, never sent to the driver to fail there."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.errors import AishellError, UsageError
from aishell.policy.approvers import PreApproved
from aishell.tool.params import validate
from tests.agents.conftest import Install, kept_rows
from tests.helpers import digest

BIG = 2**63  # one past the largest integer a bound parameter holds
MOST = "9,223,372,036,854,775,807"
PURGE = {"table": "app_logs", "retention_days": 30}


@pytest.mark.parametrize(
    ("agent", "job", "said"),
    [
        ("log_cleanup", {**PURGE, "max_rows": BIG}, f"--max-rows: {BIG} is not a whole number"),
        ("log_cleanup", {**PURGE, "max_rows": float(BIG)}, "--max-rows: 9.223372036854776e+18"),
        ("backup", {"cleanup": True, "keep_last": BIG}, f"--keep-last: {BIG} is not a whole"),
    ],
)
def test_a_job_s_integer_past_64_bits_is_refused_naming_its_flag(
    demo_db: Path, config: Config, agent: str, job: dict[str, Any], said: str
) -> None:
    """The command line refused --max-rows 9223372036854775808 naming the flag; the same
    job through the Python API was refused as a step's param, or not at all."""
    before = digest(demo_db)
    for make in (commands.make_plan, commands.run_job):
        with pytest.raises(UsageError) as refused:
            make(config, agent, dict(job))
        assert str(refused.value).startswith(said), refused.value
        assert str(refused.value).endswith(f" from 1 to {MOST}"), refused.value
    assert digest(demo_db) == before and commands.list_runs(config) == []


AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class PeekAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Read the first rows of kept_rows.",
        options=(Option("rows", "integer", "Rows to read (no bounds of its own)."),),
        tools=("{tool}",),
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        rows = job["rows"] if job["rows"] is not None else {made_up}
        return [Step(step_id(0), "{tool}", {{"table": "kept_rows", "n": rows}}, "Peek")]
"""


def _peek_tool(name: str) -> dict[str, Any]:
    """A package's tool whose integer param declares no bounds: bound as LIMIT :n."""
    return {
        "name": name,
        "description": "Read the first rows of one table.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 60,
        "idempotent": True,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "required": ["table", "n"],
            "properties": {
                "table": {"type": "string", "x-identifier": "table", "description": "Table."},
                "n": {"type": "integer", "description": "Rows."},
            },
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"table": "kept_rows", "n": 5}}],
        "locks": {"postgresql": [{"lock": "ACCESS SHARE", "object": "table", "held": "reading"}]},
        "implementations": {"postgresql": {"sql": "SELECT id FROM {table} ORDER BY id LIMIT :n"}},
    }


def _peek(site: Install, made_up: int = 5) -> str:
    agent, tool = f"peek_{uuid.uuid4().hex[:8]}", f"peek_rows_{uuid.uuid4().hex[:8]}"
    files = {
        "__init__.py": "tools = 'tools'\n",
        "agent.py": AGENT.format(agent=agent, tool=tool, made_up=made_up),
        "tools/tool.yaml": yaml.safe_dump(_peek_tool(tool)),
    }
    site(files, agents={agent: "PKG.agent:PeekAgent"}, tools={"peek": "PKG:tools"})
    return agent


def test_a_package_s_integer_option_without_bounds_is_held_to_64_bits(
    home: Path, pg_rows: str, site: Install
) -> None:
    agent = _peek(site)
    config = load_config(home=home)
    done = commands.run_job(config, agent, {"rows": 3}, approver=PreApproved())
    assert done.status == "completed", done.error
    for rows in (BIG, -BIG - 1):
        with pytest.raises(UsageError) as refused:
            commands.run_job(config, agent, {"rows": rows}, approver=PreApproved())
        assert str(refused.value) == (
            f"--rows: {rows} is not a whole number from -{MOST} to {MOST}"
        ), refused.value
    assert len(commands.list_runs(config)) == 1 and kept_rows(pg_rows) == 50


def test_a_step_s_integer_param_without_bounds_is_held_to_64_bits(
    home: Path, pg_rows: str, site: Install
) -> None:
    """The agent makes the value up itself: the tool's param, which declares no maximum,
    refuses it as the plan is checked, naming the param, before the driver sees it."""
    agent = _peek(site, made_up=BIG)
    config = load_config(home=home)
    with pytest.raises(AishellError) as refused:
        commands.run_job(config, agent, {}, approver=PreApproved())
    line = str(refused.value)
    assert f"n: {BIG} is above the maximum {BIG - 1}" in line and "\n" not in line, line
    assert kept_rows(pg_rows) == 50


def test_an_integer_param_without_bounds_of_its_own_takes_64_bits() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert validate({"n": BIG - 1}, schema) == [] and validate({"n": -BIG + 1}, schema) == []
    assert validate({"n": BIG}, schema) == [f"params.n: {BIG} is above the maximum {BIG - 1}"]
    assert validate({"n": -BIG}, schema) == [f"params.n: {-BIG} is below the minimum {-BIG + 1}"]
    # A schema's own bounds are said as written.
    bounded = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 10}}}
    assert validate({"n": 11}, bounded) == ["params.n: 11 is above the maximum 10"]
