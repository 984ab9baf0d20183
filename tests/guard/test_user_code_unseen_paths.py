"""Code of a database's own that a step runs where no expression of the table's shows it
at first sight: a plain VACUUM summarizes a BRIN index's new page ranges, evaluating its
expressions and predicate for each of their rows, and merges a GIN index's pending
entries with its operator class; a column with no default of its own takes its
domain's, which an INSERT or a foreign key's SET DEFAULT evaluates. Each is named in the
step's estimate, makes it high risk and waits for a yes; an index of another kind, or a
column with a default of its own, is not named."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from aishell import commands
from aishell.guard.usercode import user_code
from aishell.guard.usercodeactions import write_actions
from aishell.guard.writtentables import written
from tests.guard.test_guard import execute, scalar
from tests.guard.test_user_code import LOGS, PURGE, code_of, postgresql, sql_tool
from tests.helpers import one_step_plan

BRIN = (
    # Enough rows for every call the index builds make and more.
    "INSERT INTO victim SELECT generate_series(101, 100000)",
    "CREATE TABLE t (id integer PRIMARY KEY, v integer, pad text)",
    "INSERT INTO t SELECT g, g, repeat('x', 200) FROM generate_series(1, 100) g",
    # One page per range: the rows added after the build fill ranges VACUUM summarizes.
    "CREATE INDEX t_brin ON t USING brin (zap(v)) WITH (pages_per_range = 1)",
    "CREATE INDEX t_part_brin ON t USING brin (id) WITH (pages_per_range = 1) WHERE zap(v) > 0",
    "CREATE INDEX t_expr_idx ON t (zap(v))",
)
ADDED = "INSERT INTO t SELECT g, g, repeat('x', 200) FROM generate_series(101, 400) g"
SAID_BRIN = (
    "index t_brin on public.t evaluates public.zap(), a user-defined function that may "
    "write (VACUUM runs it)"
)


def test_a_plain_vacuum_names_the_brin_indexes_it_summarizes(home: Path) -> None:
    with postgresql(home, *BRIN) as (_, url):
        said = code_of(url, ["VACUUM t"])
        assert sorted(said) == [
            SAID_BRIN,
            "index t_part_brin on public.t evaluates public.zap(), a user-defined function "
            "that may write (VACUUM runs it)",
        ]
        # The btree expression index is not cleaned up by evaluating it; its ANALYZE does.
        assert all("t_expr_idx" not in s for s in said)
        analyzed = code_of(url, ["VACUUM (ANALYZE) t"])
        assert any("t_expr_idx" in s for s in analyzed)
        assert any("VACUUM and ANALYZE run it" in s for s in analyzed), analyzed
        # A bare VACUUM vacuums every table; a VACUUM of another table, none of t's.
        assert len(code_of(url, ["VACUUM"])) == 2
        execute(url, "CREATE TABLE plain (id integer PRIMARY KEY)")
        assert code_of(url, ["VACUUM plain"]) == []
        assert code_of(url, ["VACUUM t"], ("public.zap",)) == []


GIN = (
    "CREATE FUNCTION mycmp(a int4, b int4) RETURNS int4 LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM zap_rows(); RETURN btint4cmp(a, b); END $$",
    "CREATE OPERATOR CLASS my_gin_ops FOR TYPE int4[] USING gin AS "
    "OPERATOR 1 &&(anyarray, anyarray), OPERATOR 2 @>(anyarray, anyarray), "
    "OPERATOR 3 <@(anyarray, anyarray), OPERATOR 4 =(anyarray, anyarray), "
    "FUNCTION 1 mycmp(int4, int4), FUNCTION 2 ginarrayextract(anyarray, internal, internal), "
    "FUNCTION 3 ginqueryarrayextract(anyarray, internal, int2, internal, internal, internal, "
    "internal), FUNCTION 4 ginarrayconsistent(internal, int2, anyarray, int4, internal, "
    "internal, internal, internal), STORAGE int4",
    "CREATE TABLE g (id integer, arr int4[])",
    "CREATE INDEX g_gin ON g USING gin (arr my_gin_ops) WITH (fastupdate = on)",
    "CREATE INDEX g_expr_gin ON g USING gin ((ARRAY[zap(id)]))",
)


def test_a_plain_vacuum_names_a_gin_indexs_operator_class_not_its_expressions(
    home: Path,
) -> None:
    """The entries a write left pending are merged with the operator class's comparison;
    the expressions were evaluated as the rows were written. What was named runs."""
    with postgresql(home, *GIN) as (_, url):
        assert code_of(url, ["VACUUM g"]) == [
            "index g_gin on public.g (operator class my_gin_ops) orders its entries with "
            "public.mycmp(), a user-defined function that may write (VACUUM runs it)"
        ]
        execute(url, "INSERT INTO g SELECT i, ARRAY[i] FROM generate_series(1, 30) i")
        before = scalar(url, "SELECT count(*) FROM victim")
        execute(url, "VACUUM g")
        assert scalar(url, "SELECT count(*) FROM victim") < before


def test_a_brin_index_of_a_partition_is_named_for_its_parents_vacuum(home: Path) -> None:
    with postgresql(
        home,
        "CREATE TABLE parted (id integer, v integer) PARTITION BY RANGE (id)",
        "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000)",
        "CREATE INDEX parted_1_brin ON parted_1 USING brin (zap(v))",
    ) as (_, url):
        assert code_of(url, ["VACUUM parted"]) == [
            "index parted_1_brin on public.parted_1 evaluates public.zap(), a user-defined "
            "function that may write (VACUUM runs it)"
        ]


def test_maintenance_without_statistics_waits_before_a_vacuum_that_runs_code(
    home: Path,
) -> None:
    """The plain VACUUM of `--no-update-stats` ran the index's function unasked: the
    step now waits, and a yes runs it (what was named was real)."""
    with postgresql(home, *BRIN) as (config, url):
        execute(url, ADDED, "DELETE FROM t WHERE id % 2 = 0")
        before = scalar(url, "SELECT count(*) FROM victim")
        job = {"type": "full", "tables": ["t"], "update_stats": False}

        preview = commands.plan_job(config, "maintenance", job)
        run = commands.run_job(config, "maintenance", job)

        planned = next(s for s in preview.steps if s.tool == "optimize_table")
        assert planned.sql == ['VACUUM "t"'] and planned.risk_level == "high"
        step = next(s for s in run.steps if s.tool == "optimize_table")
        assert run.status == "waiting_approval" and step.status == "waiting_approval"
        assert step.risk_level == "high" and SAID_BRIN in step.reasons
        assert scalar(url, "SELECT count(*) FROM victim") == before

        commands.decide_steps(config, run.run_id, "approved", step=step.index)
        resumed = commands.resume_run(config, run.run_id)
        done = next(s for s in resumed.steps if s.index == step.index)
        assert done.status == "succeeded", (done.error, resumed.error)
        assert scalar(url, "SELECT count(*) FROM victim") < before


DOMAIN = (
    "CREATE DOMAIN stamped AS integer DEFAULT zap(7)",
    "CREATE DOMAIN restamped AS stamped",
)
SAID_DOMAIN = (
    "the default of public.refs.log_id (of domain stamped) calls public.zap(), a "
    "user-defined function that may write (a foreign key's SET DEFAULT runs it)"
)


def test_a_domains_default_that_a_set_default_takes_is_named_and_waits(home: Path) -> None:
    with postgresql(home, *LOGS["postgresql"], *DOMAIN) as (config, url):
        execute(
            url,
            "CREATE TABLE refs (id integer PRIMARY KEY, log_id stamped "
            "REFERENCES logs ON DELETE SET DEFAULT)",
            "INSERT INTO refs SELECT g, g FROM generate_series(1, 60) g",
        )
        before = scalar(url, "SELECT count(*) FROM victim")

        run = commands.run_job(config, "log_cleanup", PURGE)

        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert run.status == "waiting_approval" and step.risk_level == "high"
        assert SAID_DOMAIN in (step.estimate or {}).get("user_code", []), step.estimate
        assert scalar(url, "SELECT count(*) FROM victim") == before
        assert scalar(url, "SELECT count(*) FROM logs") == 60


def test_an_insert_that_leaves_a_domain_column_out_names_its_default(home: Path) -> None:
    """A domain over the domain keeps its default; a column with a default of its own
    (or one the INSERT gives) runs none of the domain's, and is named only when its own
    calls code."""
    with postgresql(
        home,
        *DOMAIN,
        "CREATE TABLE w (id integer PRIMARY KEY, a stamped, b restamped, c stamped DEFAULT 0)",
    ) as (_, url):
        config = sql_tool(home, url, "insert_w", "INSERT INTO {table} (id) VALUES (1)")
        plan = one_step_plan("maintenance", "db", "postgresql", "insert_w", {"table": "w"})
        before = scalar(url, "SELECT count(*) FROM victim")

        run = commands.apply_plan(config, plan)

        step = run.steps[0]
        assert run.status == "waiting_approval" and step.risk_level == "high"
        said = sorted(s.split(",")[0] for s in step.estimate["user_code"])
        assert said == [
            "the default of public.w.a (of domain stamped) calls public.zap()",
            "the default of public.w.b (of domain restamped) calls public.zap()",
        ]
        assert scalar(url, "SELECT count(*) FROM victim") == before
        # What was named runs: the server takes both domains' defaults.
        execute(url, "INSERT INTO w (id) VALUES (1)")
        assert scalar(url, "SELECT count(*) FROM victim") == before - 2


# A range type whose subtype_diff (a plain PL/pgSQL function, which any user may make)
# writes: the catalog's range_ops calls it as a GiST build or insert weighs where each
# entry goes, and ANALYZE as it makes the range's histograms, an expression's too.
RANGE = (
    "CREATE FUNCTION zdiff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM zap_rows(); RETURN a - b; END $$",
    "CREATE TYPE zrange AS RANGE (subtype = float8, subtype_diff = zdiff)",
    "INSERT INTO victim SELECT generate_series(101, 20000)",
    "CREATE TABLE r (id integer, span zrange)",
    "CREATE INDEX r_gist ON r USING gist (span)",
    "CREATE TABLE e (id integer)",
    "CREATE INDEX e_expr ON e ((zrange(id, id + 1)))",
    "INSERT INTO r SELECT g, zrange(g, g + 1) FROM generate_series(1, 600) g",
    "INSERT INTO e SELECT generate_series(1, 600)",
)


def test_an_index_over_a_range_type_names_the_types_functions_it_runs(home: Path) -> None:
    """Neither index names zdiff(): its entries' type does. What was named runs."""
    said_r = (
        "index r_gist on public.r (entries of type zrange) orders its entries with "
        "public.zdiff(), a user-defined function that may write"
    )
    with postgresql(home, *RANGE) as (_, url):
        for rebuild in ("REINDEX TABLE r", "VACUUM FULL r", "CLUSTER r USING r_gist"):
            assert code_of(url, [rebuild]) == [f"{said_r} (a rebuild runs it)"]
        # A GiST index's cleanup compares no entries.
        assert code_of(url, ["VACUUM r"]) == []
        # (The expression calls the type's constructor, the server's code: not named.)
        assert code_of(url, ["ANALYZE e"]) == [
            "index e_expr on public.e (entries of type zrange) orders its entries with "
            "public.zdiff(), a user-defined function that may write (ANALYZE runs it)"
        ]
        trusted = ("public.zdiff",)
        assert code_of(url, ["REINDEX TABLE r", "ANALYZE e"], trusted) == []
        for statement in ("REINDEX TABLE r", "ANALYZE e"):
            before = scalar(url, "SELECT count(*) FROM victim")
            execute(url, statement)
            assert scalar(url, "SELECT count(*) FROM victim") < before, statement


