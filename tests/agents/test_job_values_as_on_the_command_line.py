"""A package's agent's job value that the command line refuses is refused the same way,
in one line naming its flag, however the job comes: typed, given to `commands.run_job`,
or to `commands.add_schedule`. A duration is at least a second and at most its maximum
(30 days without one) even where the option sets no bound; an archive is `file:PATH`
or `table:NAME`, not any text. Nothing runs and nothing is stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import UsageError
from tests.helpers import digest

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class WaitAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Refresh one table's statistics.",
        options=(
            Option("table", "text", "Table to refresh.", required=True),
            Option("pause", "duration", "Pause this long (90s, 30m)."),
            Option("dest", "archive", "Keep its rows here: file:PATH or table:NAME."),
        ),
        tools=("update_table_statistics",),
        privileges={{"sqlite": ("write access to the database file",)}},
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        table = job["table"]
        return [Step(step_id(0), "update_table_statistics", {{"table": table}}, "Statistics")]
"""

# (flag, as typed, as a job holds it, the start of the refusal in a job)
REFUSED = [
    ("--pause", "0.5", 0.5, "--pause: 0.5 is not a finite number from 1 to 2,592,000"),
    ("--pause", "31d", 31 * 86400, "--pause: 2678400 is not a finite number from 1 to 2,592,000"),
    ("--dest", "app_logs_old", "app_logs_old", "--dest: 'app_logs_old' is not file:PATH or "),
    ("--dest", "view:app_logs_old", "view:app_logs_old", "--dest: 'view:app_logs_old' is not "),
    ("--dest", "file:old/..", "file:old/..", "--dest: 'file:old/..' names a folder, not a file"),
]


def _agent(site: Callable[..., str]) -> str:
    agent = f"wait_{uuid.uuid4().hex[:8]}"
    site({"agent.py": AGENT.format(agent=agent)}, agents={agent: "PKG.agent:WaitAgent"})
    return agent


@pytest.mark.parametrize(("flag", "typed", "held", "said"), REFUSED)
def test_a_value_the_command_line_refuses_is_refused_from_the_api_and_a_schedule(
    demo_db: Path,
    home: Path,
    site: Callable[..., str],
    flag: str,
    typed: str,
    held: Any,
    said: str,
) -> None:
    agent = _agent(site)
    config: Config = load_config(home=home)
    before = digest(demo_db)
    typed_out = CliRunner().invoke(cli, ["plan", agent, "--table", "app_logs", flag, typed])
    assert typed_out.exit_code == 2, typed_out.output
    (line,) = [x for x in typed_out.output.splitlines() if x.startswith("Error:")]
    assert flag in line, line

    job = {"table": "app_logs", flag.lstrip("-"): held}
    for make in (commands.make_plan, commands.run_job):
        with pytest.raises(UsageError) as refused:
            make(config, agent, dict(job))
        assert str(refused.value).startswith(said) and "\n" not in str(refused.value)
    with pytest.raises(UsageError) as refused:
        commands.add_schedule(config, f"s_{agent}", "@daily", "UTC", [], agent, job, None, {})
    assert str(refused.value).startswith(said)
    assert commands.list_schedules(config) == [] and commands.list_runs(config) == []
    assert digest(demo_db) == before


def test_values_the_command_line_takes_are_taken_as_before(
    demo_db: Path,
    home: Path,
    site: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the command line does, a job's `file:` archive is made absolute where the job
    is given."""
    agent = _agent(site)
    config = load_config(home=home)
    monkeypatch.chdir(tmp_path)
    absolute = f"file:{tmp_path / 'old' / 'a.jsonl'}"
    for pause, dest, held in (
        (1, "table:app_logs_old", "table:app_logs_old"),
        (30 * 86400, "file:old/a.jsonl", absolute),
        (30 * 86400, absolute, absolute),
        (None, None, None),
    ):
        job = {"table": "app_logs", "pause": pause, "dest": dest}
        plan = commands.make_plan(config, agent, job)
        assert plan.job == {**job, "dest": held}, plan.job
    typed = ["plan", agent, "--table", "app_logs", "--pause", "1s", "--dest", "table:old"]
    assert CliRunner().invoke(cli, typed).exit_code == 0
