"""Step conditions: the grammar, its strict types, plan-time refusals and runs on each engine."""

import builtins
import contextlib
import uuid
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import text

from aishell import commands, render
from aishell.commands import PlanPreview
from aishell.config.resources import bundled_catalog_dir
from aishell.plan.conditions import (
    MAX_DEPTH,
    MAX_LENGTH,
    Compare,
    ConditionError,
    Length,
    ListOf,
    Literal,
    Logic,
    Not,
    Ref,
    parse_condition,
)
from aishell.plan.model import Plan, Step, validate_plan
from aishell.plan.references import unmet
from aishell.policy.approvers import PreApproved
from aishell.registry import load_registry
from tests.helpers import use_target
from tests.services import engine

CAPS = ["database_read", "database_write", "schema_analyze", "index_manage"]
ROWS = "${step_0.output.row_count}"
TABLE = "${step_0.output.table}"


@pytest.fixture(scope="module")
def registry():
    return load_registry([bundled_catalog_dir()])


def holds(condition: str, **values: object) -> bool:
    """Evaluate with step_0's output keys given as keywords."""
    parsed = parse_condition(condition)
    by_text = {ref.text: values[str(ref.path[0])] for ref in parsed.references}
    return parsed.holds(by_text, "step_1 (t)")


# --- the grammar ---------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_not_looser_than_comparisons():
    tree = parse_condition("1 == 1 or 2 < 3 and not 4 >= 5").tree
    assert tree == Logic(
        "or",
        Compare("==", Literal(1), Literal(1)),
        Logic(
            "and",
            Compare("<", Literal(2), Literal(3)),
            Not(Compare(">=", Literal(4), Literal(5))),
        ),
    )
    grouped = parse_condition("(true or false) and false").tree
    assert grouped == Logic("and", Logic("or", Literal(True), Literal(False)), Literal(False))
    assert parse_condition("(true or false) and false").holds({}, "s") is False
    assert parse_condition("true or false and false").holds({}, "s") is True


def test_operands_references_lengths_lists_and_membership():
    tree = parse_condition(
        "len(${steps.check.output.rows[0]}) not in [1, -2.5, 'a\\'b', \"c\", null,]"
    ).tree
    assert isinstance(tree, Compare) and tree.op == "not in"
    assert isinstance(tree.left, Length) and isinstance(tree.left.arg, Ref)
    assert tree.left.arg.ref.step_id == "check" and tree.left.arg.ref.path == ("rows", 0)
    assert tree.right == ListOf(
        (Literal(1), Literal(-2.5), Literal("a'b"), Literal("c"), Literal(None))
    )
    assert parse_condition(ROWS).bare
    assert not parse_condition(f"{ROWS} > 0").bare


@pytest.mark.parametrize(
    ("condition", "said"),
    [
        ("", "expected a value"),
        ("rows > 0", "unknown word (words are: and, or, not, in, len, true, false, null) at col"),
        (f"{ROWS} and more", "unknown word"),
        ("True", "unknown word"),
        (f"{ROWS} = 1", "unexpected '=' at column 28"),
        (f"{ROWS} > ", "expected a value"),
        ("1 < 2 < 3", "comparisons do not chain; join them with 'and'"),
        (f"({ROWS} > 1", "expected ')'"),
        ("len 1", "expected '('"),
        ("${step_0.output}} > 1", "unexpected '}'"),
        ("${rows} > 1", "not a reference (write ${step_N.output.key}"),
        ("'a\\n' == 'b'", "unknown escape \\n"),
        ("'open", 'unexpected "\'"'),
        ("1 2", "expected and, or, or the end"),
        ("__import__('os').system('true')", "unexpected '.' at column 17"),
        ("exec('import os')", "unknown word"),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH}"),
        ("not " * (MAX_DEPTH + 1) + "1", f"nested more than {MAX_DEPTH}"),
        ("[" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH}"),
        ("1" * (MAX_LENGTH + 1), f"at most {MAX_LENGTH}"),
        ("9" * 400 + ".0 > 1", "a number too large"),
    ],
)
def test_what_does_not_parse_is_one_line_naming_the_condition(condition, said):
    with pytest.raises(ConditionError) as caught:
        parse_condition(condition)
    message = str(caught.value)
    assert said in message and "\n" not in message
    assert message.startswith("condition ")


