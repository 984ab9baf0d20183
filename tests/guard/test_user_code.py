"""The code of a database's own that the server runs while aishell maintains: an index
expression, a generated column, a default, a check or domain constraint, a row-security
policy, a trigger or an event trigger calling a user-defined function is named in the
step's estimate and makes the step at least high risk (IMMUTABLE is a promise, not a
proof), unless the target's config trusts every function it calls; an archive table
holds only plain stored columns of the source's types."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import TargetError
from aishell.guard.usercode import user_code
from aishell.guard.usercodeactions import Action, maintenance_actions
from aishell.tool.context import ToolContext
from tests.guard.test_guard import (
    Cases,
    execute,
    scalar,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)
from tests.helpers import one_step_plan, use_target
from tests.services import scratch_postgresql

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


def code_of(
    url: str,
    statements: list[str],
    trusted: tuple[str, ...] = (),
    run_cache: dict[str, Any] | None = None,
) -> list[str]:
    """What the estimate says runs for the statements (maintenance statements only).
    `run_cache`: a run's, shared by calls as a run's steps share it (the database's code
    read once for them all), else the call's own."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name
            actions = list(maintenance_actions(statements, dialect))
            ctx = ToolContext(conn, dialect, "db", trusted_functions=trusted)
            cache = ctx.run_cache if run_cache is None else run_cache
            return user_code(conn, actions, ctx.trusted_functions, cache)
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

        # A person's yes runs it, and the code with it: what was named was real.
        commands.decide_steps(config, run.run_id, "approved", step=step.index)
        resumed = commands.resume_run(config, run.run_id)
        assert resumed.status == "completed", resumed.error
        assert scalar(url, "SELECT count(*) FROM victim") < before


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


# --- each kind of code, on PostgreSQL --------------------------------------------------


def test_each_maintenance_statement_names_the_code_it_runs(home: Path) -> None:
    with postgresql(
        home,
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "CREATE INDEX t_expr_idx ON t (zap(v))",
        "CREATE INDEX t_part_idx ON t (id) WHERE zap(v) > 0",
        "CREATE INDEX t_plain_idx ON t (v)",
        "CREATE STATISTICS t_stats ON (zap(v)), id FROM t",
        "CREATE TABLE plain (id integer PRIMARY KEY)",
        "CREATE TABLE parted (id integer, v integer) PARTITION BY RANGE (id)",
        "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100)",
        "CREATE INDEX parted_1_idx ON parted_1 (zap(v))",
    ) as (_, url):
        # The database's code is read once (a query of a second here, with a partitioned
        # table): the calls share it as the steps of one run do; each statement's share
        # of it is what is checked.
        run: dict[str, Any] = {}
        analyzed = code_of(url, ['ANALYZE "public"."t", plain'], run_cache=run)
        assert sorted(analyzed) == [
            "index t_expr_idx on public.t evaluates public.zap(), a user-defined function "
            "that may write (ANALYZE runs it)",
            "index t_part_idx on public.t evaluates public.zap(), a user-defined function "
            "that may write (ANALYZE runs it)",
            "statistics object t_stats on public.t evaluates public.zap(), a user-defined "
            "function that may write (ANALYZE runs it)",
        ]
        maintained = ["ANALYZE plain", "VACUUM t", "REINDEX INDEX t_plain_idx"]
        assert code_of(url, maintained, run_cache=run) == []
        assert len(code_of(url, ["VACUUM (ANALYZE) t"], run_cache=run)) == 3
        rebuilt = code_of(url, ["REINDEX TABLE CONCURRENTLY t", "VACUUM (FULL) t"], run_cache=run)
        assert len(rebuilt) == 2 and all("(a rebuild runs it)" in said for said in rebuilt)
        index = 'REINDEX INDEX CONCURRENTLY "public"."t_expr_idx"'
        assert len(code_of(url, [index], run_cache=run)) == 1
        assert len(code_of(url, ["CLUSTER t USING t_plain_idx"], run_cache=run)) == 2
        # A bare ANALYZE analyzes every table; the parent analyzes its partitions.
        assert len(code_of(url, ["ANALYZE"], run_cache=run)) == 4
        assert code_of(url, ["ANALYZE parted"], run_cache=run) == [
            "index parted_1_idx on public.parted_1 evaluates public.zap(), a user-defined "
            "function that may write (ANALYZE runs it)"
        ]


