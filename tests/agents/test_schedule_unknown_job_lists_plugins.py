"""`aishell schedule add NAME -- WORD`, WORD no job: the one line it is refused in names
every job `aishell run` takes, a package's agents beside aishell's own (as `aishell run`
and `aishell agents list` know them), so a mistyped package agent is found in it.

Before, the line named aishell's three built-in jobs alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Step, TaskContext, step_id


class TidyAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Refresh statistics.",
        options=(),
        tools=("update_table_statistics",),
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        return [Step(step_id(0), "update_table_statistics", {{}}, "Stats")]
"""


def test_an_unknown_job_names_the_packages_agents_too(
    demo_db: Path, home: Path, site: Callable[..., str]
) -> None:
    agent = f"tidy_{uuid.uuid4().hex[:8]}"
    site({"agent.py": AGENT.format(agent=agent)}, agents={agent: "PKG.agent:TidyAgent"})
    added = CliRunner().invoke(
        cli, ["schedule", "add", "nightly", "--cron", "@daily", "--", "tidyy"]
    )
    assert added.exit_code == 2, added.output
    (line,) = [line for line in added.output.splitlines() if "Unknown job" in line]
    assert line.endswith(f"jobs are: backup, log_cleanup, maintenance, {agent}"), line
    # The agent it names is one the schedule takes.
    added = CliRunner().invoke(cli, ["schedule", "add", "nightly", "--cron", "@daily", "--", agent])
    assert added.exit_code == 0, added.output
