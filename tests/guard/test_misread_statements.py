"""What a step's own statements hide from the reading that judged them.

A statement the server reads otherwise than the parser (MariaDB's executable comments,
a name holding U+00A0) is no SQL tool's (the tool does not load), and never runs, even as
a handler's own declared statement of a step approved at its risk: its estimate, its
shape and its approval were the parser's reading. A comment anywhere in a maintenance
statement hides neither its verb nor its names from the estimate of the code it runs
(MariaDB's `#`, PostgreSQL's nested comments). ALTER
TABLE is a rebuild of medium risk only when FORCE is all it does. A body's call of a
routine whose name holds U+00A0, a space, $ or (on MariaDB) a backtick is followed as
any other."""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.errors import CatalogError
from aishell.guard.usercodeactions import maintenance_actions
from aishell.handlers import Handler
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from aishell.tool.context import ToolContext
from tests.guard.test_body_writes import LOGS, _purge_preview, assert_fires_ledger
from tests.guard.test_guard import (
    Cases,
    dialect_of,
    execute,
    fingerprint,
    handler_tool,
    handlers,
    make_tables,
    refusals,
    run_one,
    scalar,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)
from tests.guard.test_user_code import PG_VICTIM, PG_ZAP
from tests.guard.test_where_comments_end import ZAP
from tests.helpers import one_step_plan

__all__ = ["handlers"]  # the fixture, found by pytest in this module


def _sql_tool(home: Path, url: str, name: str, sql: str | list[str], risk: str) -> Config:
    folder = home / f"site_{name}"
    write_tool(folder, tool_yaml(name, risk, {dialect_of(url): {"sql": sql}}))
    return site_config(home, url, folder)


# --- read otherwise by the server: never sent ----------------------------------------

MISREAD = [
    ("mysql", "DELETE FROM {table} WHERE id < 0 /*! OR 1 = 1 */"),
    ("mysql", "DELETE FROM {table} WHERE id < 0 /*M!100000 OR 1 = 1 */"),
    # zap<U+00A0> deletes every row of `other`; the parser reads a call of zap.
    ("postgresql", "DELETE FROM {table} WHERE id < 0 AND zap\u00a0(1) = 1"),
]


# Read otherwise in a step that only reads: still no tool of the site's may hold it.
MISREAD_READS = [
    ("mysql", "SELECT count(*) FROM {table} /*!, (SELECT 1) AS x */"),
    ("postgresql", "SELECT count(*) FROM {table} WHERE zap\u00a0(1) = 1"),
]


@pytest.mark.parametrize(
    ("dialect", "sql", "risk"),
    [(d, s, "high") for d, s in MISREAD] + [(d, s, "safe") for d, s in MISREAD_READS],
)
def test_a_sql_tool_whose_statement_the_server_reads_otherwise_does_not_load(
    home: Path, tmp_path: Path, dialect: str, sql: str, risk: str
) -> None:
    """Whatever its risk: its shape and risk would be the parser's reading."""
    with scratch_database(dialect, tmp_path) as url:
        config = _sql_tool(home, url, "hidden_delete", sql, risk)
        with pytest.raises(CatalogError, match="would not run it as it reads"):
            run_one(config, url, "hidden_delete", {"table": "t"})


@pytest.mark.parametrize(("dialect", "sql"), MISREAD)
def test_a_misread_statement_never_runs_even_as_the_approved_handlers_own(
    home: Path, tmp_path: Path, handlers: types.ModuleType, dialect: str, sql: str
) -> None:
    """Tagged high and approved: the parser's DELETE of no row is what was approved; the
    server's deletes every row."""
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(url, *ZAP[dialect])
        handler = Handler(
            sql_templates=(sql,),
            run_fn=lambda params, ctx: _send(sql, params, ctx),
            risk=RiskLevel.HIGH,
        )
        config = handler_tool(home, url, handlers, "hidden_delete", handler, "high")

        run = run_one(config, url, "hidden_delete", {"table": "t"})

        step = run.steps[0]
        assert step.status == "failed", step.error
        assert "would not run it as the parser read it" in (step.error or ""), step.error
        assert len(refusals(config, run.run_id)) == 1
        assert fingerprint(url) == (10, 55) and fingerprint(url, "other") == (5, 15)


