"""A model's draft names its agent, and each agent's config sets its own constraints:
a drafted step is judged by the constraints of the agent it names and of every agent
that plans its tool, in the preview, in the run, and when a saved draft is applied or
its run resumed; a plan by an agent's rules keeps to its own agent's. Against a local
server speaking the Ollama API, on the demo database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.commands.previews import PlanPreview
from aishell.config.models import Config
from aishell.plan.model import Plan, Step
from tests.fake_ollama import Script
from tests.planners.conftest import one_try
from tests.planners.test_llm_planner import _answer, _step

OPTIMIZE = _step("optimize_table", {"table": "app_logs"})


def _not_now() -> dict[str, Any]:
    """A maintenance window that is closed now (and for hours either side)."""
    hour = (datetime.now(UTC).hour + 12) % 24
    return {"type": "maintenance_window", "allowed_hours": [hour], "timezone": "UTC"}


def _ask(config: Config, request: str, **how: Any) -> tuple[Any, list[PlanPreview]]:
    """The run of a request, and the preview its review was shown."""
    shown: list[PlanPreview] = []
    result = commands.ask(config, request, review=lambda p: shown.append(p) or True, **how)
    return result, shown


def test_a_draft_naming_another_agent_is_held_to_the_window_of_the_agent_of_its_tool(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    config = edit_config(one_try(ollama_host), maintenance={"safety_constraints": [_not_now()]})
    # The maintenance agent's own plan is held to its window; log_cleanup's to none.
    script.answers = [_answer("log_cleanup", OPTIMIZE)]
    result, [preview] = _ask(config, "compact app_logs")
    assert result.steps[0].status == "deferred", result.steps[0]
    assert "outside the maintenance window" in (result.steps[0].error or "")
    assert preview.plan.agent == "log_cleanup"


def test_a_draft_naming_another_agent_is_held_to_the_retention_floor_of_the_agent_of_its_tool(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    floor = {"type": "purge_limits", "min_retention_days": 800, "max_share": 0.5}
    config = edit_config(one_try(ollama_host), log_cleanup={"safety_constraints": [floor]})
    purge = {"table": "app_logs", "date_column": "created_at", "retention_days": 700}
    script.answers = [_answer("maintenance", _step("delete_old_records", purge))]
    result, [preview] = _ask(config, "purge app_logs", dry_run=True)
    said = "retention of 700 days is under 800: recent rows would be deleted"
    assert preview.steps[0].requires_approval and said in preview.steps[0].reasons
    assert said in result.steps[0].reasons


def test_a_saved_draft_is_held_to_them_when_applied_and_a_plan_by_the_rules_is_not(
    edit_config: Any, demo_db: Path
) -> None:
    config = edit_config(maintenance={"safety_constraints": [_not_now()]})
    step = Step("step_0", "optimize_table", {"table": "app_logs"})
    job = {"request": "compact app_logs", "tables": ["app_logs"]}
    drafted = Plan("log_cleanup", "demo", "sqlite", job, (step,), drafted_by={"planner": "llm"})
    held = commands.apply_plan(config, drafted)
    assert held.steps[0].status == "deferred", held.steps[0]
    # The same steps as log_cleanup's own: its constraints alone, as before.
    ruled = commands.apply_plan(config, Plan("log_cleanup", "demo", "sqlite", job, (step,)))
    assert ruled.status == "completed", ruled.error


def test_a_resumed_draft_is_held_to_them(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    strict = {"default_config": {"safety_level": "strict"}}
    config = edit_config(one_try(ollama_host), log_cleanup=strict)
    script.answers = [_answer("log_cleanup", OPTIMIZE)]
    waiting, _ = _ask(config, "compact app_logs now")
    assert waiting.status == "waiting_approval", waiting.error
    config = edit_config(maintenance={"safety_constraints": [_not_now()]})
    commands.decide_steps(config, waiting.run_id, "approved", reason="checked")
    resumed = commands.resume_run(config, waiting.run_id)
    assert resumed.steps[0].status == "deferred", resumed.steps[0]
