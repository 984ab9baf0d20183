"""A row limit, an approval and a saved plan are judged on measures, not statistics.

The planner's statistics (PostgreSQL's reltuples, InnoDB's TABLE_ROWS) are as old as a
table's last ANALYZE. A table written since, or never analyzed, is measured: its size,
and its rows counted up to one past the limit where the size does not bound them.

- PostgreSQL, a table analyzed at 10 rows and written to 40,010 since: max_table_size
  (10,000 rows) holds its write steps for a person's yes ("has at least 10,001 rows").
- PostgreSQL, a table never analyzed whose statistics were reset (no estimate at all):
  likewise.
- PostgreSQL, an inheritance parent with an empty heap whose child holds 20,000 rows:
  likewise (its heap bounds none of the rows its reads take).
- MariaDB, InnoDB statistics a quarter of the rows (TABLE_ROWS less an open DELETE's
  rows): likewise.
- SQLite (dbstat's rows are a count): the reason says "has N rows", not "about".
- A step approved at 500 rows, its table grown to 40,500 without an ANALYZE: resume asks
  again (PostgreSQL).
- A saved plan made at 1,000 rows, applied after the table grew to 41,000 without an
  ANALYZE: refused (PostgreSQL; InnoDB counts the rows it inserts into TABLE_ROWS).
- A table the planner may run a function of the user's for (a check that calls it): the
  guard refuses the count, the limit is unknown, and a person says yes (PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.commands.tools import load_catalog
from aishell.config.models import Config, load_config
from aishell.errors import PlanError
from aishell.policy.approvers import NonInteractive
from aishell.policy.measured import connection_measure
from aishell.policy.rules import SafetyPolicy, gather_facts
from aishell.targets.tables import TableCatalog
from tests.helpers import use_target

LIMIT = 10_000


def _scratch(kind: str) -> Iterator[str]:
    name = f"fixlim_{uuid.uuid4().hex[:10]}"
    if kind == "postgresql":
        from tests.services import scratch_postgresql

        with scratch_postgresql(name=name) as url:
            yield url
    else:
        from tests.services import scratch_mysql

        with scratch_mysql(name=name) as url:
            yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _scratch("postgresql")


@pytest.fixture
def my_url() -> Iterator[str]:
    yield from _scratch("mysql")


def _sql(url: str, *statements: str) -> list[Any]:
    """Runs each statement (autocommit); the last one's first row."""
    engine = create_engine(url)
    found: list[Any] = []
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for statement in statements:
                result = conn.execute(text(statement))
                found = list(result.first() or []) if result.returns_rows else []
    finally:
        engine.dispose()
    return found


def _limited(home: Path, url: str, max_rows: int = LIMIT) -> Config:
    """The target at `url`, the maintenance agent at moderate with only max_table_size."""
    use_target(home, url)
    path = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(path.read_text())
    agent = data["maintenance_agent"]
    agent["default_config"]["safety_level"] = "moderate"
    agent["safety_constraints"] = [{"type": "max_table_size", "max_rows": max_rows}]
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def _run(config: Config, table: str) -> Any:
    job = {"type": "full", "tables": [table]}
    return commands.run_job(config, "maintenance", job, approver=NonInteractive())


def _pg_stale(url: str, table: str, first: int, then: int) -> None:
    """A table analyzed at `first` rows, then written to `then` more, autovacuum off."""
    _sql(
        url,
        f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v text) "
        "WITH (autovacuum_enabled = false)",
        f"INSERT INTO {table} (v) SELECT 'row ' || g FROM generate_series(1, {first}) g",
        f"ANALYZE {table}",
        f"INSERT INTO {table} (v) SELECT 'row ' || g FROM generate_series(1, {then}) g",
    )


def _over_the_limit(result: Any, table: str, figure: str) -> None:
    """The run waits, and every step the limit holds back is held, not run."""
    assert result.status == "waiting_approval", (result.status, result.error)
    reason = f"table '{table}' has {figure}, over max_table_size ({LIMIT:,} rows)"
    held = [s for s in result.steps if reason in s.reasons]
    assert held, [(s.tool, s.status, s.reasons) for s in result.steps]
    assert all(s.status == "waiting_approval" for s in held), [(s.tool, s.status) for s in held]