# Text near the grammar finds more of the parser than arbitrary text alone.
_PIECES = st.sampled_from(
    [ROWS, "${steps.x.output.a[1]}", "${", "}", "and", "or", "not", "in", "len", "(", ")",
     "[", "]", ",", "==", "!=", "<", "<=", ">", ">=", "=", "'a'", '"b\\"', "'", "\\", "1",
     "-2.5", "true", "null", "__import__", "exec", " ", "\n", "\x00", "é"]
)  # fmt: skip
_HOSTILE = st.one_of(st.text(max_size=80), st.lists(_PIECES, max_size=30).map("".join))
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None)
@given(condition=_HOSTILE, values=st.lists(_VALUES, min_size=1, max_size=4))
def test_any_text_parses_or_raises_a_condition_error_and_never_runs_code(condition, values):
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a condition reached Python's evaluator")

    evaluators = dict.fromkeys(("eval", "exec", "compile", "__import__"), forbidden)
    with mock.patch.multiple(builtins, **evaluators):
        try:
            parsed = parse_condition(condition)
        except ConditionError as exc:
            assert "\n" not in str(exc)
            return
        by_text = {ref.text: values[i % len(values)] for i, ref in enumerate(parsed.references)}
        with contextlib.suppress(ConditionError):
            assert parsed.holds(by_text, "s") in (True, False)


@settings(max_examples=50)
@given(value=_VALUES)
def test_a_bare_reference_holds_when_its_value_is_non_empty_as_before(value):
    assert holds(ROWS, row_count=value) is bool(value)
    assert holds(f"not {ROWS}", row_count=value) is not bool(value)


# --- strict types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        (f"{ROWS} > 0 and len({TABLE}) < 64", {"row_count": 3, "table": "t"}, True),
        (f"{ROWS} > 0 and len({TABLE}) < 64", {"row_count": 0, "table": "t"}, False),
        (f"{ROWS} > 0 and len({TABLE}) < 64", {"row_count": 3, "table": "t" * 64}, False),
        (f"{ROWS} >= 2.5", {"row_count": 3}, True),
        ("${step_0.output.s} < 'b'", {"s": "a"}, True),
        ("${step_0.output.s} in ['a', 1]", {"s": "a"}, True),
        ("${step_0.output.s} in [true, 1]", {"s": 1}, True),
        ("${step_0.output.s} in [true]", {"s": 1}, False),  # a boolean is not a number
        ("${step_0.output.s} not in 'abc'", {"s": "bc"}, False),
        ("'users' in ${step_0.output.s}", {"s": {"users": "ok"}}, True),
        ("${step_0.output.s} == null", {"s": None}, True),
        ("${step_0.output.s} != null", {"s": 0}, True),
        ("${step_0.output.s} == [1, 'a']", {"s": [1, "a"]}, True),
        ("len(${step_0.output.s}) == 0 or ${step_0.output.s} > 1", {"s": []}, True),
    ],
)
def test_evaluation(condition, values, expected):
    assert holds(condition, **values) is expected


@pytest.mark.parametrize(
    ("condition", "values", "said"),
    [
        (f"{ROWS} > 0", {"row_count": "5"}, 'not a string and a number ("5" > 0)'),
        (f"{ROWS} == '5'", {"row_count": 5}, "== compares a number with a string"),
        (f"{ROWS} < 1", {"row_count": None}, "not null and a number"),
        (f"len({ROWS}) > 0", {"row_count": 5}, "len() counts a string, a list or an object"),
        (f"1 in {ROWS}", {"row_count": 5}, "'in' looks in a list, a string or an object, not a"),
        (f"1 in {ROWS}", {"row_count": "15"}, "'in' a string looks for a string, not a number"),
        (f"{ROWS} == true", {"row_count": 1}, "== compares a number with a boolean"),
    ],
)  # fmt: skip
def test_a_type_error_when_it_runs_is_one_line_naming_step_and_condition(condition, values, said):
    with pytest.raises(ConditionError) as caught:
        holds(condition, **values)
    assert str(caught.value).startswith(f"step_1 (t): condition {condition!r}: ")
    assert said in str(caught.value)


