"""The code of a database's own that the server runs while aishell maintains: an index
expression, a generated column, a default, a check or domain constraint, a row-security
policy, a trigger or an event trigger calling a user-defined function is named in the
step's estimate and makes the step at least high risk (IMMUTABLE is a promise, not a
proof), unless the target's config trusts every function it calls; an archive table
holds only plain stored columns of the source's types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config import Config, load_config
from aishell.toolcontext import ToolContext
from aishell.usercode import Action, maintenance_actions, user_code
from tests.helpers import use_target
from tests.services import scratch_mysql, scratch_postgresql

# Deletes a row of victim whenever it is called, though declared IMMUTABLE (PL/pgSQL
# refuses a DELETE of its own there, not a call of a function that deletes).
PG_ZAP = (
    "CREATE FUNCTION zap_rows() RETURNS void LANGUAGE sql AS "
    "'DELETE FROM victim WHERE id = (SELECT min(id) FROM victim)'",
    "CREATE FUNCTION zap(x integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN PERFORM zap_rows(); RETURN x; END $$",
)
PG_VICTIM = (
    "CREATE TABLE victim (id integer PRIMARY KEY)",
    "INSERT INTO victim SELECT generate_series(1, 100)",
)


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def with_trusted(home: Path, config: Config, *functions: str) -> Config:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["trusted_functions"] = list(functions)
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


@contextmanager
def postgresql(home: Path, *statements: str) -> Iterator[tuple[Config, str]]:
    with scratch_postgresql() as url:
        execute(url, *PG_VICTIM, *PG_ZAP, *statements)
        yield use_target(home, url), url


def code_of(url: str, statements: list[str], trusted: tuple[str, ...] = ()) -> list[str]:
    """What the estimate says runs for the statements (maintenance statements only)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name
            actions = list(maintenance_actions(statements, dialect))
            ctx = ToolContext(conn, dialect, "db", trusted_functions=trusted)
            return user_code(conn, actions, ctx.trusted_functions, ctx.run_cache)
    finally:
        engine.dispose()


# --- the finding: a quick ANALYZE that deleted a row ----------------------------------


def test_an_expression_index_over_a_writing_immutable_function_stops_quick_maintenance(
    home: Path,
) -> None:
    with postgresql(
        home,
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "INSERT INTO t SELECT g, g FROM generate_series(1, 50) g",
        "CREATE INDEX t_expr_idx ON t (zap(v))",
        "CREATE TABLE plain (id integer PRIMARY KEY)",
    ) as (config, url):
        before = scalar(url, "SELECT count(*) FROM victim")

        preview = commands.plan_job(config, "maintenance", {"type": "quick"})
        run = commands.run_job(config, "maintenance", {"type": "quick"})

        analyze = next(s for s in preview.steps if s.tool == "update_table_statistics")
        assert analyze.risk_level == "high" and analyze.requires_approval
        said = (
            "index t_expr_idx on public.t evaluates public.zap(), a user-defined function "
            "that may write (ANALYZE runs it)"
        )
        assert said in analyze.reasons
        assert said in (analyze.estimate or {})["user_code"]
        step = next(s for s in run.steps if s.tool == "update_table_statistics")
        assert run.status == "waiting_approval" and step.status == "waiting_approval"
        assert step.risk_level == "high" and said in step.reasons
        assert scalar(url, "SELECT count(*) FROM victim") == before


def test_a_trusted_function_leaves_the_step_at_its_own_risk(home: Path) -> None:
    with postgresql(
        home,
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "CREATE INDEX t_expr_idx ON t (zap(v))",
    ) as (config, url):
        config = with_trusted(home, config, "public.zap")

        preview = commands.plan_job(config, "maintenance", {"type": "quick"})

        analyze = next(s for s in preview.steps if s.tool == "update_table_statistics")
        assert analyze.risk_level == "low" and not analyze.requires_approval
        assert "user_code" not in (analyze.estimate or {})
        # A name without its schema trusts it in every schema.
        assert code_of(url, ["ANALYZE t"], ("zap",)) == []
        assert code_of(url, ["ANALYZE t"], ("other.zap",)) != []
