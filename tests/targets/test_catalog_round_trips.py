"""What planning and running cost in queries to the target: the catalog is read in the
same number of queries for 3x the tables, nothing outside the steps' own statements grows
with the number of tables, and after a step only the tables it may have changed are read
again. Counted as the driver sends them, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import Pool

from aishell import commands
from aishell.cli import cli
from aishell.commands.planner import build_plan
from aishell.config.models import Config
from aishell.errors import TargetError
from aishell.executor import RunResult
from aishell.handlers import measured
from aishell.policy.approvers import PreApproved
from aishell.policy.rules import may_write
from aishell.targets.catalog import urgency
from aishell.targets.engines import open_target
from aishell.targets.tables import TableCatalog
from aishell.tool.context import ToolContext
from tests.helpers import use_target
from tests.services import scratch_mysql, scratch_postgresql

CATALOG = "aishell catalog"
Sent = list[tuple[str, Any]]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def target(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    """The default target `db`: an empty SQLite file or scratch server database."""
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'many.db'}"
        yield use_target(home, url), url
        return
    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        yield use_target(home, url), url


def add_tables(url: str, first: int, count: int) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for i in range(first, first + count):
                conn.execute(text(f"CREATE TABLE t{i:03d} (id integer PRIMARY KEY, v integer)"))
                conn.execute(text(f"INSERT INTO t{i:03d} VALUES (1, 1), (2, 2), (3, 3)"))
    finally:
        engine.dispose()


@contextmanager
def sent_to(url: str) -> Iterator[Sent]:
    """Every statement sent to the target's database, with its parameters. On PostgreSQL
    counted in psycopg's cursors, so statements the guard sends on a bare cursor count too."""
    sent: Sent = []
    database = make_url(url).database

    class Counted(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append((str(query), params))
            return super().execute(query, params, **kwargs)

    def connected(dbapi: Any, record: Any) -> None:
        if isinstance(dbapi, psycopg.Connection):
            if dbapi.info.dbname == database:
                dbapi.cursor_factory = Counted
        elif isinstance(dbapi, sqlite3.Connection):
            record.info[CATALOG] = dbapi.execute("PRAGMA database_list").fetchone()[2] == database
        else:  # PyMySQL
            record.info[CATALOG] = dbapi.db == str(database).encode()

    def before(conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if conn.info.get(CATALOG):
            sent.append((statement, parameters))

    event.listen(Pool, "connect", connected)
    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(Pool, "connect", connected)
        event.remove(Engine, "before_cursor_execute", before)


def names_in(parameters: Any) -> set[str]:
    """The string values of a statement's parameters, however the driver takes them."""
    if isinstance(parameters, str):
        return {parameters}
    if isinstance(parameters, dict):
        parameters = list(parameters.values())
    if isinstance(parameters, list | tuple):
        return set().union(*(names_in(p) for p in parameters)) if parameters else set()
    return set()


def plan_and_run(config: Config, kind: str) -> tuple[Sent, list[dict[str, Any]], RunResult]:
    """Plan (with its preview) and run a maintenance job: what was sent, the steps' own
    statements (the run's statement audit), and the run."""
    with sent_to(config.target(None)[1].url) as sent:
        commands.plan_job(config, "maintenance", {"type": kind})
        result = commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved())
    assert result.status == "completed", result.error
    return sent, commands.run_statements(config, result.run_id), result


def test_three_times_the_tables_cost_no_more_catalog_queries(target):
    config, url = target
    add_tables(url, 0, 4)
    small, small_audit, _ = plan_and_run(config, "quick")
    add_tables(url, 4, 8)
    big, big_audit, _ = plan_and_run(config, "quick")

    def catalog(sent: Sent) -> list[str]:
        return [sql for sql, _ in sent if CATALOG in sql]

    # Planning reads the catalog once, the run once more, and the report step reads
    # again the tables the statistics steps may have changed: one query each.
    assert len(catalog(big)) == len(catalog(small)) > 0
    # Besides the steps' own statements, nothing grows with the tables either ...
    assert len(big) - len(big_audit) == len(small) - len(small_audit)

    # ... and the one statistics step of all the tables (quick maintenance analyzes small
    # tables together) sends as many statements for twelve tables as for four: one
    # ANALYZE of them all, where the engine takes a list (SQLite: one per table).
    def statistics_step(audit: list[dict[str, Any]]) -> list[str]:
        return [row["sql"] for row in audit if row["step_index"] == 1]

    grown = len(statistics_step(big_audit)) - len(statistics_step(small_audit))
    assert grown == (8 if url.startswith("sqlite") else 0), statistics_step(big_audit)


def test_after_a_step_only_its_table_is_read_again(target):
    config, url = target
    add_tables(url, 0, 3)
    dialect = make_url(url).get_backend_name()
    if dialect == "sqlite":  # free pages in the file: the first optimize_table VACUUMs
        with sqlite3.connect(make_url(url).database or "") as conn:
            conn.execute("CREATE TABLE filler AS SELECT zeroblob(100000) AS b")
            conn.execute("DROP TABLE filler")
    sent, _, run = plan_and_run(config, "full")
    reads = [names_in(params) for sql, params in sent if CATALOG in sql]
    # `plan`, then the run's planning and the run itself each read every table once.
    assert sum(1 for r in reads if not r) == 3
    # After a step that may change its table (every step that is not read-only and
    # rendered a write, but for a statistics update), that table alone is read again, in
    # one query, before the next step that names it; the report, naming every table,
    # reads again all those still unread, in one query.
    registry = commands.load_catalog(config)
    expected: list[set[str]] = []
    changed: set[str] = set()
    for step in run.steps:
        named = {step.params["table"]} if "table" in step.params else set(step.params["tables"])
        if changed & named:
            expected.append(changed & named)
            changed -= named
        # ANALYZE changes no table's rows, pages or indexes, and a rebuild that found
        # nothing to rebuild runs as a read: nothing to read again.
        tool = registry.get(step.tool)
        writes = may_write(tool, tool.implementation(dialect), step.sql or [], dialect)
        if step.tool != "update_table_statistics" and writes:
            changed |= named
    assert [r for r in reads if r] == expected
    # On MariaDB these small tables leave its rebuild and OPTIMIZE nothing to do; on
    # PostgreSQL and SQLite the shared step's VACUUM changes its tables, read again
    # together, in one query, before the next step that names them.
    assert (expected == []) is (dialect == "mysql")
    assert all(len(r) > 1 for r in expected)


def planning_sent(config: Config, agent: str, job: dict[str, Any]) -> list[str]:
    """The statements planning a job sends to the target (its preview's left out)."""
    registry = commands.load_catalog(config)
    handle = open_target(config, None, read_only=True)
    try:
        with sent_to(config.target(None)[1].url) as sent:
            build_plan(config, registry, handle, agent, job)
    finally:
        handle.close()
    return [sql for sql, _ in sent]


@pytest.mark.parametrize(
    ("agent", "job"),
    [("backup", {"type": "full"}), ("maintenance", {"type": "quick"})],
)
def test_only_full_maintenance_pays_for_the_urgency_of_the_tables(target, agent, job):
    config, url = target
    add_tables(url, 0, 3)
    engine = create_engine(url)
    try:
        with sent_to(url) as sent, engine.connect() as conn:
            # Planning reads urgency after the catalog, from its figures where it has them.
            _, figures = TableCatalog.read(conn).fresh_figures(60)
            connecting = len(sent)  # what opening the session sent, before urgency's own
            urgency(conn, figures or None)
    finally:
        engine.dispose()
    asked = {sql for sql, _ in sent[connecting:]}
    assert asked
    assert asked <= set(planning_sent(config, "maintenance", {"type": "full"}))
    assert asked.isdisjoint(planning_sent(config, agent, job))


def test_a_table_a_step_made_is_found_and_one_it_dropped_is_gone(target):
    _config, url = target
    add_tables(url, 0, 2)
    engine = create_engine(url)
    try:
        with sent_to(url) as sent, engine.connect() as conn:
            catalog = TableCatalog.read(conn)
            assert catalog.names == ["t000", "t001"]
            assert catalog.rows("t001") in (0, 3)  # PostgreSQL: 0 until analyzed
            conn.execute(text("CREATE TABLE t900 (id integer PRIMARY KEY)"))
            conn.execute(text("DROP TABLE t001"))
            before = len(sent)
            catalog.check_tables(conn, "db", ["t900"])  # looked up once, found
            assert len(sent) == before + 1 and names_in(sent[-1][1]) == {"t900"}
            catalog.changed(["t001"])
            catalog.current(conn, ["t000", "t001"])  # only the changed table is read
            assert names_in(sent[-1][1]) == {"t001"}
            assert catalog.names == ["t000", "t900"]
            with pytest.raises(TargetError, match="Table 't001' not found in target 'db'; "):
                catalog.check_tables(conn, "db", ["t001"])
            catalog.check_column(conn, "t000", "v")
            with pytest.raises(TargetError, match="has no column 'w'; columns are: id, v"):
                catalog.check_column(conn, "t000", "w")
            conn.rollback()
    finally:
        engine.dispose()


@pytest.mark.parametrize("width", ["200", "80"])
def test_a_plan_of_many_tables_shows_alike_steps_as_one_line(home, width, monkeypatch):
    from aishell.agents import maintenance

    # Tables this small share steps: as large ones, each has steps of its own.
    monkeypatch.setattr(maintenance, "STATISTICS_ALONE_BYTES", 0)
    url = f"sqlite:///{home / 'many.db'}"
    use_target(home, url)
    add_tables(url, 0, 60)
    runner = CliRunner(env={"COLUMNS": width})
    short = runner.invoke(cli, ["plan", "maintenance", "--type", "standard"])
    assert short.exit_code == 0, short.output
    said = " ".join(short.output.split())
    assert "122 steps shown as 4 lines of alike steps" in said
    assert "step_1 ... step_119 (60 steps)" in said and "step_2 ... step_120 (60 steps)" in said
    assert "60 tables: t000, t001, t002, ..., t059" in said
    assert "t030" not in said and "step_30 " not in said
    every = runner.invoke(cli, ["plan", "maintenance", "--type", "standard", "--all"])
    assert every.exit_code == 0, every.output
    assert "shown as" not in every.output
    assert all(f"t{i:03d}" in every.output for i in range(60))
    assert all(f"step_{i}" in every.output for i in range(122))
    dry = runner.invoke(cli, ["run", "maintenance", "--type", "standard", "--dry-run"])
    assert "61 previewed steps shown as" in " ".join(dry.output.split())


def test_a_retry_measures_again_what_the_first_attempt_ran_on():
    """The first attempt runs on what the step measured to render its SQL (shown and
    approved); a retry measures again what the failed attempt may have changed."""
    ctx = ToolContext(conn=None, dialect="sqlite", target="db")
    reads: list[int] = []

    def measure() -> int:
        reads.append(ctx.attempt)
        return len(reads)

    assert measured(ctx, "rebuild:t", measure) == 1  # as the step renders
    assert measured(ctx, "rebuild:t", measure) == 1  # its first attempt
    ctx.attempt = 2
    assert measured(ctx, "rebuild:t", measure) == 2
    assert measured(ctx, "rebuild:t", measure) == 2
    assert reads == [1, 2]
