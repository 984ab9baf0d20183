"""An option declared with `identifier="table"` names a table wherever its value goes:
`aishell schedule add` refuses, in one line and before anything is stored, a value no
table of the target's engine can be named (a NUL; past PostgreSQL's 63 bytes or MySQL's
64 characters), though the option feeds a tool param of another name. An identifier
that is not a kind of database object, or on an option that is not text, is refused
when the agent loads."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from aishell import commands
from aishell.agents.available import load_failures
from aishell.config.models import load_config
from aishell.errors import UsageError
from tests.agents.test_schedule_plugin_job import _add, _refused
from tests.helpers import use_target

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class SourceAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Refresh one table's statistics.",
        options=(Option("source", {kind}, "Table to refresh.", required=True, {identifier}),),
        tools=("update_table_statistics",),
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        table = job["source"]
        return [Step(step_id(0), "update_table_statistics", {{"table": table}}, "Stats")]
"""


def _agent(site: Callable[..., str], kind: str = "text", identifier: str = "table") -> str:
    agent = f"source_{uuid.uuid4().hex[:8]}"
    body = AGENT.format(agent=agent, kind=repr(kind), identifier=f"identifier={identifier!r}")
    site({"agent.py": body}, agents={agent: "PKG.agent:SourceAgent"})
    return agent


def test_a_name_no_table_can_have_is_refused_for_an_option_of_another_name(
    home: Path, server_url: str, site: Callable[..., str]
) -> None:
    config = use_target(home, server_url)
    agent = _agent(site)
    postgresql = server_url.startswith("postgresql")
    longest, limit = ("é" * 31 + "x", "63") if postgresql else ("é" * 64, "64")
    engine = create_engine(server_url)
    with engine.begin() as conn:  # the server's own longest name: one more is not kept
        quoted = f'"{longest}"' if postgresql else f"`{longest}`"
        conn.execute(text(f"CREATE TABLE {quoted} (id int)"))
    assert longest in inspect(engine).get_table_names()
    engine.dispose()

    over = _refused(_add("over", agent, "--source", longest + "x"))
    assert over.startswith(f"Error: --source: '{longest}x' is ") and f"at most {limit}" in over
    assert over.endswith("so no table has it")
    nul = _refused(_add("nul", agent, "--source", "app\x00logs"))
    assert nul == "Error: --source: 'app\\x00logs' holds a NUL character, so no table has it"
    with pytest.raises(UsageError, match="^--source: 'a\\\\x00b' holds a NUL character"):
        commands.add_schedule(
            config, "api", "@daily", "UTC", [], agent, {"source": "a\x00b"}, None, {}
        )
    accepted = _add("longest", agent, "--source", longest)
    assert accepted.exit_code == 0, accepted.output
    assert [s["name"] for s in commands.list_schedules(load_config(home=home))] == ["longest"]


@pytest.mark.parametrize(
    ("kind", "identifier", "said"),
    [
        ("text", "view", "has identifier 'view'; it is one of: table, column, index"),
        ("integer", "table", "names a table (identifier) but is not of kind text"),
    ],
)
def test_an_identifier_that_cannot_work_is_refused_at_load(
    home: Path, site: Callable[..., str], kind: str, identifier: str, said: str
) -> None:
    agent = _agent(site, kind, identifier)
    (failure,) = [f.error for f in load_failures() if f.name == agent]
    assert failure == f"job option 'source' {said}", failure
