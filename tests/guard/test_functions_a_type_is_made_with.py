"""Functions CREATE TYPE makes of the server's own code: a range type's constructors
(`floatrange(float8, float8)`, `floatrange(float8, float8, text)`) and its multirange's
are recorded as internal parts of their type, in language internal. A default, check or
index expression calling them runs no user's code, so ANALYZE, REINDEX and an INSERT of
such a table stay at their own risk, and a read may call them. A range's subtype_diff a
user wrote is still named, and so is a constructor a user replaced with a body of their
own (which drops it from its type)."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.guard.test_guard import execute, scalar, site_config, tool_yaml, write_tool
from tests.guard.test_user_code import code_of, postgresql
from tests.guard.test_user_code_unseen_paths import written_code
from tests.helpers import one_step_plan

TYPED = (
    "CREATE TYPE floatrange AS RANGE (subtype = float8)",
    "CREATE TABLE spans (id integer PRIMARY KEY, "
    "r floatrange DEFAULT floatrange(0, 1) CHECK (r <> floatrange(500, 600)), "
    "m floatmultirange DEFAULT floatmultirange(floatrange(0, 1, '[]')))",
    "CREATE INDEX spans_gist ON spans USING gist (r)",
    "CREATE INDEX spans_expr ON spans ((floatmultirange(floatrange(id, id + 1))))",
    "INSERT INTO spans (id, r) SELECT g, floatrange(g, g + 1) FROM generate_series(1, 100) g",
)
REPLACED = (
    "CREATE OR REPLACE FUNCTION floatrange(a float8, b float8) RETURNS floatrange "
    "LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM zap_rows(); "
    "RETURN floatrange(a, b, '[)'); END $$"
)
MAINTENANCE = ("ANALYZE spans", "REINDEX TABLE spans", "VACUUM FULL spans", "VACUUM spans")


def test_a_types_constructors_are_the_servers_code(home: Path) -> None:
    with postgresql(home, *TYPED) as (config, url):
        for statement in MAINTENANCE:
            assert code_of(url, [statement]) == [], statement
        assert written_code(url, "INSERT INTO spans (id) VALUES (1000)") == []
        preview = commands.plan_job(config, "maintenance", {"type": "quick", "tables": ["spans"]})
        analyze = next(s for s in preview.steps if s.tool == "update_table_statistics")
        assert analyze.risk_level == "low" and not analyze.estimate.get("user_code")
        # CREATE OR REPLACE gives the function a body of the user's and drops the record
        # that it is part of its type: it is the database's code again.
        execute(url, REPLACED)
        said = code_of(url, ["ANALYZE spans"])
        assert len(said) == 1 and "public.floatrange()" in said[0], said
        inserted = written_code(url, "INSERT INTO spans (id) VALUES (1000)")
        assert "public.floatrange()" in " ".join(inserted), inserted


def test_a_read_may_call_a_types_constructor(home: Path) -> None:
    with postgresql(home, *TYPED) as (_, url):
        folder = home / "site_spans"
        sql = "SELECT count(*) AS n FROM {table} WHERE r && floatrange(1, 10)"
        write_tool(folder, tool_yaml("read_spans", "low", {"postgresql": {"sql": sql}}))
        config = site_config(home, url, folder)
        plan = one_step_plan("maintenance", "db", "postgresql", "read_spans", {"table": "spans"})

        run = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.LOW))

        assert run.steps[0].status == "succeeded", run.steps[0].error


SUBTYPE_DIFF = (
    "CREATE FUNCTION zdiff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM zap_rows(); RETURN a - b; END $$",
    "CREATE TYPE zrange AS RANGE (subtype = float8, subtype_diff = zdiff)",
    "INSERT INTO victim SELECT generate_series(101, 20000)",
    "CREATE TABLE r (id integer, span zrange DEFAULT zrange(0, 1))",
    "CREATE INDEX r_gist ON r USING gist (span)",
    "CREATE INDEX r_expr ON r ((zmultirange(zrange(id, id + 1))))",
    "INSERT INTO r SELECT g, zrange(g, g + 1) FROM generate_series(1, 300) g",
)
SAID_DIFF = (
    "index r_gist on public.r (entries of type zrange) orders its entries with "
    "public.zdiff(), a user-defined function that may write (a rebuild runs it)"
)


def test_a_users_subtype_diff_is_named_and_the_constructors_are_not(home: Path) -> None:
    with postgresql(home, *SUBTYPE_DIFF) as (_, url):
        rebuilt = code_of(url, ["REINDEX TABLE r"])
        assert SAID_DIFF in rebuilt
        assert all("zrange()" not in s and "zmultirange()" not in s for s in rebuilt), rebuilt
        before = scalar(url, "SELECT count(*) FROM victim")
        execute(url, "REINDEX TABLE r")
        assert scalar(url, "SELECT count(*) FROM victim") < before
