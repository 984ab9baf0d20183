"""A drafted step whose one-of param (`table` or `tables`) is given whole as a
reference to an earlier step's output: its value is not known before that step runs,
so its preview says what it waits for, as a required param's does, instead of failing
on the param it lacks. Drafts from a local server speaking the Ollama API, on the demo
database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.commands.previews import PlanPreview
from aishell.config.models import Config
from tests.fake_ollama import Script
from tests.planners.test_llm_planner import _answer, _step

FIRST = _step("update_table_statistics", {"tables": ["users"]})


@pytest.mark.parametrize(
    ("first", "reference"),
    [
        (FIRST, "${step_0.output.tables_done}"),
        (_step("count_table_rows", {"table": "users"}), "${step_0.output.how}"),
        (FIRST, "${step_0.output.tables[0].table}"),
    ],
)
def test_a_one_of_param_given_as_a_reference_is_previewed_as_waiting_for_it(
    llm_config: Config, demo_db: Path, script: Script, first: dict[str, Any], reference: str
) -> None:
    then = _step("update_table_statistics", {"tables": reference})
    script.answers = [_answer("maintenance", first, then)]
    shown: list[PlanPreview] = []
    commands.ask(llm_config, "x", review=lambda p: shown.append(p) or True, dry_run=True)
    step = shown[0].steps[1]
    assert f"-- tables: <{reference[2:-1]}: known once step_0 runs>" in step.sql, step.sql
    assert step.params == {"tables": reference}


def test_ask_previews_and_dry_runs_it_through_the_cli(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    then = _step("update_table_statistics", {"tables": "${step_0.output.tables_done}"})
    script.answers = [_answer("maintenance", FIRST, then)]
    result = CliRunner().invoke(cli, ["ask", "x", "--target", "demo", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["status"] for s in data["steps"]] == ["previewed", "previewed"]


def test_a_drafted_job_plan_with_one_is_saved(
    llm_config: Config, demo_db: Path, script: Script, tmp_path: Path
) -> None:
    then = _step("update_table_statistics", {"tables": "${step_0.output.tables_done}"})
    script.answers = [_answer(None, FIRST, then)]
    out = tmp_path / "drafted.json"
    args = ["plan", "maintenance", "--type", "quick", "--tables", "users", "--planner", "llm"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "known once step_0 runs" in result.output
    saved: dict[str, Any] = json.loads(out.read_text())
    assert saved["steps"][1]["params"] == {"tables": "${step_0.output.tables_done}"}