def test_postgresql_stale_statistics_over_the_limit_need_approval(home: Path, pg_url: str) -> None:
    _pg_stale(pg_url, "fixlim_stale", 10, 40_000)
    assert _sql(pg_url, "SELECT reltuples FROM pg_class WHERE relname = 'fixlim_stale'") == [10]
    config = _limited(home, pg_url)
    result = _run(config, "fixlim_stale")
    _over_the_limit(result, "fixlim_stale", "at least 10,001 rows")


def test_postgresql_never_analyzed_and_statistics_reset_need_approval(
    home: Path, pg_url: str
) -> None:
    _sql(
        pg_url,
        "CREATE TABLE fixlim_blind (id bigserial PRIMARY KEY, v text) "
        "WITH (autovacuum_enabled = false)",
        "INSERT INTO fixlim_blind (v) SELECT 'row ' || g FROM generate_series(1, 40000) g",
    )
    # The inserting session's counts reach the statistics when it ends: reset after.
    for _ in range(20):
        found = _sql(
            pg_url,
            "SELECT pg_stat_reset()",
            "SELECT reltuples, pg_stat_get_live_tuples(oid) FROM pg_class "
            "WHERE relname = 'fixlim_blind'",
        )
        if found[1] == 0:
            break
        time.sleep(0.5)
    assert found[0] == -1 and found[1] == 0
    config = _limited(home, pg_url)
    result = _run(config, "fixlim_blind")
    _over_the_limit(result, "fixlim_blind", "at least 10,001 rows")


@pytest.mark.parametrize("children", ["inherited", "attached later"])
def test_postgresql_an_inheritance_parent_is_counted_with_its_children(
    home: Path, pg_url: str, children: str
) -> None:
    """Its own heap is empty, so it bounds no row, yet ANALYZE and count(*) of it read
    the children's rows: they are counted against the limit, as a partitioned table's
    are."""
    child = (
        "CREATE TABLE fixlim_child () INHERITS (fixlim_parent)"
        if children == "inherited"
        else "CREATE TABLE fixlim_child (id bigint, v text)"
    )
    _sql(
        pg_url,
        "CREATE TABLE fixlim_parent (id bigint, v text) WITH (autovacuum_enabled = false)",
        child,
        "INSERT INTO fixlim_child SELECT g, 'row' FROM generate_series(1, 20000) g",
        *(["ALTER TABLE fixlim_child INHERIT fixlim_parent"] if children != "inherited" else []),
    )
    config = _limited(home, pg_url)
    result = _run(config, "fixlim_parent")
    _over_the_limit(result, "fixlim_parent", "at least 10,001 rows")


def test_mariadb_statistics_under_the_rows_need_approval(home: Path, my_url: str) -> None:
    _sql(
        my_url,
        "CREATE TABLE fixlim_sampled (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)) "
        "ENGINE=InnoDB",
        "INSERT INTO fixlim_sampled (v) SELECT 'n' FROM seq_1_to_16000",
    )
    limit = 12_000
    # InnoDB takes a row off TABLE_ROWS when a DELETE marks it, before the DELETE commits:
    # while another session's DELETE of 12,000 rows is open, the statistics say 4,000 and
    # every reader still sees 16,000 rows. (A faked mysql.innodb_table_stats row is read
    # again only once no session has the table open, which a busy server may never allow.)
    engine = create_engine(my_url)
    try:
        with engine.connect() as deleting:
            deleting.execute(text("DELETE FROM fixlim_sampled WHERE id > 4000"))
            estimate = _sql(
                my_url,
                "SELECT TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fixlim_sampled'",
            )[0]
            assert estimate < limit, estimate  # under the limit; 16,000 rows are there
            config = _limited(home, my_url, max_rows=limit)
            result = _run(config, "fixlim_sampled")
            deleting.rollback()
    finally:
        engine.dispose()
    assert result.status == "waiting_approval", (result.status, result.error)
    reasons = [r for s in result.steps for r in s.reasons]
    assert (
        "table 'fixlim_sampled' has at least 12,001 rows, over max_table_size (12,000 rows)"
        in reasons
    ), reasons


def test_sqlite_rows_read_from_its_pages_are_shown_as_counted(home: Path) -> None:
    path = home / "fixlim.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE fixlim_pages (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany(
        "INSERT INTO fixlim_pages (v) VALUES (?)", [(f"row {i}",) for i in range(12_345)]
    )
    conn.commit()
    conn.close()
    config = _limited(home, f"sqlite:///{path}")
    result = _run(config, "fixlim_pages")
    _over_the_limit(result, "fixlim_pages", "12,345 rows")


