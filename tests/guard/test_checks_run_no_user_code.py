"""A corruption check is a read, and a read runs no user code unseen: amcheck's
bt_index_check with heapallindexed evaluates an index's expressions and partial-index
predicate for every row of its table. An index whose code calls a user-defined function
(directly or through an operator) that the target does not trust gets the structure
check alone, and its table is reported not checked, naming the function; in a dry run,
in the health step of full maintenance and in a real check alike. A read-only session
would not have stopped the function: it resets another table's statistics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from aishell import commands
from aishell.config.models import Config
from aishell.guard.usercode import index_code, tables_with_index_code
from aishell.policy.approvers import PreApproved
from tests.guard.test_guard import execute, scalar
from tests.guard.test_user_code import with_trusted
from tests.helpers import one_step_plan, use_target
from tests.services import scratch_postgresql

# Declared IMMUTABLE, yet it resets canary's statistics whenever it is evaluated: a
# change a read-only transaction allows, and which stays to be seen after the run.
RESET = "PERFORM pg_catalog.pg_stat_reset_single_table_counters('public.canary'::regclass);"
SETUP = (
    "CREATE EXTENSION IF NOT EXISTS amcheck",
    "CREATE TABLE canary (id integer)",
    "CREATE FUNCTION f_reset(x integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS "
    f"$$ BEGIN {RESET} RETURN x; END $$",
    "CREATE FUNCTION f_kept(x integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
    f"$$ BEGIN {RESET} RETURN x > 0; END $$",
    "CREATE FUNCTION f_add(x integer, y integer) RETURNS integer LANGUAGE plpgsql "
    f"IMMUTABLE AS $$ BEGIN {RESET} RETURN x + y; END $$",
    "CREATE OPERATOR #@# (LEFTARG = integer, RIGHTARG = integer, FUNCTION = f_add)",
    # An index expression, a partial index's predicate, an operator's function.
    "CREATE TABLE t_expr (id integer PRIMARY KEY, v integer)",
    "CREATE INDEX t_expr_f ON t_expr (f_reset(v))",
    "CREATE TABLE t_pred (id integer PRIMARY KEY, v integer)",
    "CREATE INDEX t_pred_kept ON t_pred (v) WHERE f_kept(v)",
    "CREATE TABLE t_op (id integer PRIMARY KEY, v integer)",
    "CREATE INDEX t_op_plus ON t_op ((v #@# 1))",
    "CREATE TABLE t_plain (id integer PRIMARY KEY, v integer)",
    "CREATE INDEX t_plain_v ON t_plain (v)",
    *(
        f"INSERT INTO {t} SELECT g, g FROM generate_series(1, 100) g"
        for t in ("t_expr", "t_pred", "t_op", "t_plain")
    ),
)
WITH_CODE = {"t_expr": "f_reset", "t_pred": "f_kept", "t_op": "f_add"}
CANARY_ROWS = 10
HANG_SECONDS = 60  # a hang detector, never a timing assertion


def canary_inserts(url: str) -> int:
    return int(
        scalar(url, "SELECT n_tup_ins FROM pg_catalog.pg_stat_user_tables WHERE relname = 'canary'")
        or 0
    )


@pytest.fixture
def database(home: Path) -> Iterator[tuple[Config, str]]:
    """The tables, and canary's insert count reported (creating the indexes ran the
    functions, resetting it, so its rows go in afterwards)."""
    with scratch_postgresql() as url:
        execute(url, *SETUP)
        execute(url, f"INSERT INTO canary SELECT generate_series(1, {CANARY_ROWS})")
        until = time.monotonic() + HANG_SECONDS
        while canary_inserts(url) != CANARY_ROWS:
            assert time.monotonic() < until, "canary's inserts were never reported"
            time.sleep(0.1)
        yield use_target(home, url), url


def check_output(steps: list[Any]) -> dict[str, Any]:
    """The corruption check's output: its own step's, or the health step's."""
    for step in steps:
        if step.tool == "check_table_corruption" and step.output:
            return dict(step.output)
        if step.tool == "analyze_database_health" and (step.output or {}).get("corruption_check"):
            return dict(step.output["corruption_check"])
    raise AssertionError([(s.tool, s.status, s.error) for s in steps])


def assert_code_left_unrun(check: dict[str, Any]) -> None:
    reasons = {u["table"]: u["reason"] for u in check["unchecked_tables"]}
    for table, function in WITH_CODE.items():
        if table not in check["status_by_table"]:
            continue
        assert check["status_by_table"][table] == "not checked", check
        assert f"public.{function}()" in reasons[table], reasons
        assert "only the index's structure was checked" in reasons[table]
        assert "trusted_functions" in reasons[table]
    if "t_plain" in check["status_by_table"]:
        assert check["status_by_table"]["t_plain"] == "ok", check