WRITES = (
    "CREATE DOMAIN checked AS integer CHECK (zap(VALUE) > 0)",
    "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM zap_rows(); RETURN NEW; END $$",
    "CREATE TABLE w (id integer PRIMARY KEY, v integer DEFAULT zap(1), "
    "g integer GENERATED ALWAYS AS (zap(id)) STORED, d checked, "
    "CONSTRAINT w_v_check CHECK (zap(v) > 0))",
    "CREATE INDEX w_expr_idx ON w (zap(id))",
    "CREATE TRIGGER w_audit BEFORE DELETE ON w FOR EACH ROW EXECUTE FUNCTION audit()",
)


def sql_tool(home: Path, url: str, name: str, sql: str, risk: str = "medium") -> Config:
    folder = home / f"site_{name}"
    write_tool(folder, tool_yaml(name, risk, {"postgresql": {"sql": sql}}))
    return site_config(home, url, folder)


USER_CODE_RUN = [
    (
        "INSERT INTO {table} (id, d) VALUES (100, 1)",
        [
            "check constraint w_v_check on public.w calls public.zap()",
            "column public.w.d (of domain checked) checks with public.zap()",
            "generated column public.w.g calls public.zap()",
            "index w_expr_idx on public.w evaluates public.zap()",
            "the default of public.w.v calls public.zap()",
        ],
    ),
    (
        "DELETE FROM {table} WHERE id < 0",
        ["trigger w_audit on public.w runs public.audit()"],
    ),
]


def test_a_write_step_names_its_user_code_and_waits_for_a_yes(home: Path) -> None:
    """Each write on one database (neither runs: each waits for a yes)."""
    with postgresql(home, *WRITES) as (_, url), Cases() as case:
        before = scalar(url, "SELECT count(*) FROM victim")
        plan = one_step_plan("maintenance", "db", "postgresql", "write_w", {"table": "w"})
        for sql, expected in USER_CODE_RUN:
            with case(sql):
                config = sql_tool(home, url, "write_w", sql)

                run = commands.apply_plan(config, plan)

                step = run.steps[0]
                assert run.status == "waiting_approval" and step.status == "waiting_approval"
                assert step.risk_level == "high"
                said = sorted(s.split(",")[0] for s in step.estimate["user_code"])
                assert said == expected
                assert all(s in step.reasons for s in step.estimate["user_code"])
                assert scalar(url, "SELECT count(*) FROM victim") == before


def test_an_event_trigger_the_ddl_fires_is_user_code(home: Path) -> None:
    with postgresql(
        home,
        "CREATE TABLE t (id integer PRIMARY KEY)",
        "CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM zap_rows(); END $$",
        "CREATE EVENT TRIGGER aishell_test_ddl ON ddl_command_end EXECUTE FUNCTION on_ddl()",
    ) as (_, url):
        before = scalar(url, "SELECT count(*) FROM victim")
        sql = "COMMENT ON TABLE {table} IS 'kept'"
        config = sql_tool(home, url, "comment_t", sql, "high")
        plan = one_step_plan("maintenance", "db", "postgresql", "comment_t", {"table": "t"})

        run = commands.apply_plan(config, plan)

        step = run.steps[0]
        said = (
            "COMMENT ON fires event trigger aishell_test_ddl (ddl_command_end, runs on_ddl): "
            "public.on_ddl(), a user-defined function that may write"
        )
        assert run.status == "waiting_approval" and step.estimate["user_code"] == [said]
        assert said in step.reasons
        assert scalar(url, "SELECT count(*) FROM victim") == before

        trusting = with_trusted(home, config, "on_ddl")
        dry = commands.apply_plan(trusting, plan, dry_run=True)
        assert "user_code" not in (dry.steps[0].estimate or {})


