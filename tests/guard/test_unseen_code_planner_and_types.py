"""Code of a database's own that PostgreSQL runs unseen, each case caused on the real
server and traced into a file through COPY ... TO PROGRAM (which a read-only transaction
does not stop):

- the planner inlines a SQL-language function of an index predicate and folds the
  calls of constants it finds there, or a call whose arguments hold no column however
  they are wrapped (an array, a named argument): in any read of the table, a dry run's;
- a read of a partitioned table reads its foreign partition: file_fdw runs its program;
- REINDEX, ANALYZE, INSERT and amcheck call an index's operator class's functions;
- ANALYZE calls a column's range type's subtype_diff;
- the catalog queries of the guard itself compare with exact pg_catalog operators, so
  an operator a database defines in public with an exact signature is never called.

A read that may run such code is refused (the safe side); a step that writes names the
function in its estimate and waits for a person's yes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from aishell import commands
from aishell.config.models import Config
from aishell.errors import TargetError
from aishell.guard.hidden import hidden_writers
from aishell.guard.usercode import user_code
from aishell.guard.usercodeactions import Action, maintenance_actions
from aishell.tool.context import ToolContext
from tests.guard.test_guard import execute, scalar
from tests.helpers import one_step_plan, use_target
from tests.services import scratch_postgresql


@contextmanager
def server_folder() -> Iterator[Path]:
    """A folder the server's account can reach and write (pytest's are its user's own)."""
    folder = Path(tempfile.mkdtemp(prefix="fixcode_"))
    try:
        os.chmod(folder, 0o777)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def traced(home: Path, *statements: str) -> Iterator[tuple[Config, str, Path]]:
    """A database of the test's own whose trace(tag) (IMMUTABLE plpgsql) appends the tag
    to a file through COPY ... TO PROGRAM, which a read-only transaction allows; yields
    the config, the database's URL and the file."""
    with (
        server_folder() as folder,
        scratch_postgresql(name=f"fixcode_{uuid.uuid4().hex[:10]}") as url,
    ):
        log = folder / "trace"
        execute(
            url,
            "CREATE FUNCTION trace_copy(tag text) RETURNS void LANGUAGE plpgsql AS "
            "$$ BEGIN EXECUTE pg_catalog.format('COPY (SELECT %L) TO PROGRAM %L', tag, "
            f"'cat >> {log}'); END $$",
            "CREATE FUNCTION trace(tag text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
            "$$ BEGIN PERFORM trace_copy(tag); RETURN true; END $$",
            *statements,
        )
        log.unlink(missing_ok=True)  # what making them ran
        yield use_target(home, url), url, log


def traces(log: Path) -> list[str]:
    return sorted(log.read_text().split()) if log.exists() else []


def code_of(url: str, actions: list[Action]) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = ToolContext(conn, "postgresql", "db")
            return user_code(conn, actions, ctx.trusted_functions, ctx.run_cache)
    finally:
        engine.dispose()


