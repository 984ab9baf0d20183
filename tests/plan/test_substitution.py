import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aishell import commands
from aishell.errors import SubstitutionError
from aishell.plan.model import Plan, Step
from aishell.plan.references import find_references, substitute, unmet
from aishell.policy.approvers import PreApproved

OUTPUTS = {
    "step_0": {
        "backup_path": "/b/x.db",
        "size": 42,
        "tables": ["a", "b"],
        "nested": {"k": [1, {"v": True}]},
    },
    "step_1": {"corrupted_tables": []},
    "check": {"ok": False},
}


def test_whole_value_keeps_its_type():
    assert substitute("${step_0.output.size}", OUTPUTS, "step_2") == 42
    assert substitute("${step_0.output.tables}", OUTPUTS, "step_2") == ["a", "b"]
    assert substitute("${step_1.output.corrupted_tables}", OUTPUTS, "step_2") == []
    assert substitute("${steps.check.output.ok}", OUTPUTS, "step_2") is False


def test_whole_output():
    assert substitute("${step_1.output}", OUTPUTS, "step_2") == {"corrupted_tables": []}


def test_embedded_in_a_string():
    text = "copy at ${step_0.output.backup_path} of ${step_0.output.size} bytes"
    assert substitute(text, OUTPUTS, "step_2") == "copy at /b/x.db of 42 bytes"
    assert substitute("t=${step_0.output.tables}", OUTPUTS, "s") == 't=["a", "b"]'


def test_nested_paths_and_list_indices():
    assert substitute("${step_0.output.tables[1]}", OUTPUTS, "s") == "b"
    assert substitute("${step_0.output.tables.0}", OUTPUTS, "s") == "a"
    assert substitute("${step_0.output.nested.k[1].v}", OUTPUTS, "s") is True


def test_inside_nested_params():
    params = {"a": ["${step_0.output.size}", {"b": "${step_0.output.tables}"}], "c": 3}
    assert substitute(params, OUTPUTS, "s") == {"a": [42, {"b": ["a", "b"]}], "c": 3}


def test_a_step_that_has_not_run_is_named():
    with pytest.raises(SubstitutionError) as err:
        substitute("${step_5.output.rows}", OUTPUTS, "step_2")
    assert "step_2" in str(err.value) and "step_5" in str(err.value)


def test_a_missing_key_is_named_with_the_keys_there_are():
    with pytest.raises(SubstitutionError) as err:
        substitute("${step_0.output.backup}", OUTPUTS, "step_2")
    message = str(err.value)
    assert "step_2" in message and "step_0.output has no key 'backup'" in message
    assert "backup_path" in message


def test_an_index_past_the_end():
    with pytest.raises(SubstitutionError, match=r"list of 2 items; no item \[5\]"):
        substitute("${step_0.output.tables[5]}", OUTPUTS, "s")


def test_a_path_through_a_scalar():
    with pytest.raises(SubstitutionError, match="is a int, not an object or list"):
        substitute("${step_0.output.size.x}", OUTPUTS, "s")


def test_find_references():
    refs = find_references({"a": "${step_3.output.x[0]} and ${steps.abc.output}"})
    assert [(r.step_id, r.path) for r in refs] == [("step_3", ("x", 0)), ("abc", ())]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(key=st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), value=json_values)
def test_whole_reference_returns_the_value_unchanged(key, value):
    assert substitute(f"${{step_0.output.{key}}}", {"step_0": {key: value}}, "s") == value


@given(st.text().filter(lambda s: "${" not in s))
def test_text_without_references_is_untouched(text):
    assert substitute(text, {}, "s") == text


@given(prefix=st.text(alphabet="abc ${}", max_size=8), value=json_values)
def test_embedded_reference_renders_strings_raw_and_the_rest_as_json(prefix, value):
    result = substitute(prefix + "|${step_0.output.v}", {"step_0": {"v": value}}, "s")
    rendered = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    assert result.endswith("|" + rendered)


def test_an_unmet_condition_is_said_in_words():
    assert unmet("${step_1.output.corrupted_tables}") == (
        "step_1 found no corrupted_tables: nothing to do"
    )
    assert unmet("${steps.check.output.rows[0]}") == "check found no rows[0]: nothing to do"
    said = unmet("${step_1.output.large_purge}${step_2.output.tables}")
    assert said == "its condition (large_purge of step_1tables of step_2) is false: nothing to do"
    assert "${" not in said


def test_a_step_skipped_by_its_condition_says_why_without_references(config, demo_db):
    plan = Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "conditions"},
        (
            Step("step_0", "check_table_corruption", {"tables": ["users"]}),
            Step(
                "step_1",
                "repair_corrupted_tables",
                {"tables": "${step_0.output.corrupted_tables}"},
                condition="${step_0.output.corrupted_tables}",
            ),
        ),
    )
    run = commands.apply_plan(config, plan, approver=PreApproved())
    assert run.steps[0].output["corrupted_tables"] == []
    assert run.steps[1].status == "skipped"
    assert run.steps[1].error == "step_0 found no corrupted_tables: nothing to do"