# --- MariaDB and SQLite: triggers ------------------------------------------------------

TRIGGERS = {
    "mysql": (
        "CREATE TABLE victim (id integer PRIMARY KEY)",
        "INSERT INTO victim VALUES (1), (2), (3)",
        "CREATE FUNCTION zap(x integer) RETURNS integer DETERMINISTIC "
        "BEGIN DELETE FROM victim LIMIT 1; RETURN x; END",
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "INSERT INTO t VALUES (1, 1), (2, 2)",
        "CREATE TRIGGER t_gone BEFORE DELETE ON t FOR EACH ROW SET @x = zap(OLD.id)",
    ),
    "sqlite": (
        "CREATE TABLE victim (id integer PRIMARY KEY)",
        "INSERT INTO victim VALUES (1), (2), (3)",
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "INSERT INTO t VALUES (1, 1), (2, 2)",
        "CREATE TRIGGER t_gone BEFORE DELETE ON t BEGIN DELETE FROM victim; END",
    ),
}
SAID = {
    "mysql": "trigger t_gone on {db}.t (BEFORE DELETE) runs its own statements, which may "
    "write (DELETE runs it)",
    "sqlite": "trigger t_gone on t (DELETE) runs its own statements, which may write "
    "(DELETE runs it)",
}


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_a_trigger_that_calls_a_writing_function_makes_the_delete_high_risk(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    with scratch_database(dialect, tmp_path) as url:
        execute(url, *TRIGGERS[dialect])
        folder = home / "site"
        sql = "DELETE FROM {table} WHERE id = 1"
        write_tool(folder, tool_yaml("trim_t", "medium", {dialect: {"sql": sql}}))
        config = site_config(home, url, folder)
        plan = one_step_plan("maintenance", "db", dialect, "trim_t", {"table": "t"})

        run = commands.apply_plan(config, plan)

        step = run.steps[0]
        assert run.status == "waiting_approval" and step.risk_level == "high"
        database = url.rsplit("/", 1)[-1]
        assert step.estimate["user_code"] == [SAID[dialect].format(db=database)]
        assert scalar(url, "SELECT count(*) FROM victim") == 3
        # Maintenance runs no trigger, and MariaDB allows no stored function in an
        # index, a generated column, a default or a check.
        assert code_of(url, ["ANALYZE TABLE t" if dialect == "mysql" else "ANALYZE t"]) == []


# --- archive tables --------------------------------------------------------------------

PURGE = {"table": "logs", "date_column": "created_at", "retention_days": 30}
LOGS = {
    "postgresql": (
        "CREATE TABLE logs (id integer PRIMARY KEY, created_at timestamp NOT NULL, n integer)",
        "INSERT INTO logs SELECT g, localtimestamp - make_interval(days => g), g "
        "FROM generate_series(1, 60) g",
    ),
    "mysql": (
        "CREATE TABLE victim (id integer PRIMARY KEY)",
        "INSERT INTO victim SELECT seq FROM seq_1_to_100",
        "CREATE TABLE logs (id integer PRIMARY KEY, created_at datetime NOT NULL, n integer)",
        "INSERT INTO logs SELECT seq, NOW() - INTERVAL seq DAY, seq FROM seq_1_to_60",
        "CREATE FUNCTION zap(x integer) RETURNS integer DETERMINISTIC "
        "BEGIN DELETE FROM victim LIMIT 1; RETURN x; END",
    ),
}
ARCHIVES = {
    "postgresql": {
        "generated": (
            "CREATE TABLE arch (id integer, created_at timestamp, "
            "n integer GENERATED ALWAYS AS (zap(id)) STORED)",
            "column n is generated (zap(id))",
        ),
        "default": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer DEFAULT zap(1))",
            "column n defaults to zap(1), not a plain constant",
        ),
        "trigger": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer)\n"
            "CREATE FUNCTION arch_in() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM zap_rows(); RETURN NEW; END $$\n"
            "CREATE TRIGGER arch_in BEFORE INSERT ON arch FOR EACH ROW EXECUTE FUNCTION arch_in()",
            "trigger arch_in (arch_in)",
        ),
        "check": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer "
            "CONSTRAINT arch_n CHECK (zap(n) IS NOT NULL))",
            "check constraint arch_n calls a user-defined function",
        ),
        "row security": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer)\n"
            "ALTER TABLE arch ENABLE ROW LEVEL SECURITY",
            "it has row-level security",
        ),
        "type": (
            "CREATE TABLE arch (id integer, created_at timestamp, n bigint)",
            "column n is bigint, not integer as in the purged table",
        ),
        "index expression": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer)\n"
            "CREATE INDEX arch_zap ON arch (zap(n))",
            "index arch_zap calls a user-defined function or operator class",
        ),
        "partial index": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer)\n"
            "CREATE INDEX arch_some ON arch (id) WHERE zap(n) > 0",
            "index arch_some calls a user-defined function or operator class",
        ),
        "operator class": (
            "CREATE TABLE arch (id integer, created_at timestamp, n integer)\n"
            "DROP OPERATOR CLASS IF EXISTS zap_ops USING hash\n"
            "CREATE OPERATOR CLASS zap_ops FOR TYPE integer USING hash AS "
            "OPERATOR 1 = , FUNCTION 1 zap(integer)\n"
            "CREATE INDEX arch_hash ON arch USING hash (n zap_ops)",
            "index arch_hash calls a user-defined function or operator class",
        ),
    },
    "mysql": {
        "generated": (
            "CREATE TABLE arch (id integer, created_at datetime, n integer AS (id * 2) STORED)",
            "column n is generated (`id` * 2)",
        ),
        "default": (
            "CREATE TABLE arch (id integer, created_at datetime, n integer DEFAULT (rand()))",
            "column n defaults to rand(), not a plain constant",
        ),
        "trigger": (
            "CREATE TABLE arch (id integer, created_at datetime, n integer)\n"
            "CREATE TRIGGER arch_in BEFORE INSERT ON arch FOR EACH ROW SET @x = zap(NEW.id)",
            "trigger arch_in (BEFORE INSERT)",
        ),
        "type": (
            "CREATE TABLE arch (id integer, created_at datetime, n bigint)",
            "column n is bigint(20), not int(11) as in the purged table",
        ),
    },
}