def test_postgresql_growth_after_an_approval_without_analyze_is_asked_again(
    home: Path, pg_url: str
) -> None:
    _pg_stale(pg_url, "fixlim_grown", 500, 0)
    config = _limited(home, pg_url, max_rows=100)
    waiting = _run(config, "fixlim_grown")
    assert waiting.status == "waiting_approval", waiting.error
    commands.decide_steps(config, waiting.run_id, "approved")
    _sql(
        pg_url,
        "INSERT INTO fixlim_grown (v) SELECT 'row ' || g FROM generate_series(1, 40000) g",
    )
    assert _sql(pg_url, "SELECT reltuples FROM pg_class WHERE relname = 'fixlim_grown'") == [500]
    resumed = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
    assert resumed.status == "waiting_approval", (resumed.status, resumed.error)
    asked = [s for s in resumed.steps if s.status == "waiting_approval"]
    assert asked, [(s.tool, s.status) for s in resumed.steps]
    errors = [str(s.error) for s in asked]
    assert any(
        "its earlier approval no longer covers it" in e and "table fixlim_grown: rows" in e
        for e in errors
    ), errors


def test_postgresql_a_resume_with_the_same_measures_needs_no_second_approval(
    home: Path, pg_url: str
) -> None:
    _pg_stale(pg_url, "fixlim_same", 500, 0)
    config = _limited(home, pg_url, max_rows=100)
    waiting = _run(config, "fixlim_same")
    assert waiting.status == "waiting_approval", waiting.error
    commands.decide_steps(config, waiting.run_id, "approved")
    done = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
    assert done.status == "completed", (done.status, done.error)


def test_a_saved_plan_applied_after_growth_without_analyze_is_refused(
    home: Path, pg_url: str
) -> None:
    _pg_stale(pg_url, "fixlim_planned", 1_000, 0)
    config = _limited(home, pg_url, max_rows=1_000_000)
    out = home / "plan.json"
    job = {"type": "full", "tables": ["fixlim_planned"]}
    commands.plan_job(config, "maintenance", job, out=out)
    _sql(
        pg_url,
        "INSERT INTO fixlim_planned (v) SELECT 'row ' || g FROM generate_series(1, 40000) g",
    )
    with pytest.raises(PlanError, match="changed since the plan was made") as err:
        commands.apply_plan(config, commands.load_plan_file(out))
    assert "'fixlim_planned' has at least 2,001 rows, the plan assumed 1,000" in str(err.value)


def test_a_count_the_guard_refuses_leaves_the_limit_to_a_person(home: Path, pg_url: str) -> None:
    _pg_stale(pg_url, "fixlim_guarded", 10, 40_000)
    # A check calling a function of the user's: the planner may run it in any read of
    # the table, so the guard refuses the count as it would any read of it.
    _sql(
        pg_url,
        "CREATE FUNCTION fixlim_ok(bigint) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true'",
        "ALTER TABLE fixlim_guarded ADD CONSTRAINT fixlim_checked CHECK (fixlim_ok(id))",
    )
    config = _limited(home, pg_url)
    tool = load_catalog(config).get("optimize_table")
    policy = SafetyPolicy("moderate", "test", "db", config.agent("maintenance").constraints)
    engine = create_engine(pg_url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            catalog = TableCatalog.read(conn)
            measure = connection_measure(conn, catalog, None, {})
            found = measure(["fixlim_guarded"], LIMIT)["fixlim_guarded"]
            facts = gather_facts(
                policy,
                tool,
                {"table": "fixlim_guarded"},
                catalog,
                effect=None,
                now=datetime.now(UTC),
                store=None,
                dialect="postgresql",
                measure=measure,
            )
    finally:
        engine.dispose()
    assert found.rows is None and "statement refused" in found.unknown, found
    verdict = policy.check(facts)
    assert verdict.requires_approval
    assert any(
        r.startswith(
            "table 'fixlim_guarded': its rows could not be counted against "
            "max_table_size (10,000 rows) ("
        )
        and "statement refused" in r
        for r in verdict.reasons
    ), verdict.reasons