# A partitioned table whose key's operator class compares with a function that writes,
# and another whose key's expression calls one.
PARTITIONED = (
    "CREATE FUNCTION icmp(a int4, b int4) RETURNS int4 LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM zap_rows(); RETURN btint4cmp(a, b); END $$",
    "CREATE OPERATOR CLASS my_int_ops FOR TYPE int4 USING btree AS OPERATOR 1 <, "
    "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 icmp(int4, int4)",
    "CREATE TABLE parted (id integer, v integer) PARTITION BY RANGE (v my_int_ops)",
    "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000)",
    "CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (1000) TO (2000)",
    "CREATE TABLE keyed (id integer, v integer) PARTITION BY RANGE ((zap(v)))",
    "CREATE TABLE keyed_1 PARTITION OF keyed FOR VALUES FROM (0) TO (1000)",
)


def written_code(url: str, statement: str, trusted: tuple[str, ...] = ()) -> list[str]:
    """What the estimate says a row write runs, on a session without JIT as aishell's
    (which compiled the catalog read for seconds over the partitioned tables)."""
    engine = create_engine(url, connect_args={"options": "-c jit=off"})
    try:
        with engine.connect() as conn:
            actions = write_actions(written(statement, "postgresql"))
            return user_code(conn, actions, trusted, {})
    finally:
        engine.dispose()