def test_and_or_stop_at_the_side_that_decides():
    # The right side would be a type error; it is never reached.
    assert holds(f"{ROWS} == null or {ROWS} > 0", row_count=None) is True
    assert holds(f"{ROWS} != null and {ROWS} > 0", row_count=None) is False


def test_unmet_names_the_condition_and_its_values_in_words():
    condition = f"{ROWS} > 10 and {ROWS} < 20"
    assert unmet(condition, {ROWS: 3}) == (
        "its condition (row_count of step_0 > 10 and row_count of step_0 < 20) is false "
        "(row_count of step_0 is 3): nothing to do"
    )
    assert unmet(ROWS, {ROWS: 0}) == "step_0 found no row_count: nothing to do"


# --- at plan time ----------------------------------------------------------------------


def plan_of(*steps: Step, dialect: str = "sqlite", target: str = "demo") -> Plan:
    return Plan("maintenance", target, dialect, {"type": "conditions"}, steps)


def problems_of(registry, condition: str, first: str = "count_table_rows") -> list[str]:
    params = {"table": "t"} if first == "count_table_rows" else {}
    plan = plan_of(
        Step("step_0", first, params),
        Step("step_1", "count_table_rows", {"table": "t"}, condition=condition),
    )
    return validate_plan(plan, registry, CAPS)


@pytest.mark.parametrize(
    ("condition", "said"),
    [
        (f"{ROWS} >", "condition '${step_0.output.row_count} >': expected a value"),
        ("true", "reads no earlier step's output; name one as ${step_N.output.key}"),
        ("${step_1.output.row_count} > 0", "refers to step_1, which does not come before it"),
        ("${step_7.output.row_count} > 0", "refers to step_7, which does not come before it"),
        ("${step_0.output.rows} > 0", "reads 'rows', which count_table_rows does not return"),
        (f"len({ROWS}) > 0", "len() counts a string, a list or an object, not a number"),
        (f"{ROWS} < 'many'", "< orders two numbers or two strings, not a number and a string"),
        (f"{ROWS} in 'abc'", "'in' a string looks for a string, not a number"),
        ("${step_0.output.estimated} == 1", "== compares a boolean with a number"),
    ],
)
def test_a_plan_with_a_bad_condition_is_refused_naming_the_step(registry, condition, said):
    problems = problems_of(registry, condition)
    assert len(problems) == 1, problems
    assert problems[0].startswith("step_1 (count_table_rows): ")
    assert said in problems[0]


@pytest.mark.parametrize(
    "condition",
    [
        ROWS,
        f"{ROWS} > 0 and {ROWS} < 1000000",
        "${step_0.output.cutoff} > 5 or ${step_0.output.cutoff} < 'x'",  # string or number
        "len(${step_0.output.how}) > 0 and not ${step_0.output.estimated}",
        f"len(${{step_0.output}}) > 0 and {ROWS} in [1, 2]",
        "${step_0.output.row_count} != null",
    ],
)
def test_conditions_the_tools_returns_allow_pass(registry, condition):
    assert problems_of(registry, condition) == []


def test_types_unknown_to_the_returns_schema_wait_for_the_run(registry):
    nested = "len(${step_0.output.corrupted_tables[0]}) > 1"
    untyped = "${step_0.output.issues} > 1"  # an array: refused
    assert problems_of(registry, nested, "check_table_corruption") == []
    assert "not a list and a number" in problems_of(registry, untyped, "check_table_corruption")[0]


