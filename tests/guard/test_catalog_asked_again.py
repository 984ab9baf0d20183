"""What a run's guards learned from the catalog stands only while the definitions it was
read from may be taken to stand: a step that changes a definition, and time in which
another session may, make the next step's guard ask the catalog again. Each case reads a
view that is harmless when the run first reads it and is then replaced by one that ends
a session of the test's own (which no read-only session stops): the later read must be
refused, and the session left alive."""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.guard import memory
from aishell.handlers import Handler
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from aishell.tool.context import ToolContext
from tests.guard.test_guard import handlers, site_config, tool_yaml, write_tool

__all__ = ["handlers"]  # the fixture, found by pytest in this module

HARMLESS = "CREATE VIEW v AS SELECT id FROM t"
# Ends every session whose pid the test wrote in victims.
ENDS_VICTIMS = (
    "CREATE FUNCTION end_victims() RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_terminate_backend(pid) FROM victims; RETURN 1; END $$"
)
# What the view becomes: reading it runs end_victims().
ARMED = "CREATE OR REPLACE VIEW v AS SELECT end_victims() AS id"
READ_VIEW = "SELECT count(*) FROM v"


@pytest.fixture
def database() -> Iterator[str]:
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
            conn.execute(text("INSERT INTO t SELECT generate_series(1, 5)"))
            conn.execute(text("CREATE TABLE victims (pid int)"))
            conn.execute(text(HARMLESS))
            conn.execute(text(ENDS_VICTIMS))
        engine.dispose()
        yield url


@pytest.fixture
def victim(database: str) -> Iterator[psycopg.Connection[Any]]:
    """A session of the test's own, which the armed view would end."""
    dsn = database.replace("postgresql+psycopg://", "postgresql://")
    conn = psycopg.connect(dsn, autocommit=True)
    other = psycopg.connect(dsn, autocommit=True)
    other.execute("INSERT INTO victims VALUES (%s)", (conn.info.backend_pid,))
    other.close()
    yield conn
    conn.close()


def _count(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Counts its table and reads the view (a read passes whatever the tool declared)."""
    sql = f"SELECT count(*) FROM {ctx.quote(params['table'])}"
    rows = ctx.connection.execute(text(sql)).scalar_one()
    return {"rows": rows, "seen": ctx.connection.execute(text(READ_VIEW)).scalar_one()}


def _arm_in_step(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    ctx.connection.execute(text(ARMED))
    return {"armed": True}


def _arm_elsewhere(url: str) -> Any:
    """Another session replaces the view while the run goes on (the step only reads)."""

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(ARMED))
        engine.dispose()
        ctx.connection.execute(text("SELECT 1")).all()
        return {"armed": True}

    return run


def _run(home: Path, url: str, module: types.ModuleType, arming: Handler, risk: str) -> Any:
    module.reader = Handler(sql_templates=("SELECT count(*) FROM {table}",), run_fn=_count)
    module.arming = arming
    folder = home / "site_tools"
    for name, level in (("reader", "safe"), ("arming", risk)):
        spec = {"handler": f"testguard.{name}"}
        write_tool(folder, tool_yaml(name, level, {"postgresql": spec}, example={"table": "t"}))
    config = site_config(home, url, folder)
    steps = tuple(
        Step(f"step_{i}", tool, {"table": "t"})
        for i, tool in enumerate(("reader", "arming", "reader"))
    )
    plan = Plan("maintenance", "db", "postgresql", {"type": "reader"}, steps)
    return commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.HIGH))


def _assert_refused_and_alive(result: Any, victim: psycopg.Connection[Any]) -> None:
    first, arming, last = result.steps
    assert first.status == "succeeded", first.error
    assert arming.status == "succeeded", arming.error
    assert last.status == "failed"
    assert "statement refused" in (last.error or ""), last.error
    assert victim.execute("SELECT 1").fetchone() == (1,)


def test_a_view_a_step_replaced_is_read_from_the_catalog_again(
    home: Path, database: str, handlers: types.ModuleType, victim: psycopg.Connection[Any]
) -> None:
    arming = Handler(sql_templates=(ARMED,), run_fn=_arm_in_step, risk=RiskLevel.HIGH)
    _assert_refused_and_alive(_run(home, database, handlers, arming, "high"), victim)


def test_a_view_another_session_replaced_is_read_again_once_the_reading_is_old(
    home: Path,
    database: str,
    handlers: types.ModuleType,
    victim: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every step starts after the reading is too old: the interval itself is no matter here.
    monkeypatch.setattr(memory, "CATALOG_READ_FOR_SECONDS", 0.0)
    arming = Handler(sql_templates=("SELECT 1",), run_fn=_arm_elsewhere(database))
    _assert_refused_and_alive(_run(home, database, handlers, arming, "safe"), victim)


@pytest.mark.parametrize(
    ("sql", "keeps"),
    [
        ("DELETE FROM t WHERE id < 3", True),
        ("/* note */ VACUUM (ANALYZE) t", True),
        ("SET lock_timeout = '1s'", True),
        ("SET search_path = evil, pg_catalog", False),
        ("SET ROLE owner", False),
        ("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", False),
        ("ALTER TABLE t ADD COLUMN x int", False),
        ("DROP VIEW v", False),
        ("CALL p()", False),
        ("-- a comment\nCOMMENT ON TABLE t IS 'x'", False),
        ("", False),
    ],
)
def test_which_writes_keep_what_was_learned(sql: str, keeps: bool) -> None:
    learned = memory.GuardMemory(reads={"SELECT 1"})
    learned.wrote(sql, "postgresql")
    assert (learned.reads == {"SELECT 1"}) is keeps
