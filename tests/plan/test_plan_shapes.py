"""The shape of a saved plan file is the PlanFile model: what the writer puts in a file
is what the model takes, and a file of any other shape is refused naming each key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aishell.errors import PlanError
from aishell.plan.model import Plan, SavedPlan, Step
from aishell.plan.shapes import FileStep, PlanFile, Signature, plan_file_problems
from aishell.state import signing


def _saved(tmp_path: Path) -> dict[str, object]:
    steps = (
        Step("step_0", "count_table_rows", {"table": "t"}, "count"),
        Step(
            "step_1",
            "optimize_table",
            {"table": "t"},
            "",
            ("step_0",),
            "${step_0.output.n}",
            True,
            "g",
        ),
    )
    plan = Plan("maintenance", "demo", "sqlite", {"type": "full"}, steps, {"a": "b"})
    plan = Plan(**{**plan.__dict__, "drafted_by": {"planner": "llm"}, "target_identity": "x"})
    body = json.loads(plan.to_json())
    key = signing.load_key(tmp_path)
    assert key is not None
    return {**body, "signature": signing.sign(key, body)}


def test_every_key_a_saved_plan_writes_is_a_field_of_the_model(tmp_path):
    data = _saved(tmp_path)
    assert plan_file_problems(data) == []
    assert list(PlanFile.model_fields) == [
        "format", "agent", "target", "dialect", "job", "steps", "tool_fingerprints",
        "assumptions", "drafted_by", "target_identity", "reviewed", "plan_hash", "signature",
    ]  # fmt: skip
    steps = data["steps"]
    assert isinstance(steps, list)
    assert set(steps[1]) == set(FileStep.model_fields)
    assert set(data["signature"]) == set(Signature.model_fields)  # type: ignore[arg-type]


def test_the_signed_bytes_are_the_file_as_written(tmp_path):
    """Reading a file through the model changes nothing the signature covers."""
    data = _saved(tmp_path)
    saved = SavedPlan.parse(json.loads(json.dumps(data)), "p.json")
    body = {k: v for k, v in data.items() if k != "signature"}
    assert signing.canonical(saved.body) == signing.canonical(body)
    assert saved.plan.hash == data["plan_hash"]


def test_wrong_types_deep_in_a_file_are_each_named(tmp_path):
    data = _saved(tmp_path)
    data["steps"][1]["depends_on"] = ["step_0", 3]  # type: ignore[index]
    data["steps"][0]["always_run"] = "yes"  # type: ignore[index]
    data["signature"]["value"] = None  # type: ignore[index]
    data["format"] = 1.0
    with pytest.raises(PlanError) as raised:
        SavedPlan.parse(data, "p.json")
    assert str(raised.value) == (
        "Plan file p.json: 'format' must be an integer, not a number; "
        "steps[0]: 'always_run' must be true or false, not a string; "
        "steps[1]: 'depends_on' must be a list of step ids; "
        "signature: 'value' must be a string, not null"
    )
