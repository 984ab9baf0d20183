"""The tables and columns an installed agent's steps name are checked against the
target when it plans, as maintenance's are: `aishell plan` and `aishell run` of a job
naming a table or a column the target lacks end at once (exit 2, one line listing what
there is) with no run recorded, on every engine; a plan of names it has still plans."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.agents.conftest import Install
from tests.helpers import run_sql, use_target

AGENT = """
from pathlib import Path

from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, step_id


class Counts(BaseAgent):
    spec = AgentSpec(
        name="NAME",
        description="Count one column's values.",
        options=(
            Option("table", "text", "Table.", required=True),
            Option("column", "text", "Column.", required=True),
        ),
        tools=("TOOL",),
    )

    def plan_steps(self, job, ctx):
        params = {"table": job["table"], "column": job["column"]}
        return [Step(step_id(0), "TOOL", params, "Count")]


def tool_folder():
    return Path(__file__).parent / "tools"
"""
SQL = "SELECT count({column}) AS n FROM {table}"
TOOL = f"""
name: TOOL
description: Count one column's values.
category: analysis
risk_level: safe
required_capabilities: [database_read]
max_execution_time: 60
idempotent: true
params:
  type: object
  additionalProperties: false
  required: [table, column]
  properties:
    table: {{type: string, x-identifier: table, description: Table.}}
    column: {{type: string, x-identifier: column, description: Column.}}
returns:
  type: object
  properties:
    n: {{type: integer}}
examples:
  - params: {{table: app_logs, column: id}}
locks:
  postgresql: []
  mysql: []
  sqlite: []
implementations:
  postgresql: {{sql: "{SQL}", result: one}}
  mysql: {{sql: "{SQL}", result: one}}
  sqlite: {{sql: "{SQL}", result: one}}
"""


def _installed(site: Install) -> str:
    unique = uuid.uuid4().hex[:8]
    agent, tool = f"counts_{unique}", f"count_values_{unique}"
    files = {
        "agent.py": AGENT.replace("NAME", agent).replace("TOOL", tool),
        f"tools/{tool}.yaml": TOOL.replace("TOOL", tool),
    }
    site(files, agents={agent: "PKG.agent:Counts"}, tools={"t": "PKG.agent:tool_folder"})
    return agent


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def engine(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> str:
    """The default target `db` on this engine, holding a table `counted (id, level)`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'counted.db'}"
    else:
        url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")
    run_sql(url, "CREATE TABLE counted (id integer, level varchar(10))")
    use_target(home, url)
    return url


def _runs(home: Path) -> list[object]:
    listed = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.stdout)
    return list(found["runs"] if isinstance(found, dict) else found)


@pytest.mark.parametrize(
    ("table", "column", "said"),
    [
        ("nosuch", "level", "Table 'nosuch' not found in target 'db'; tables are: counted"),
        ("counted", "nosuch", "Table 'counted' has no column 'nosuch'; columns are: id, level"),
    ],
)
def test_a_name_the_target_lacks_ends_plan_and_run_before_any_run(
    engine: str, home: Path, site: Install, table: str, column: str, said: str
) -> None:
    agent = _installed(site)
    for command in (["plan"], ["run", "--yes"]):
        args = [*command[:1], agent, "--table", table, "--column", column, *command[1:]]
        ended = CliRunner().invoke(cli, args)
        assert ended.exit_code == 2, ended.output
        assert said in ended.output, ended.output
        assert "Traceback" not in ended.output
    assert _runs(home) == []
    planned = CliRunner().invoke(cli, ["plan", agent, "--table", "counted", "--column", "level"])
    assert planned.exit_code == 0, planned.output
