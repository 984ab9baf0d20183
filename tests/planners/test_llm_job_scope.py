"""A model's draft of a job that names its tables works on those tables alone, however
it names them: a step that names none (the tools then work on every table), and a
table given as a ${...} reference to a step that read every table, are rejected with
the reason, and the rules' plan runs; a reference to a step given only the job's
tables runs as drafted. Against a local server speaking the Ollama API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.agents.test_update_stats_honoured import _pg_counts
from tests.fake_ollama import Script
from tests.helpers import query, run_sql, use_target
from tests.planners.conftest import planner_settings

TRIES = 2
EVERY = "${step_0.output.checked_tables}"


def _step(tool: str, params: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"tool": tool, "params": params, "rationale": f"{tool} as asked", **more}


def _answer(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"summary": "as asked", "steps": list(steps)}


def _analyzed(path: Path) -> set[str]:
    """The tables SQLite holds statistics of."""
    if not query(path, "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"):
        return set()
    return {row[0] for row in query(path, "SELECT DISTINCT tbl FROM sqlite_stat1")}


def _drafted(config: Config, run_id: str) -> dict[str, Any]:
    with StateStore(config.state_url) as store:
        return dict(store.get_plan(run_id)["drafted_by"])


# Each a draft that would analyze every table of the target, and what it is told.
OUTSIDE = [
    pytest.param(
        [
            _step("check_table_corruption", {}),
            _step("update_table_statistics", {"tables": EVERY}),
        ],
        [
            "step_0 (check_table_corruption): names no table, so it works on every table of "
            "the target; the job names only: users; give tables",
            f"step_1 (update_table_statistics): {EVERY} may name tables the job does not",
        ],
        id="a list of every table checked",
    ),
    pytest.param(
        [
            _step("check_table_corruption", {"tables": []}),
            _step("update_table_statistics", {"tables": [EVERY.replace("}", "[2]}")]}),
        ],
        [
            "step_0 (check_table_corruption): names no table",
            "step_1 (update_table_statistics): ${step_0.output.checked_tables[2]} may name",
        ],
        id="an item of an empty list's check",
    ),
    pytest.param(
        [
            _step("check_table_corruption", {"tables": ["users"]}),
            _step("check_table_corruption", {}),
            _step("update_table_statistics", {"tables": "${step_1.output.checked_tables}"}),
        ],
        ["step_2 (update_table_statistics): ${step_1.output.checked_tables} may name"],
        id="from the second of two checks",
    ),
]


@pytest.mark.parametrize(("steps", "said"), OUTSIDE)
def test_a_draft_reaching_past_the_job_s_tables_is_rejected_and_never_runs(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script, steps: list, said: list
) -> None:
    """Through the command line: the rules' plan runs instead, the model told why, and no
    table but users gets statistics."""
    edit_config(planner_settings(ollama_host, TRIES))
    assert _analyzed(demo_db) == set()
    script.answers = [_answer(*steps)] * TRIES
    shown = CliRunner().invoke(
        cli,
        ["run", "maintenance", "--type", "quick", "--tables", "users", "--planner", "llm"],
    )
    assert shown.exit_code == 0, shown.output
    assert "rule-based plan instead" in shown.output
    told = script.chats[1]["messages"][-1]["content"]
    for reason in said:
        assert reason in told, told
    assert _analyzed(demo_db) == {"users"}


def test_a_reference_to_a_step_given_the_job_s_tables_runs_as_drafted(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    config = edit_config(planner_settings(ollama_host, TRIES))
    script.answers = [
        _answer(
            _step("check_table_corruption", {"tables": ["users"]}),
            _step("update_table_statistics", {"tables": EVERY}),
        )
    ]
    job = {"type": "quick", "tables": ["users"]}
    result = commands.run_job(config, "maintenance", job, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    drafted = _drafted(config, result.run_id)
    assert "fallback_from" not in drafted and drafted["drafts"] == 1, drafted
    assert [s.tool for s in result.steps] == ["check_table_corruption", "update_table_statistics"]
    assert _analyzed(demo_db) == {"users"}


def test_on_postgresql_a_table_from_a_check_of_every_table_is_never_analyzed(
    edit_config: Any, home: Path, pg_url: str, ollama_host: str, script: Script
) -> None:
    run_sql(
        pg_url,
        "CREATE TABLE orders (id int PRIMARY KEY, total int)",
        "CREATE TABLE secrets (id int PRIMARY KEY, body text)",
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 500) g",
        "INSERT INTO secrets SELECT g, 'x' FROM generate_series(1, 500) g",
    )
    use_target(home, pg_url)
    config = edit_config(planner_settings(ollama_host, TRIES))
    script.answers = [
        _answer(
            _step("check_table_corruption", {}),
            _step("update_table_statistics", {"tables": EVERY}),
        )
    ] * TRIES
    before = _pg_counts(pg_url, "secrets")
    job = {"type": "quick", "tables": ["orders"]}
    result = commands.run_job(config, "maintenance", job, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    rejected = " ".join(_drafted(config, result.run_id)["rejected"][0])
    assert "step_0 (check_table_corruption): names no table" in rejected
    assert "the job names only: orders" in rejected
    assert _pg_counts(pg_url, "secrets") == before
    assert _pg_counts(pg_url, "orders")[1] > 0
