"""A step in doubt after a crash (a tool that cannot look for its effect) waits for a
person with its facts recorded, as every question's are: its verdict, its statements
and what it acts on, measured then. `aishell approve RUN --step N` gives its yes for
those; resume judges the step again against them (an approval whose facts hold no
measure of what it acts on covers nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aishell import commands
from aishell.executor.resume import outgrown
from aishell.plan.model import Plan, Step
from aishell.state.store import StateStore
from tests.executor.test_crash_safety import (  # noqa: F401  (fixtures)
    killed_at,
    ledger_config,
    ledger_tokens,
    tmp_path,
)


def test_a_step_in_doubt_waits_with_its_facts_recorded(ledger_config: Any, home: Path) -> None:  # noqa: F811
    plan = Plan(
        "maintenance",
        "ledger",
        "sqlite",
        {"type": "ledger"},
        (Step("step_0", "append_ledger_unchecked", {"token": "doubt-0"}),),
    )
    killed_at(home, plan, "during", 0)
    run_id = commands.list_runs(ledger_config, limit=1)[0]["run_id"]
    waiting = commands.resume_run(ledger_config, run_id)
    assert waiting.steps[0].status == "waiting_approval", waiting.steps[0].error
    with StateStore(ledger_config.state_url) as store:
        request = store.last_request(run_id, 0)
    assert request is not None, "the step waits with no facts recorded"
    facts = request["given_for"]
    assert facts["risk"] == "medium" and facts["sql"], facts
    assert isinstance(facts.get("subject"), dict) and "code" in facts["subject"], facts
    commands.decide_steps(ledger_config, run_id, "approved", step=0, reason="run it again")
    done = commands.resume_run(ledger_config, run_id)
    assert done.status == "completed", done.error
    assert ledger_tokens(home) == ["doubt-0", "doubt-0"]  # run again, as approved


def test_an_approval_without_a_measure_of_its_subject_covers_nothing() -> None:
    now = {
        "risk": "medium",
        "reasons": [],
        "personal": [],
        "rows": None,
        "share": None,
        "subject": {"tables": {"logs": {"id": "1", "rows": 10, "bytes": 8192}}, "code": {}},
    }
    unmeasured = {key: value for key, value in now.items() if key != "subject"}
    for given in (unmeasured, None):
        approval = {"decision": "approved", "named": True, "given_for": given}
        assert outgrown(approval, now) == [
            "what it acts on was not measured when it was approved"
        ], given
    measured = {"decision": "approved", "named": True, "given_for": dict(now)}
    assert outgrown(measured, now) == []
