"""A plugin agent plans a parallel group through the public API (agents.api.Step's
parallel_group): `aishell plan` shows the group and `aishell run` runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell.agents.api import AgentSpec, BaseAgent, Step, TaskContext, register_agent, step_id
from aishell.agents.available import reload_agents
from aishell.cli import cli

TABLES = ("users", "products", "orders", "app_logs")


class _Counts(BaseAgent):
    spec = AgentSpec(
        name="count_all",
        description="Count the rows of four tables at once, then once more alone.",
        tools=("count_table_rows",),
    )

    def plan_steps(self, job: dict[str, Any], ctx: TaskContext) -> list[Step]:
        grouped = [
            Step(
                step_id(i),
                "count_table_rows",
                {"table": t},
                f"Rows of {t}",
                parallel_group="counts",
            )
            for i, t in enumerate(TABLES)
        ]
        last = Step(step_id(len(TABLES)), "count_table_rows", {"table": "users"}, "Again")
        return [*grouped, last]


@pytest.fixture
def registered() -> Iterator[None]:
    reload_agents()
    register_agent(_Counts())
    yield
    reload_agents()


def test_a_plugin_agent_s_group_is_shown_and_runs(
    demo_db: Path, home: Path, registered: None
) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["plan", "count_all"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert (
        "parallel group 'counts': step_0, step_1, step_2, step_3 run at the same time"
        in " ".join(shown.output.split())
    )
    ran = runner.invoke(cli, ["run", "count_all", "--yes", "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert [s["status"] for s in result["steps"]] == ["succeeded"] * 5
    assert result["steps"][2]["output"]["row_count"] > 0