def hidden_of(url: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            return hidden_writers("postgresql", cursor)
    finally:
        engine.dispose()


def dry_runs(config: Config, table: str) -> None:
    """Full maintenance and log cleanup of the table, dry runs: previews and reads."""
    run = commands.run_job(config, "maintenance", {"type": "full", "tables": [table]}, dry_run=True)
    assert run.status in ("completed", "failed"), run.error
    # A table it cannot purge (no key to walk) is refused before anything is read.
    with contextlib.suppress(TargetError):
        commands.run_job(
            config,
            "log_cleanup",
            {"table": table, "date_column": "created_at", "retention_days": 1},
            dry_run=True,
        )


# --- A: what the planner evaluates while reading a table's definition -----------------

PLANNED = {
    "inlined-sql": (
        "CREATE FUNCTION f_inl(x text) RETURNS boolean LANGUAGE sql IMMUTABLE AS "
        "$$ SELECT public.trace('inline_index') AND x IS NOT NULL $$",
        "CREATE INDEX ON t_pl (v) WHERE f_inl(v)",
    ),
    "array-argument": (
        "CREATE FUNCTION trace_arr(x text[]) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
        "$$ BEGIN RETURN trace(x[1]); END $$",
        "CREATE INDEX ON t_pl (v) WHERE trace_arr(array['array_arg'])",
    ),
    "named-argument": ("CREATE INDEX ON t_pl (v) WHERE trace(tag => 'named_arg')",),
    "row-and-case": (
        "CREATE FUNCTION trace_row(x record) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
        "$$ BEGIN RETURN trace('row_arg'); END $$",
        "CREATE INDEX ON t_pl ((CASE WHEN v IS NULL THEN trace_row(ROW(1, 'a')) END))",
    ),
    "statistics-nested": (
        "CREATE STATISTICS t_pl_s ON (v || coalesce(trace(lower('NESTED'))::text, '')), id "
        "FROM t_pl",
    ),
}
PLAIN_TABLE = (
    "CREATE TABLE t_pl (id integer PRIMARY KEY, v text, created_at timestamptz)",
    "INSERT INTO t_pl SELECT g, 'x' || g, now() - g * interval '1 day' "
    "FROM generate_series(1, 50) g",
)


@pytest.mark.parametrize("case", list(PLANNED))
def test_a_dry_run_folds_no_user_function_of_a_tables_definition(home: Path, case: str) -> None:
    with traced(home, *PLAIN_TABLE, *PLANNED[case]) as (config, url, log):
        assert "t_pl" in hidden_of(url).relations
        dry_runs(config, "t_pl")
        assert traces(log) == []


def test_a_function_of_columns_only_leaves_reads_alone(home: Path) -> None:
    """lower_unaccent(name) runs as rows are written, never while planning a read."""
    with traced(
        home,
        *PLAIN_TABLE,
        "CREATE FUNCTION lower_unaccent(x text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS "
        "$$ BEGIN RETURN lower(x); END $$",
        "CREATE INDEX ON t_pl (lower_unaccent(v))",
        "CREATE INDEX ON t_pl (v) WHERE lower_unaccent(v) <> ''",
    ) as (_, url, _log):
        assert "t_pl" not in hidden_of(url).relations


# --- B: a foreign partition read through its parent -----------------------------------


def test_a_partitioned_tables_foreign_partition_is_read_from_elsewhere(home: Path) -> None:
    with (
        server_folder() as folder,
        traced(
            home,
            "CREATE EXTENSION file_fdw",
            "CREATE SERVER fixcode_files FOREIGN DATA WRAPPER file_fdw",
            "CREATE TABLE p_logs (id integer, created_at timestamptz) "
            "PARTITION BY RANGE (created_at)",
            "CREATE TABLE p_new PARTITION OF p_logs FOR VALUES FROM ('2020-01-01') TO (MAXVALUE)",
            "CREATE FOREIGN TABLE p_old PARTITION OF p_logs FOR VALUES FROM (MINVALUE) "
            f"TO ('2020-01-01') SERVER fixcode_files OPTIONS (program 'touch {folder / 'ran'}; "
            "echo 1,2019-01-01', format 'csv')",
            "CREATE VIEW v_logs AS SELECT id FROM p_logs",
        ) as (config, url, _log),
    ):
        found = hidden_of(url).relations
        assert "p_logs" in found and "p_old" in found and "v_logs" in found, found
        dry_runs(config, "p_logs")
        assert not (folder / "ran").exists()


# --- C: an index's operator class -----------------------------------------------------

OPERATOR_CLASS = (
    "CREATE EXTENSION pgstattuple",
    "CREATE FUNCTION rcmp(a numeric, b numeric) RETURNS integer LANGUAGE plpgsql IMMUTABLE "
    "AS $$ BEGIN PERFORM trace('opclass'); RETURN pg_catalog.numeric_cmp(b, a); END $$",
    "CREATE OPERATOR CLASS rev_num_ops FOR TYPE numeric USING btree AS "
    "OPERATOR 1 >, OPERATOR 2 >=, OPERATOR 3 =, OPERATOR 4 <=, OPERATOR 5 <, "
    "FUNCTION 1 rcmp(numeric, numeric)",
    "CREATE TABLE t_oc (id integer PRIMARY KEY, v numeric)",
    "INSERT INTO t_oc SELECT g, g FROM generate_series(1, 200) g",
    "CREATE INDEX t_oc_v ON t_oc (v rev_num_ops)",
)


def test_an_operator_classs_function_is_named_wherever_the_index_is_built(home: Path) -> None:
    with traced(home, *OPERATOR_CLASS) as (config, url, log):
        statements = ["REINDEX INDEX CONCURRENTLY t_oc_v", "VACUUM (FULL) t_oc", "ANALYZE t_oc"]
        actions = [*maintenance_actions(statements, "postgresql"), Action("INSERT", None, "t_oc")]
        actions.append(Action("CHECK", None, "t_oc", "t_oc_v"))
        for action in actions:
            said = code_of(url, [action])
            assert len(said) == 1 and "public.rcmp()" in said[0], (action, said)
            assert "rev_num_ops" in said[0]
        plan = one_step_plan(
            "maintenance",
            "db",
            "postgresql",
            "rebuild_fragmented_indexes",
            {"table": "t_oc", "fragmentation_threshold": 0, "min_pages": 1},
        )
        step = commands.apply_plan(config, plan).steps[0]
        assert step.status == "waiting_approval" and step.risk_level == "high", step
        assert any("public.rcmp()" in s for s in step.estimate["user_code"]), step.estimate
        assert traces(log) == []


# --- D: a column's type, for ANALYZE --------------------------------------------------

RANGE = (
    "CREATE FUNCTION rdiff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE "
    "AS $$ BEGIN PERFORM trace('subtype_diff'); RETURN a - b; END $$",
    "CREATE TYPE myrange AS RANGE (subtype = float8, subtype_diff = rdiff)",
    "CREATE DOMAIN myranges AS myrange[]",
    "CREATE TABLE t_rng (id integer PRIMARY KEY, r myrange)",
    "INSERT INTO t_rng SELECT g, myrange(g, g + 1) FROM generate_series(1, 300) g",
    "CREATE TABLE t_rngs (id integer PRIMARY KEY, rs myranges)",
)


def test_analyze_names_a_columns_range_type_and_waits_for_a_yes(home: Path) -> None:
    with traced(home, *RANGE) as (config, url, log):
        for table in ("t_rng", "t_rngs"):
            said = code_of(url, [Action("ANALYZE", None, table)])
            assert len(said) == 1 and "public.rdiff()" in said[0], said
            assert code_of(url, [Action("DELETE", None, table)]) == []
        preview = commands.plan_job(config, "maintenance", {"type": "quick"})
        analyze = next(s for s in preview.steps if s.tool == "update_table_statistics")
        assert analyze.risk_level == "high" and analyze.requires_approval
        assert any("public.rdiff()" in s for s in analyze.estimate["user_code"])
        plan = one_step_plan(
            "maintenance", "db", "postgresql", "update_table_statistics", {"tables": ["t_rng"]}
        )
        step = commands.apply_plan(config, plan).steps[0]
        assert step.status == "waiting_approval" and step.risk_level == "high", step
        assert (
            scalar(url, "SELECT count(*) FROM pg_catalog.pg_stats WHERE tablename = 't_rng'") == 0
        )
        assert traces(log) == []


# --- E: the guard's own catalog queries, in a database that shadows operators ----------

SHADOWS = (
    "CREATE FUNCTION sh_ge(a oid, b integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM trace('shadow_ge'); RETURN a::bigint >= b; END $$",
    "CREATE OPERATOR public.>= (LEFTARG = oid, RIGHTARG = integer, FUNCTION = sh_ge)",
    "CREATE FUNCTION sh_eq(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM trace('shadow_eq'); RETURN a = b::oid; END $$",
    "CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = sh_eq)",
    "CREATE FUNCTION sh_in(a name, b text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM trace('shadow_name'); RETURN a::text = b; END $$",
    "CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = sh_in)",
)


def test_the_guards_catalog_queries_call_no_operator_of_the_database(home: Path) -> None:
    with traced(home, *SHADOWS, *OPERATOR_CLASS[1:3], *RANGE[:2], *PLAIN_TABLE) as (
        _c,
        url,
        log,
    ):
        execute(
            url,
            "CREATE INDEX ON t_pl (v) WHERE trace('planned')",
            "CREATE TABLE t_rng (id integer, r myrange)",
        )
        log.unlink(missing_ok=True)
        found = hidden_of(url)
        assert "t_pl" in found.relations
        said = code_of(url, [Action("ANALYZE", None, "t_rng")])
        assert any("public.rdiff()" in s for s in said), said
        assert traces(log) == []