@pytest.mark.parametrize("dialect", sorted(ARCHIVES))
def test_an_archive_table_that_runs_code_is_refused(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """Each kind on one database: the archive table (and its trigger's function) of one
    case dropped before the next makes its own."""
    with scratch_database(dialect, tmp_path) as url, Cases() as case:
        setup = (*PG_VICTIM, *PG_ZAP) if dialect == "postgresql" else ()
        execute(url, *setup, *LOGS[dialect])
        victims, logs = (scalar(url, f"SELECT count(*) FROM {t}") for t in ("victim", "logs"))
        config = use_target(home, url)
        for kind, (create, said) in ARCHIVES[dialect].items():
            with case(kind):
                execute(url, "DROP TABLE IF EXISTS arch", *create.split("\n"))

                with pytest.raises(TargetError, match="archive table arch runs code") as refused:
                    commands.run_job(config, "log_cleanup", {**PURGE, "archive_to": "table:arch"})

                assert said in str(refused.value) and "\n" not in str(refused.value)
                assert scalar(url, "SELECT count(*) FROM victim") == victims
                assert scalar(url, "SELECT count(*) FROM logs") == logs


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_plain_archive_table_archives(home: Path, tmp_path: Path, dialect: str) -> None:
    with scratch_database(dialect, tmp_path) as url:
        setup = (*PG_VICTIM, *PG_ZAP) if dialect == "postgresql" else ()
        stamp = "timestamp" if dialect == "postgresql" else "datetime"
        execute(
            url,
            *setup,
            *LOGS[dialect],
            f"CREATE TABLE arch (id integer, created_at {stamp} NOT NULL, n integer DEFAULT 0)",
        )
        config = use_target(home, url)

        run = commands.run_job(
            config, "log_cleanup", {**PURGE, "archive_to": "table:arch"}, approver=None
        )

        assert run.status in ("completed", "waiting_approval"), run.error
        assert scalar(url, "SELECT count(*) FROM victim") == 100


def test_the_preview_the_dry_run_and_an_unattended_run_say_it(home: Path) -> None:
    with postgresql(
        home,
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "CREATE INDEX t_expr_idx ON t (zap(v))",
    ) as (_, url):
        before = scalar(url, "SELECT count(*) FROM victim")
        runner = CliRunner()
        said = (
            "index t_expr_idx on public.t evaluates public.zap(), a user-defined function "
            "that may write (ANALYZE runs it)"
        )

        plan = runner.invoke(cli, ["plan", "maintenance", "--type", "quick"])
        dry = runner.invoke(cli, ["run", "maintenance", "--type", "quick", "--dry-run"])
        run = runner.invoke(
            cli, ["run", "maintenance", "--type", "quick", "--non-interactive", "--json"]
        )

        assert plan.exit_code == 0, plan.output
        assert f"runs user code: {said}" in " ".join(plan.output.split())
        assert dry.exit_code == 0, dry.output
        assert said in " ".join(dry.output.split())
        assert run.exit_code == 3, run.output
        steps = json.loads(run.stdout)["steps"]
        analyze = next(s for s in steps if s["tool"] == "update_table_statistics")
        assert analyze["status"] == "waiting_approval" and analyze["risk_level"] == "high"
        assert scalar(url, "SELECT count(*) FROM victim") == before


def test_a_row_security_policy_counts_where_it_applies_to_the_session(home: Path) -> None:
    """A policy applies to a role that neither owns the table nor bypasses row security
    (a superuser does): its functions run for that role's DELETE, not the owner's."""
    role = f"aishell_uc_{uuid.uuid4().hex[:10]}"
    with postgresql(
        home,
        "CREATE TABLE p (id integer PRIMARY KEY, v integer)",
        "ALTER TABLE p ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY p_zap ON p FOR DELETE USING (zap(v) > 0)",
        "CREATE POLICY p_insert ON p FOR INSERT WITH CHECK (v > 0)",
    ) as (_, url):
        execute(url, f'CREATE ROLE "{role}"', f'GRANT SELECT, DELETE ON p TO "{role}"')
        try:
            engine = create_engine(url)
            with engine.connect() as conn:
                deleting = [Action("DELETE", None, "p")]
                assert user_code(conn, deleting, (), {}) == []  # a superuser's session
                conn.execute(text(f'SET ROLE "{role}"'))
                assert user_code(conn, deleting, (), {}) == [
                    "row-security policy p_zap on public.p calls public.zap(), a "
                    "user-defined function that may write (DELETE runs it)"
                ]
                assert user_code(conn, [Action("INSERT", None, "p")], (), {}) == []
                conn.rollback()
            engine.dispose()
        finally:
            execute(url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_an_operator_and_a_rule_count_by_the_functions_behind_them(home: Path) -> None:
    with postgresql(
        home,
        "CREATE FUNCTION zap_eq(a integer, b integer) RETURNS boolean LANGUAGE sql "
        "IMMUTABLE AS 'SELECT zap(a) = b'",
        "CREATE OPERATOR === (LEFTARG = integer, RIGHTARG = integer, FUNCTION = zap_eq)",
        "CREATE TABLE t (id integer PRIMARY KEY, v integer)",
        "CREATE INDEX t_op_idx ON t (id) WHERE v === 1",
        "CREATE TABLE log (id integer)",
        "CREATE RULE t_noted AS ON UPDATE TO t DO ALSO INSERT INTO log SELECT zap(NEW.id)",
    ) as (_, url):
        engine = create_engine(url)
        with engine.connect() as conn:
            updating = [Action("UPDATE", "public", "t")]
            said = user_code(conn, updating, (), {})
            assert said == [
                "index t_op_idx on public.t evaluates public.zap_eq(), a user-defined "
                "function that may write (UPDATE runs it)",
                "rule t_noted on public.t calls public.zap(), a user-defined function that "
                "may write (UPDATE runs it)",
            ]
            # A DELETE maintains no index and runs no rule on UPDATE.
            assert user_code(conn, [Action("DELETE", "public", "t")], (), {}) == []
            assert user_code(conn, updating, ("zap_eq", "public.zap"), {}) == []
        engine.dispose()


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        (
            'ANALYZE "public"."t", u',
            "postgresql",
            [("ANALYZE", "public", "t"), ("ANALYZE", None, "u")],
        ),
        ('ANALYZE VERBOSE "T" ("a", b)', "postgresql", [("ANALYZE", None, "T")]),
        (
            "VACUUM (ANALYZE) Orders",
            "postgresql",
            [("VACUUM", None, "orders"), ("ANALYZE", None, "orders")],
        ),
        (
            "VACUUM (FULL, ANALYZE) t",
            "postgresql",
            [("REBUILD", None, "t"), ("ANALYZE", None, "t")],
        ),
        ("VACUUM FULL t", "postgresql", [("REBUILD", None, "t")]),
        ("VACUUM t", "postgresql", [("VACUUM", None, "t")]),
        (
            "VACUUM (VERBOSE, ANALYSE) t",
            "postgresql",
            [("VACUUM", None, "t"), ("ANALYZE", None, "t")],
        ),
        ("VACUUM", "postgresql", [("VACUUM", None, None)]),
        ("-- why\nREINDEX TABLE CONCURRENTLY s.t", "postgresql", [("REBUILD", "s", "t")]),
        ("REINDEX DATABASE db", "postgresql", [("REBUILD", None, None)]),
        ("CLUSTER t USING t_idx", "postgresql", [("REBUILD", None, "t")]),
        ("ANALYZE", "postgresql", [("ANALYZE", None, None)]),
        ("ANALYZE TABLE `a`, `db`.`b`", "mysql", [("ANALYZE", None, "a"), ("ANALYZE", "db", "b")]),
        (
            "OPTIMIZE NO_WRITE_TO_BINLOG TABLE t",
            "mysql",
            [("REBUILD", None, "t"), ("ANALYZE", None, "t")],
        ),
        ("ALTER TABLE `t` FORCE, ALGORITHM=INPLACE, LOCK=NONE", "mysql", [("ALTER", None, "t")]),
        ("REPAIR TABLE t", "mysql", [("REBUILD", None, "t")]),
        ("VACUUM", "sqlite", [("REBUILD", None, None)]),
        ("SELECT * FROM t", "postgresql", []),
    ],
)
def test_what_each_maintenance_statement_does_to_its_tables(
    sql: str, dialect: str, expected: list[tuple[str, str | None, str | None]]
) -> None:
    found = [(a.action, a.schema, a.table) for a in maintenance_actions([sql], dialect)]
    assert found == expected
    index = list(maintenance_actions(['REINDEX INDEX CONCURRENTLY "s"."t_idx"'], "postgresql"))
    assert index == [Action("REBUILD", None, None, "t_idx")]