def test_existing_bare_conditions_keep_their_plans_and_hashes(registry):
    step = Step(
        "step_1", "repair_corrupted_tables", {"tables": "${step_0.output.corrupted_tables}"},
        condition="${step_0.output.corrupted_tables}",
    )  # fmt: skip
    plan = plan_of(Step("step_0", "check_table_corruption", {}), step)
    assert validate_plan(plan, registry, CAPS) == []
    assert plan.to_dict()["steps"][1]["condition"] == "${step_0.output.corrupted_tables}"
    assert Plan.from_dict(plan.to_dict()).hash == plan.hash


def test_the_preview_shows_each_condition(registry):
    plan = plan_of(
        Step("step_0", "count_table_rows", {"table": "t"}),
        Step("step_1", "count_table_rows", {"table": "t"}, condition=f"{ROWS} > 0"),
    )
    out = Console(record=True, width=120)
    render.plan_preview(out, PlanPreview(plan, (), "moderate", "test"))
    assert f"step_1 runs only if: {ROWS} > 0" in out.export_text()


# --- runs on each engine ---------------------------------------------------------------


def conditional_plan(table: str, dialect: str, target: str) -> Plan:
    """Count a table, then two counts: one whose condition holds, one whose does not."""
    return plan_of(
        Step("step_0", "count_table_rows", {"table": table}),
        Step(
            "step_1", "count_table_rows", {"table": table},
            condition=f"{ROWS} > 0 and len('{table}') < 64 and {ROWS} not in [1, 2]",
        ),
        Step(
            "step_2", "count_table_rows", {"table": table},
            condition=f"{ROWS} > 1000000 or not ({ROWS} >= 3)",
        ),
        dialect=dialect,
        target=target,
    )  # fmt: skip


def assert_one_ran_one_skipped(result, rows: int) -> None:
    assert result.status == "completed", result.error
    assert [s.status for s in result.steps] == ["succeeded", "succeeded", "skipped"]
    assert result.steps[1].output == {"row_count": rows}
    assert result.steps[2].error == (
        "its condition (row_count of step_0 > 1000000 or not (row_count of step_0 >= 3)) "
        f"is false (row_count of step_0 is {rows}): nothing to do"
    )


def test_a_saved_plan_runs_one_conditional_step_and_skips_the_other_on_sqlite(
    config, demo_db, tmp_path
):
    plan = conditional_plan("users", "sqlite", "demo")
    saved = commands.save_plan(config, plan, tmp_path / "plan.json")
    result = commands.apply_plan(config, saved, approver=PreApproved())
    assert_one_ran_one_skipped(result, 1_500)
    dry = commands.apply_plan(config, plan, approver=PreApproved(), dry_run=True)
    # Counting is a safe analysis: a dry run runs it, so the conditions are decided.
    assert [s.status for s in dry.steps] == ["succeeded", "succeeded", "skipped"]
    out = Console(record=True, width=200)
    render.run_summary(out, dry)
    assert "step_2 count_table_rows: its condition (row_count of step_0" in out.export_text()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_plan_with_conditions_on_a_server(home, dialect, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    table = f"cond_{uuid.uuid4().hex[:8]}"
    with engine(url).connect() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1), (2), (3), (4)"))
    config = use_target(home, url)
    result = commands.apply_plan(
        config, conditional_plan(table, dialect, "db"), approver=PreApproved()
    )
    assert_one_ran_one_skipped(result, 4)


def test_a_value_of_the_wrong_type_at_run_time_fails_the_step_naming_it(config, demo_db):
    # `cutoff` is a string or a number: only the run can tell it is not a number.
    plan = plan_of(
        Step("step_0", "count_table_rows", {"table": "app_logs", "date_column": "created_at",
                                            "retention_days": 30}),
        Step("step_1", "count_table_rows", {"table": "users"},
             condition="${step_0.output.cutoff} > 5"),
    )  # fmt: skip
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "failed"
    assert result.steps[1].status == "failed"
    assert result.steps[1].error.startswith(
        "step_1 (count_table_rows): condition '${step_0.output.cutoff} > 5': "
        "> orders two numbers or two strings, not a string and a number"
    )
