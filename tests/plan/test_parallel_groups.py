"""Parallel groups in plans: a step's parallel_group is kept, hashed and signed only
when set; validation refuses a group that is not consecutive, holds a tool that may
write, or has a step that needs another of its group; the model planner may draft one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aishell.config.resources import bundled_catalog_dir
from aishell.errors import PlanError
from aishell.plan.model import Plan, SavedPlan, Step, validate_plan
from aishell.plan.shapes import draft_schema, plan_file_problems
from aishell.planners.vet import _step
from aishell.registry import Registry, load_registry
from aishell.state import signing

CAPS = ["database_read", "database_write", "schema_analyze", "index_manage"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry([bundled_catalog_dir()])


def plan_of(*steps: Step) -> Plan:
    return Plan("maintenance", "demo", "sqlite", {"type": "x"}, steps)


def counting(index: int, group: str | None = "analysis", **more: object) -> Step:
    params = {"table": f"t{index}", **more}
    return Step(f"step_{index}", "count_table_rows", params, parallel_group=group)


def test_a_group_of_reads_is_a_good_plan_and_round_trips(registry: Registry) -> None:
    plan = plan_of(counting(0, None), counting(1), counting(2), counting(3, None))
    assert validate_plan(plan, registry, CAPS) == []
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan and again.hash == plan.hash
    assert [s.get("parallel_group") for s in plan.to_dict()["steps"]] == [
        None,
        "analysis",
        "analysis",
        None,
    ]


def test_an_unset_group_leaves_the_step_and_the_hash_as_they_were() -> None:
    step = counting(0, None)
    assert "parallel_group" not in step.to_dict()
    assert plan_of(step).hash == plan_of(Step("step_0", "count_table_rows", {"table": "t0"})).hash


def test_a_group_is_named_in_a_few_printable_characters(registry: Registry) -> None:
    problems = validate_plan(plan_of(counting(0, "x" * 65)), registry, CAPS)
    assert problems == [
        f"step_0: parallel_group {'x' * 65!r} must be a printable name of 1 to 64 characters"
    ]
    with pytest.raises(PlanError, match="wrong field parallel_group"):
        Plan.from_dict(
            {
                **plan_of(counting(0)).to_dict(),
                "steps": [{**counting(0).to_dict(), "parallel_group": 3}],
            }
        )


def test_a_group_split_by_another_step_is_refused(registry: Registry) -> None:
    plan = plan_of(counting(0), counting(1, None), counting(2))
    assert validate_plan(plan, registry, CAPS) == [
        "step_2: parallel group 'analysis' is not consecutive: its steps must come one "
        "after another, with no other step between them"
    ]


def test_a_tool_that_may_write_is_refused_in_a_group(registry: Registry) -> None:
    stats = Step("step_1", "update_table_statistics", {"table": "t"}, parallel_group="analysis")
    problems = validate_plan(plan_of(counting(0), stats), registry, CAPS)
    assert problems == [
        "step_1 (update_table_statistics): in parallel group 'analysis', but its tool's "
        "risk is low: only tools that read (risk safe) run in a group"
    ]


@pytest.mark.parametrize(
    "needing",
    [
        Step("step_1", "count_table_rows", {"table": "${step_0.output.table}"}),
        Step("step_1", "count_table_rows", {"table": "t"}, depends_on=("step_0",)),
        Step("step_1", "count_table_rows", {"table": "t"}, condition="${step_0.output.row_count}"),
    ],
    ids=["reference", "depends_on", "condition"],
)
def test_a_step_that_needs_another_of_its_group_is_refused(
    registry: Registry, needing: Step
) -> None:
    grouped = Step(**{**needing.__dict__, "parallel_group": "analysis"})
    problems = validate_plan(plan_of(counting(0), grouped), registry, CAPS)
    assert problems == [
        "step_1: needs step_0 of its own parallel group 'analysis'; steps of one group run "
        "at the same time, so none may read another's output or wait for it (move one out "
        "of the group)"
    ]
    # Outside the group it may need it.
    assert validate_plan(plan_of(counting(0), needing), registry, CAPS) == []


def test_a_plan_file_with_a_split_group_is_refused(tmp_path: Path) -> None:
    plan = plan_of(counting(0), counting(1, "other"), counting(2))
    body = json.loads(plan.to_json())
    body["target_identity"] = "x"
    key = signing.load_key(tmp_path)
    assert key is not None
    data = {**body, "signature": signing.sign(key, body)}
    assert plan_file_problems(data) == [
        "step_2: parallel group 'analysis' is not consecutive: its steps must come one "
        "after another, with no other step between them"
    ]
    with pytest.raises(PlanError, match="not consecutive"):
        SavedPlan.parse(data, "p.json")
    data["steps"][0]["parallel_group"] = 5
    assert plan_file_problems(data) == [
        "steps[0]: 'parallel_group' must be a string, not an integer"
    ]


def test_the_model_planner_may_draft_a_group() -> None:
    schema = draft_schema(["count_table_rows"], ["maintenance"])
    step_schema = schema["properties"]["steps"]["items"]["properties"]
    assert step_schema["parallel_group"]["type"] == "string"
    step, problems = _step(
        0,
        {
            "tool": "count_table_rows",
            "params": {"table": "t"},
            "rationale": "r",
            "parallel_group": "a",
        },
    )
    assert problems == [] and step is not None and step.parallel_group == "a"
    _, problems = _step(0, {"tool": "count_table_rows", "parallel_group": 3})
    assert problems == [
        "step_0: 'parallel_group' must be text: the name of a group of consecutive steps "
        "that only read"
    ]