@pytest.mark.parametrize("kind", ["full", "emergency"])
def test_a_dry_run_evaluates_no_index_code(database: tuple[Config, str], kind: str) -> None:
    config, url = database
    run = commands.run_job(config, "maintenance", {"type": kind}, dry_run=True)
    assert run.status == "completed", run.error
    check = check_output(run.steps)
    assert set(WITH_CODE) | {"t_plain"} <= set(check["status_by_table"]), check
    assert_code_left_unrun(check)
    assert check["corruption_found"] is None
    assert canary_inserts(url) == CANARY_ROWS


def test_a_real_check_evaluates_no_untrusted_index_code(database: tuple[Config, str]) -> None:
    config, url = database
    tables = [*WITH_CODE, "t_plain"]
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "check_table_corruption", {"tables": tables}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    step = result.steps[0]
    assert step.status == "succeeded", step.error
    assert_code_left_unrun(dict(step.output))
    assert canary_inserts(url) == CANARY_ROWS
    # What it sent instead is in its statements, as the preview shows them.
    assert any("bt_index_check(CAST(:oid AS oid)::regclass, false)" in s for s in step.sql)


def test_a_function_the_site_trusts_is_checked_in_full(
    home: Path, database: tuple[Config, str]
) -> None:
    config, url = database
    config = with_trusted(home, config, "public.f_reset")
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "check_table_corruption", {"tables": ["t_expr"]}
    )
    step = commands.apply_plan(config, plan, approver=PreApproved()).steps[0]
    assert step.status == "succeeded", step.error
    assert step.output["status_by_table"] == {"t_expr": "ok"}
    # The site's word, taken: heapallindexed ran the function, which reset the counters.
    assert canary_inserts(url) == 0


def test_the_guard_names_the_code_a_check_would_run(database: tuple[Config, str]) -> None:
    _, url = database
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            cache: dict[str, Any] = {}
            said = index_code(conn, "t_expr", "t_expr_f", (), cache)
            assert said == [
                "index t_expr_f on public.t_expr evaluates public.f_reset(), a user-defined "
                "function that may write (amcheck's heapallindexed runs it)"
            ]
            assert index_code(conn, "t_plain", "t_plain_v", (), cache) == []
            assert index_code(conn, "t_expr", "t_expr_f", ("public.f_reset",), cache) == []
            everything = [*WITH_CODE, "t_plain"]
            assert tables_with_index_code(conn, everything, (), cache) == set(WITH_CODE)
    finally:
        engine.dispose()


OPERATOR_CLASS = (
    "CREATE FUNCTION cmp_reset(a integer, b integer) RETURNS integer LANGUAGE plpgsql "
    f"IMMUTABLE AS $$ BEGIN {RESET} RETURN pg_catalog.btint4cmp(a, b); END $$",
    "CREATE OPERATOR CLASS int4_reset_ops FOR TYPE integer USING btree AS OPERATOR 1 <, "
    "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
    "FUNCTION 1 cmp_reset(integer, integer)",
    "CREATE TABLE t_cmp (id integer PRIMARY KEY, v integer)",
    "INSERT INTO t_cmp SELECT g, g FROM generate_series(1, 100) g",
    "CREATE INDEX t_cmp_v ON t_cmp (v int4_reset_ops)",
)


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_an_index_ordered_by_a_user_function_is_not_checked_at_all(
    home: Path, database: tuple[Config, str], trusted: bool
) -> None:
    """A B-tree whose operator class compares with a user-defined function: every check
    of the index's order calls it, the structure check too. Not checked, naming it,
    unless the site trusts it."""
    config, url = database
    execute(url, *OPERATOR_CLASS)  # the index's build ran it: canary counts from 0 again
    execute(url, "INSERT INTO canary SELECT generate_series(1, 3)")
    until = time.monotonic() + HANG_SECONDS
    while canary_inserts(url) != 3:
        assert time.monotonic() < until, "canary's inserts were never reported"
        time.sleep(0.1)
    if trusted:
        config = with_trusted(home, config, "public.cmp_reset")
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "check_table_corruption", {"tables": ["t_cmp"]}
    )
    step = commands.apply_plan(config, plan, approver=PreApproved()).steps[0]
    if trusted:
        assert step.status == "succeeded", step.error
        assert step.output["status_by_table"] == {"t_cmp": "ok"}, step.output
        return
    # Its only table could not be checked: the step says so, and why.
    assert step.status == "skipped", (step.status, step.error)
    assert "orders its entries with public.cmp_reset()" in str(step.error), step.error
    assert "trusted_functions" in str(step.error)
    assert canary_inserts(url) == 3