def _send(sql: str, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    ctx.connection.execute(text(sql.format(table=ctx.quote(params["table"]))))
    return {}


# --- comments in maintenance statements ----------------------------------------------

COMMENTED = [
    "/* why: /* nightly */ stats */ ANALYZE {table}",
    "ANALYZE /* the one table */ {table}",
    "ANALYZE {table} -- refreshed\n",
]


def test_a_comment_hides_no_maintained_table_from_the_code_it_runs(home: Path) -> None:
    """An ANALYZE of a table whose expression index calls a function that deletes:
    named, high risk, waiting for a yes, whatever comment the statement holds."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url, Cases() as case:
        execute(
            url,
            *PG_VICTIM,
            *PG_ZAP,
            "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
            "INSERT INTO t SELECT g, g FROM generate_series(1, 50) g",
            "CREATE INDEX t_expr_idx ON t (zap(v))",
        )
        plan = one_step_plan("maintenance", "db", "postgresql", "stats", {"table": "t"})
        before = scalar(url, "SELECT count(*) FROM victim")  # the index's build ran zap
        for sql in COMMENTED:
            with case(repr(sql)):
                config = _sql_tool(home, url, "stats", sql, "low")

                run = commands.apply_plan(config, plan)

                step = run.steps[0]
                assert step.status == "waiting_approval", step.error
                assert step.risk_level == "high"
                assert any("t_expr_idx" in s for s in step.estimate["user_code"])
                assert scalar(url, "SELECT count(*) FROM victim") == before


def test_a_nested_comment_hides_no_event_trigger_the_ddl_fires(home: Path) -> None:
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        execute(
            url,
            *PG_VICTIM,
            *PG_ZAP,
            "CREATE TABLE t (id integer PRIMARY KEY)",
            "CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM zap_rows(); END $$",
            "CREATE EVENT TRIGGER aishell_test_misread ON ddl_command_end "
            "EXECUTE FUNCTION on_ddl()",
        )
        sql = "/* a /* b */ c */ COMMENT ON TABLE {table} IS 'kept'"
        config = _sql_tool(home, url, "comment_t", sql, "high")
        plan = one_step_plan("maintenance", "db", "postgresql", "comment_t", {"table": "t"})

        run = commands.apply_plan(config, plan)

        step = run.steps[0]
        assert step.status == "waiting_approval", step.error
        assert any("aishell_test_misread" in s for s in step.estimate["user_code"])
        assert scalar(url, "SELECT count(*) FROM victim") == 100


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mariadb", "# weekly\nOPTIMIZE TABLE t"),
        ("mysql", "OPTIMIZE TABLE /* big */ t -- done\n"),
        ("postgresql", "/* a /* b */ c */ VACUUM (ANALYZE) t"),
    ],
)
def test_each_engines_comments_are_read_by_its_own_rule(dialect: str, sql: str) -> None:
    tables = {(a.schema, a.table) for a in maintenance_actions([sql], dialect)}
    assert tables == {(None, "t")}


# --- ALTER TABLE: a rebuild only when FORCE is all it does ---------------------------


def test_an_alter_that_changes_the_table_beside_force_is_high_risk(
    home: Path, tmp_path: Path
) -> None:
    """ENGINE=MRG_MyISAM empties the table. Tagged medium, the tool is refused; tagged
    high, it waits for a yes that a medium approval does not give."""
    with scratch_database("mysql", tmp_path) as url:
        make_tables(url)
        sql = "ALTER TABLE {table} FORCE, ENGINE=MRG_MyISAM"
        with pytest.raises(CatalogError, match="tagged medium but .* needs at least high"):
            commands.load_catalog(_sql_tool(home, url, "rebuild_m", sql, "medium"))
        hidden = "ALTER TABLE {table} ENGINE=MRG_MyISAM /* FORCE */"
        config = _sql_tool(home, url, "rebuild_h", hidden, "high")
        plan = one_step_plan("maintenance", "db", "mysql", "rebuild_h", {"table": "t"})

        run = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.MEDIUM))

        assert run.steps[0].status == "waiting_approval", run.steps[0].error
        assert fingerprint(url) == (10, 55)


# --- a called function's name -----------------------------------------------------------


def _calling(dialect: str, name: str) -> tuple[str, ...]:
    """logs' trigger calls routine `name` (written as the body writes it), which inserts
    into ledger, whose own trigger then runs."""
    if dialect == "mysql":
        return (
            f"CREATE PROCEDURE {name}(i integer) INSERT INTO ledger VALUES (i)",
            "DROP TRIGGER logs_gone",
            f"CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW CALL {name}(OLD.id)",
            "CREATE TRIGGER ledger_in AFTER INSERT ON ledger FOR EACH ROW SET @x = NEW.id",
        )
    return (
        f"CREATE FUNCTION {name}(i integer) RETURNS void LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO ledger VALUES (i); END$$",
        "CREATE OR REPLACE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$BEGIN PERFORM {name}(OLD.id); RETURN OLD; END$$",
        "CREATE FUNCTION ledger_in() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
        "CREATE TRIGGER ledger_in AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_in()",
    )


@pytest.mark.parametrize(
    ("dialect", "name"),
    [
        ("postgresql", "note\u00a0x"),
        ("postgresql", '"note x"'),
        ("postgresql", "note$x"),
        ("mysql", "note\u00a0x"),
        ("mysql", "`note``x`"),
    ],
)
def test_a_routine_named_with_a_character_no_word_holds_is_followed(
    home: Path, tmp_path: Path, dialect: str, name: str
) -> None:
    with scratch_database(dialect, tmp_path) as url:
        execute(url, *LOGS[dialect], *_calling(dialect, name))

        purge, _config = _purge_preview(home, url)

        assert_fires_ledger(purge)