def test_a_partition_key_names_the_code_that_routes_and_prunes_its_rows(home: Path) -> None:
    """A DELETE whose condition prunes partitions compares it with the key's operator
    class; an INSERT routes each row through the key's expression. What was named runs."""
    said = (
        "the partition key of public.parted (operator class my_int_ops) calls public.icmp(), "
        "a user-defined function that may write"
    )
    with postgresql(home, *PARTITIONED) as (_, url):
        assert written_code(url, "DELETE FROM parted WHERE v < 5") == [f"{said} (DELETE runs it)"]
        assert written_code(url, "INSERT INTO keyed VALUES (1, 1)") == [
            "the partition key of public.keyed calls public.zap(), a user-defined function "
            "that may write (INSERT runs it)"
        ]
        # A partition written on its own is routed by no key of its parent's.
        assert written_code(url, "DELETE FROM parted_1 WHERE v < 5") == []
        assert written_code(url, "DELETE FROM parted WHERE v < 5", ("public.icmp",)) == []
        before = scalar(url, "SELECT count(*) FROM victim")
        execute(url, "DELETE FROM parted WHERE v < 5")
        assert scalar(url, "SELECT count(*) FROM victim") < before


def test_a_purge_of_a_table_whose_partition_key_runs_code_waits(home: Path) -> None:
    """The purge's DELETE prunes the partitions its cutoff rules out with the key's
    operator class: named in the estimate, the step waits, and no row is deleted."""
    with postgresql(
        home,
        "CREATE FUNCTION tscmp(a timestamp, b timestamp) RETURNS int4 LANGUAGE plpgsql "
        "IMMUTABLE AS $$ BEGIN RETURN timestamp_cmp(a, b); END $$",
        "CREATE OPERATOR CLASS my_ts_ops FOR TYPE timestamp USING btree AS OPERATOR 1 <, "
        "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
        "FUNCTION 1 tscmp(timestamp, timestamp)",
        "CREATE TABLE logs (id integer, created_at timestamp NOT NULL UNIQUE, n integer) "
        "PARTITION BY RANGE (created_at my_ts_ops)",
        "CREATE TABLE logs_all PARTITION OF logs FOR VALUES FROM (MINVALUE) TO (MAXVALUE)",
        LOGS["postgresql"][1],
        "CREATE OR REPLACE FUNCTION tscmp(a timestamp, b timestamp) RETURNS int4 "
        "LANGUAGE plpgsql IMMUTABLE AS "
        "$$ BEGIN PERFORM zap_rows(); RETURN timestamp_cmp(a, b); END $$",
    ) as (config, url):
        before = scalar(url, "SELECT count(*) FROM victim")

        run = commands.run_job(config, "log_cleanup", PURGE)

        step = next(s for s in run.steps if s.tool == "delete_old_records")
        said = (
            "the partition key of public.logs (operator class my_ts_ops) calls public.tscmp(), "
            "a user-defined function that may write (DELETE runs it)"
        )
        assert run.status == "waiting_approval" and step.risk_level == "high", run.error
        assert said in (step.estimate or {}).get("user_code", []), step.estimate
        assert scalar(url, "SELECT count(*) FROM victim") == before
        assert scalar(url, "SELECT count(*) FROM logs") == 60
