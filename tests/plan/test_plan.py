import json

import pytest

from aishell.config.resources import bundled_catalog_dir
from aishell.errors import PlanError
from aishell.plan.model import Plan, Step, validate_plan
from aishell.registry import load_registry

CAPS = ["database_read", "database_write", "schema_analyze", "index_manage"]


@pytest.fixture(scope="module")
def registry():
    return load_registry([bundled_catalog_dir()])


def plan_of(*steps: Step) -> Plan:
    return Plan(
        agent="maintenance", target="demo", dialect="sqlite", job={"type": "x"}, steps=steps
    )


def test_a_good_plan_has_no_problems(registry):
    plan = plan_of(
        Step("step_0", "check_table_corruption", {"tables": []}),
        Step("step_1", "repair_corrupted_tables", {"tables": "${step_0.output.corrupted_tables}"}),
    )
    assert validate_plan(plan, registry, CAPS) == []


def test_unknown_tool(registry):
    problems = validate_plan(plan_of(Step("step_0", "drop_everything", {})), registry, CAPS)
    assert problems == ["step_0 (drop_everything): No tool named 'drop_everything' in the catalog"]


def test_params_that_do_not_match_the_schema(registry):
    plan = plan_of(Step("step_0", "count_table_rows", {"table": 5, "where": "1=1"}))
    problems = validate_plan(plan, registry, CAPS)
    assert "step_0 (count_table_rows): params.table: expected string, got integer" in problems
    assert any("unknown parameter 'where'" in p for p in problems)


def test_a_forward_reference(registry):
    plan = plan_of(
        Step("step_0", "repair_corrupted_tables", {"tables": "${step_1.output.corrupted_tables}"}),
        Step("step_1", "check_table_corruption", {}),
    )
    problems = validate_plan(plan, registry, CAPS)
    assert any("refers to step_1, which does not come before it" in p for p in problems)


def test_a_capability_the_agent_lacks(registry):
    plan = plan_of(Step("step_0", "rebuild_fragmented_indexes", {"table": "t"}))
    problems = validate_plan(plan, registry, ["database_read"])
    assert problems == [
        "step_0 (rebuild_fragmented_indexes): "
        "the maintenance agent lacks capabilities: index_manage"
    ]


def test_no_implementation_for_the_dialect(registry):
    plan = Plan(
        "maintenance", "lite", "sqlite", {}, (Step("step_0", "vacuum_full_table", {"table": "t"}),)
    )
    assert any("no sqlite implementation" in p for p in validate_plan(plan, registry, CAPS))


def test_json_round_trip_keeps_the_hash():
    plan = plan_of(Step("step_0", "count_table_rows", {"table": "t"}, "why", condition=None))
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan and again.hash == plan.hash


def test_hash_changes_with_any_param():
    a = plan_of(Step("step_0", "count_table_rows", {"table": "t"}))
    b = plan_of(Step("step_0", "count_table_rows", {"table": "u"}))
    assert a.hash != b.hash


def test_an_edited_plan_is_refused():
    data = json.loads(plan_of(Step("step_0", "count_table_rows", {"table": "t"})).to_json())
    data["steps"][0]["params"]["table"] = "users"
    with pytest.raises(PlanError, match="hash does not match"):
        Plan.from_dict(data)
