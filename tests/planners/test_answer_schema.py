"""The JSON schema the model planner is asked to follow is the draft model's own, so
what the model is told and what the validator takes cannot drift apart."""

from __future__ import annotations

from aishell.plan.shapes import Draft, DraftStep, draft_model, draft_schema
from aishell.planners.prompt import answer_schema
from aishell.planners.vet import PLAN_KEYS, STEP_KEYS, _step


def test_the_answer_schema_is_made_from_the_draft_model():
    offered = {"maintenance": ["optimize_table", "count_table_rows"]}
    schema = answer_schema(offered)
    assert schema == draft_schema(["count_table_rows", "optimize_table"], ["maintenance"])
    model = draft_model(["count_table_rows", "optimize_table"], ["maintenance"])
    assert "$defs" not in schema and "$ref" not in str(schema)
    assert schema["required"] == model.model_json_schema()["required"]
    step = schema["properties"]["steps"]["items"]
    assert step["properties"]["tool"]["enum"] == ["count_table_rows", "optimize_table"]
    asked = [name for name in DraftStep.model_fields if name not in ("id", "depends_on")]
    assert list(step["properties"]) == asked
    assert step["required"] == ["tool", "params", "rationale"]


def test_with_several_agents_the_answer_names_one():
    schema = answer_schema({"maintenance": ["a"], "backup": ["b"]})
    assert schema["properties"]["agent"]["enum"] == ["backup", "maintenance"]
    assert "agent" in schema["required"]


def test_the_validator_takes_the_keys_of_the_same_model():
    assert tuple(DraftStep.model_fields) == STEP_KEYS
    assert ("agent", *Draft.model_fields) == PLAN_KEYS


def test_a_step_the_schema_describes_passes_the_step_check_and_others_do_not():
    step, problems = _step(0, {"tool": "count_table_rows", "params": {}, "rationale": "r"})
    assert step is not None and problems == []
    _, problems = _step(0, {"tool": "count_table_rows", "params": [], "condition": 5})
    assert problems == [
        "step_0: 'params' must be a JSON object, not a list",
        "step_0: 'condition' must be text: a ${step_N.output.key} reference, or a "
        "comparison over such references",
    ]
