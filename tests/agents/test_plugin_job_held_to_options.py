"""A package's agent that writes its own `normalize_job` (not BaseAgent's) is still held
to the options it declares: what its normalize_job lets through or makes up (a value of
another kind, out of its bounds, not among its choices) is refused in one line naming
the option, before anything runs or is stored: the job's value as the user's mistake,
through `commands.run_job`, `make_plan` and `schedule add` alike; a value the agent made
up as the agent's failure, naming it and its package. A `file:` archive it keeps
relative is made absolute where the job is given."""

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
from aishell.errors import PlanError, UsageError
from tests.helpers import digest

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class LaxAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Refresh one table's statistics.",
        options=(
            Option("table", "text", "Table to refresh.", required=True),
            Option("rows", "integer", "Rows to look at.", minimum=1, maximum=100),
            Option("share", "number", "Share of the rows.", minimum=0, maximum=1),
            Option("mode", "choice", "How.", choices=("fast", "slow")),
            Option("again", "flag", "Refresh twice.", default=False),
            Option("keep", "archive", "Keep its rows here: file:PATH or table:NAME."),
        ),
        tools=("update_table_statistics",),
    )

    def normalize_job(self, job, config):
        # Its own check: whatever the job says, and a mode of its own where none is given.
        return {{"mode": "{made_up}", **job}}

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        return [Step(step_id(0), "update_table_statistics", {{"table": job["table"]}}, "Stats")]
"""

# (the job beside its table, the one line it is refused in)
REFUSED = [
    ({"rows": 0}, "--rows: 0 is not a whole number from 1 to 100"),
    ({"rows": 101}, "--rows: 101 is not a whole number from 1 to 100"),
    ({"rows": "5"}, "--rows: '5' is not a whole number from 1 to 100"),
    ({"rows": 2.5}, "--rows: 2.5 is not a whole number from 1 to 100"),
    ({"share": 1.5}, "--share: 1.5 is not a finite number from 0 to 1"),
    ({"share": True}, "--share: True is not a finite number from 0 to 1"),
    ({"mode": "wild"}, "--mode: 'wild' is not one of: fast, slow"),
    ({"again": "yes"}, "--again: 'yes' is not true or false"),
    ({"table": ""}, "--table: '' is not a non-empty text"),
    ({"keep": "rows_old"}, "--keep: 'rows_old' is not file:PATH or table:NAME"),
]


def _agent(site: Callable[..., str], made_up: str = "fast") -> tuple[str, str]:
    agent = f"lax_{uuid.uuid4().hex[:8]}"
    package = site(
        {"agent.py": AGENT.format(agent=agent, made_up=made_up)},
        agents={agent: "PKG.agent:LaxAgent"},
    )
    return agent, package


def _refused(config: Config, agent: str, job: dict[str, Any], error: type[Exception]) -> str:
    """The one line every way of giving the job is refused in (the same each time)."""
    said = set()
    for make in (commands.make_plan, commands.run_job):
        with pytest.raises(error) as refused:
            make(config, agent, dict(job))
        said.add(str(refused.value))
    with pytest.raises(error) as refused:
        commands.add_schedule(config, f"s_{agent}", "@daily", "UTC", [], agent, job, None, {})
    said.add(str(refused.value))
    (line,) = said
    assert "\n" not in line
    return line


@pytest.mark.parametrize(("given", "said"), REFUSED)
def test_a_value_its_own_normalize_job_lets_through_is_refused(
    demo_db: Path, home: Path, site: Callable[..., str], given: dict[str, Any], said: str
) -> None:
    agent, _ = _agent(site)
    config = load_config(home=home)
    before = digest(demo_db)
    assert _refused(config, agent, {"table": "app_logs", **given}, UsageError) == said
    assert commands.list_schedules(config) == [] and commands.list_runs(config) == []
    assert digest(demo_db) == before


def test_a_value_it_makes_up_is_its_own_failure(
    demo_db: Path, home: Path, site: Callable[..., str]
) -> None:
    agent, package = _agent(site, made_up="turbo")
    config = load_config(home=home)
    before = digest(demo_db)
    line = _refused(config, agent, {"table": "app_logs"}, PlanError)
    assert line == (
        f"agent {agent} (package {package}) returned from normalize_job mode 'turbo', "
        "which is not one of: fast, slow (--mode)"
    )
    typed = CliRunner().invoke(cli, ["plan", agent, "--table", "app_logs"])
    assert typed.exit_code == 2 and typed.stderr.strip().splitlines()[-1] == f"Error: {line}"
    assert commands.list_schedules(config) == [] and commands.list_runs(config) == []
    assert digest(demo_db) == before


def test_values_of_its_options_are_taken_and_a_file_archive_made_absolute(
    demo_db: Path,
    home: Path,
    site: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent, _ = _agent(site)
    config = load_config(home=home)
    monkeypatch.chdir(tmp_path)
    job = {"table": "app_logs", "rows": 100, "share": 0, "mode": "slow", "again": True}
    assert commands.make_plan(config, agent, dict(job)).job == job
    for keep, held in (
        ("file:old/rows.jsonl", f"file:{tmp_path / 'old' / 'rows.jsonl'}"),
        ("table:rows_old", "table:rows_old"),
    ):
        plan = commands.make_plan(config, agent, {"table": "app_logs", "keep": keep})
        assert plan.job == {"table": "app_logs", "mode": "fast", "keep": held}
