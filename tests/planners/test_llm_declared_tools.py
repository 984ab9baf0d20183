"""A model's draft for an agent that declares its tools is held to them before it is
accepted: a draft naming another tool goes back to the model, and is never cached (a
refused draft kept in the cache would refuse every later run of the same job)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.agents.api import (
    AgentSpec,
    BaseAgent,
    Option,
    Step,
    TaskContext,
    register_agent,
    step_id,
)
from aishell.agents.available import reload_agents
from aishell.config.models import Config
from tests.fake_ollama import Script, fake_ollama


class _Counter(BaseAgent):
    spec = AgentSpec(
        name="row_counter",
        description="Count one table's rows.",
        options=(Option("table", "text", "Table.", required=True),),
        tools=("count_table_rows",),
    )

    def plan_steps(self, job: dict[str, Any], ctx: TaskContext) -> list[Step]:
        return [Step(step_id(0), "count_table_rows", {"table": job["table"]}, "Count")]


@pytest.fixture
def counter() -> Iterator[None]:
    reload_agents()
    register_agent(_Counter())
    yield
    reload_agents()


def _answer(tool: str, params: dict[str, Any]) -> dict[str, Any]:
    step = {"tool": tool, "params": params, "rationale": "as asked"}
    return {"agent": "row_counter", "summary": "as asked", "steps": [step]}


UNDECLARED = _answer("update_table_statistics", {"table": "users"})
DECLARED = _answer("count_table_rows", {"table": "users"})


def _config(edit_config: Any, host: str, tries: int) -> Config:
    llm = {"host": host, "model": "planner-test", "tries": tries, "retry_backoff_seconds": 0.01}
    return edit_config({"planner": {"llm": llm}})


def _plan(config: Config) -> Any:
    return commands.plan_job(config, "row_counter", {"table": "users"}, planner="llm")


def test_a_draft_of_an_undeclared_tool_goes_back_to_the_model(
    edit_config: Any, demo_db: Path, counter: None
) -> None:
    script = Script(answers=[UNDECLARED, DECLARED])
    with fake_ollama(script) as host:
        preview = _plan(_config(edit_config, host, tries=2))
    assert [s.tool for s in preview.plan.steps] == ["count_table_rows"]
    assert len(script.chats) == 2
    sent_back = script.chats[1]["messages"][-1]["content"]
    assert "may plan only: count_table_rows" in sent_back


def test_a_refused_draft_is_not_cached(edit_config: Any, demo_db: Path, counter: None) -> None:
    first = Script(answers=[UNDECLARED])
    with fake_ollama(first) as host:
        # Refused (the rules' plan stands in for a job's): never "does not declare".
        fallback = _plan(_config(edit_config, host, tries=1))
    assert len(first.chats) == 1
    assert fallback.plan.drafted_by.get("planner") != "llm"
    # The model answers well now: it is asked, not a refused draft from the cache.
    second = Script(answers=[DECLARED])
    with fake_ollama(second) as host:
        preview = _plan(_config(edit_config, host, tries=1))
    assert len(second.chats) == 1
    assert [s.tool for s in preview.plan.steps] == ["count_table_rows"]
    assert preview.plan.drafted_by["planner"] == "llm"
