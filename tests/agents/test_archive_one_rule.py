"""An archive a job names is read by one rule, whichever agent takes it: aishell's own
log cleanup and a package's agent with an option of kind `archive` refuse the same
values in the same one line (naming the flag, the value and what is wrong), from the
Python API, `schedule add` and the command line alike. Nothing runs, nothing is stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import UsageError
from tests.helpers import digest

AGENT = """
from aishell.agents.api import AgentSpec, BaseAgent, Option, Step, TaskContext, step_id


class KeepAgent(BaseAgent):
    spec = AgentSpec(
        name="{agent}",
        description="Refresh one table's statistics, keeping its rows somewhere.",
        options=(
            Option("table", "text", "Table to refresh.", required=True),
            Option("archive_to", "archive", "Keep its rows here: file:PATH or table:NAME."),
        ),
        tools=("update_table_statistics",),
    )

    def plan_steps(self, job, ctx: TaskContext) -> list[Step]:
        return [Step(step_id(0), "update_table_statistics", {{"table": job["table"]}}, "Stats")]
"""

# (the value, what is wrong with it)
REFUSED = [
    ("app_logs_old", "is not file:PATH or table:NAME"),
    ("", "is not file:PATH or table:NAME"),
    ("file:", "is not file:PATH or table:NAME"),
    ("FILE:old.jsonl", "is not file:PATH or table:NAME"),
    ("view:app_logs_old", "is not file:PATH or table:NAME"),
    ("file:old/..", "names a folder, not a file"),
    ("file:.", "names a folder, not a file"),
    ("file:old/", "names a folder, not a file"),
]


@pytest.mark.parametrize(("value", "wrong"), REFUSED)
def test_every_agent_refuses_an_archive_in_the_same_words(
    demo_db: Path, home: Path, site: Callable[..., str], value: str, wrong: str
) -> None:
    agent = f"keep_{uuid.uuid4().hex[:8]}"
    site({"agent.py": AGENT.format(agent=agent)}, agents={agent: "PKG.agent:KeepAgent"})
    config = load_config(home=home)
    before = digest(demo_db)
    said = f"--archive-to: {value!r} {wrong}"
    for name in ("log_cleanup", agent):
        job = {"table": "app_logs", "archive_to": value}
        for make in (commands.make_plan, commands.run_job):
            with pytest.raises(UsageError) as refused:
                make(config, name, dict(job))
            assert str(refused.value) == said, name
        with pytest.raises(UsageError) as refused:
            commands.add_schedule(config, f"s_{name}", "@daily", "UTC", [], name, job, None, {})
        assert str(refused.value) == said, name
    for words in (["log-cleanup"], [agent]):
        typed = CliRunner().invoke(
            cli,
            ["plan", *words, "--table", "app_logs", "--archive-to", value],
        )
        assert typed.exit_code == 2, typed.output
        (line,) = [x for x in typed.output.splitlines() if x.startswith("Error:")]
        assert line == f"Error: Invalid value for '--archive-to': {value!r} {wrong}", line
    assert commands.list_schedules(config) == [] and commands.list_runs(config) == []
    assert digest(demo_db) == before


def test_a_relative_archive_file_is_fixed_where_the_job_is_given(
    demo_db: Path,
    home: Path,
    site: Callable[..., str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A package's agent's `file:` archive given through the API or `schedule add` is
    made absolute in the folder it is given in, as the command line makes it: the plan
    (which a resume in another folder runs) and the stored schedule hold that path."""
    agent = f"keep_{uuid.uuid4().hex[:8]}"
    site({"agent.py": AGENT.format(agent=agent)}, agents={agent: "PKG.agent:KeepAgent"})
    config = load_config(home=home)
    given, elsewhere = tmp_path_factory.mktemp("given"), tmp_path_factory.mktemp("elsewhere")
    for relative, made in (
        ("file:old/rows.jsonl", given / "old" / "rows.jsonl"),
        ("file:rows.jsonl", given / "rows.jsonl"),
        ("file:./a/../rows.jsonl", given / "rows.jsonl"),
    ):
        monkeypatch.chdir(given)
        job = {"table": "app_logs", "archive_to": relative}
        plan = commands.make_plan(config, agent, dict(job))
        assert plan.job["archive_to"] == f"file:{made}", plan.job
        name = f"s_{uuid.uuid4().hex[:6]}"
        commands.add_schedule(config, name, "@daily", "UTC", [], agent, job, None, {})
        monkeypatch.chdir(elsewhere)
        stored = {s["name"]: s["job"] for s in commands.list_schedules(config)}[name]
        assert stored == {**job, "archive_to": f"file:{made}"}, stored
    kept = {"table": "app_logs", "archive_to": "table:rows"}
    assert commands.make_plan(config, agent, dict(kept)).job == kept
