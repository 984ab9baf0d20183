"""Hostile and awkward table names, through the commands a DBA runs, on all three engines.

- A real table with an awkward name (quotes, backticks, %, placeholders, colons,
  backslashes, non-ASCII, a semicolon, a comment opener, the longest name the server
  takes, mixed case) is maintained by `run_job`: the run completes and the server
  itself shows that exactly that table was analyzed.
- A name that is not in the catalog is refused before any run starts, and a name that
  cannot be quoted safely for the driver is refused with one line; nothing runs.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.errors import PlanError, TargetError
from aishell.sqltext import UnquotableIdentifier, quote_identifier
from tests.helpers import use_target

# Names that break naive quoting or formatting, each as a table the engine accepts.
ODD_NAMES = [
    'dq"name',
    "bq`name",
    "sq'name",
    "with spaces inside",
    "pct%name",
    "%s",
    ":name",
    "a::b",
    "back\\slash",
    "trailing\\",
    "back\\:colon",
    "ünïcödé_表",
    "semi;colon",
    "dash--dash",
    "MixedCase",
    'x"; DROP TABLE keep; --',
    "x`; DROP TABLE keep; --",
]
# The longest name each server takes (PostgreSQL: 63 bytes; MariaDB: 64 characters).
LONGEST = {"sqlite": 200, "postgresql": 63, "mysql": 64}
# A name a positional paramstyle cannot be handed safely: SQLAlchemy turns %(name)s
# into ? by a pattern over the compiled SQL, which "%(" in a name would start. SQLite
# targets therefore bind named parameters, so there too the name is merely odd.
PYFORMAT_OPENING = "pct%(x)s"
HOSTILE_NAMES = [
    'x"; DROP TABLE keep; --',
    "x`; DROP TABLE keep; --",
    "x'; DROP TABLE keep; --",
    "keep; DROP TABLE keep",
    "%s%s%s",
    ":keep",
    "keep\\",
    '"keep"',
    "`keep`",
    "KEEP",
    "keep ",
]
AWKWARD = "\"'`%\\:;-_ $#@.,()[]{}*?=+/|<>!~^&éßøЖ中文ا"


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


def quoted(dialect: str, name: str) -> str:
    """The name quoted by the engine's own rules, written out here, not by aishell."""
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def admin(url: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Plain DB-API statements on the target, with no SQLAlchemy text() in between (it
    would read :name and % itself); `%s` or `?` binds values, as the driver says."""
    if dialect_of(url) == "sqlite":
        conn: Any = sqlite3.connect(make_url(url).database, isolation_level=None)
    else:
        engine = create_engine(url)
        conn = engine.raw_connection()
    try:

        def run(sql: str, *args: Any) -> list[tuple[Any, ...]]:
            with closing(conn.cursor()) as cur:
                cur.execute(sql, args) if args else cur.execute(sql)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return list(rows)

        yield run
    finally:
        conn.close()
        if dialect_of(url) != "sqlite":
            engine.dispose()


def tables_of(url: str) -> list[str]:
    with admin(url) as run:
        if dialect_of(url) == "sqlite":
            sql = "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        elif dialect_of(url) == "postgresql":
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        return sorted(r[0] for r in run(sql))


def create_table(url: str, name: str) -> None:
    """The table with two rows; on MariaDB its persistent statistics are left as they
    were at creation (no rows) until an ANALYZE."""
    dialect = dialect_of(url)
    options = " STATS_PERSISTENT=1 STATS_AUTO_RECALC=0" if dialect == "mysql" else ""
    with admin(url) as run:
        run(f"CREATE TABLE {quoted(dialect, name)} (id INTEGER PRIMARY KEY, k INTEGER){options}")
        run(f"INSERT INTO {quoted(dialect, name)} (id, k) VALUES (1, 2), (2, 3)")


def drop_table(url: str, name: str) -> None:
    with admin(url) as run:
        run(f"DROP TABLE {quoted(dialect_of(url), name)}")


def analyzed_rows(url: str, name: str) -> int | None:
    """The row count the server's planner statistics hold for the table (None: never
    analyzed), read from the server's own catalog."""
    dialect = dialect_of(url)
    with admin(url) as run:
        if dialect == "sqlite":
            if not run("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"):
                return None  # nothing was ever analyzed
            rows = run("SELECT stat FROM sqlite_stat1 WHERE tbl = ?", name)
            return int(rows[0][0].split()[0]) if rows else None
        if dialect == "postgresql":
            rows = run(
                "SELECT s.last_analyze IS NOT NULL, c.reltuples FROM pg_stat_user_tables s "
                "JOIN pg_class c ON c.oid = s.relid WHERE s.relname = %s",
                name,
            )
            return int(rows[0][1]) if rows and rows[0][0] else None
        # InnoDB keeps table names file-encoded here; the scratch database holds the
        # table and `keep` only.
        rows = run(
            "SELECT n_rows FROM mysql.innodb_table_stats "
            "WHERE database_name = DATABASE() AND table_name <> 'keep'"
        )
        assert len(rows) == 1, rows
        return int(rows[0][0]) or None


@pytest.fixture
def sqlite_url(home: Path) -> str:
    path = home / "ids.db"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


def own_target(home: Path, url: str) -> tuple[Config, str]:
    """The config with `url` as a target of a name unique to the test: run locks are
    named after the target, and on MariaDB they are the whole server's."""
    name = f"ids_{uuid.uuid4().hex[:10]}"
    return use_target(home, url, **{name: url}), name


def odd_names(dialect: str) -> list[str]:
    longest = ("Long_" + "x" * 300)[: LONGEST[dialect]]
    return [*ODD_NAMES, longest, PYFORMAT_OPENING]


def check_odd_names_are_maintained(home: Path, url: str) -> None:
    config, target = own_target(home, url)
    dialect = dialect_of(url)
    create_table(url, "keep")
    for name in odd_names(dialect):
        create_table(url, name)
        try:
            assert tables_of(url) == sorted(["keep", name])
            assert analyzed_rows(url, name) is None, name
            job = {"type": "quick", "tables": [name]}
            result = commands.run_job(config, "maintenance", job, target)
            assert result.status == "completed", (name, result.error)
            assert [s.status for s in result.steps] == ["succeeded"] * 3, name
            # The server analyzed exactly that table, and touched no other.
            assert analyzed_rows(url, name) == 2, name
            assert dialect == "mysql" or analyzed_rows(url, "keep") is None
            assert tables_of(url) == sorted(["keep", name]), name
            # The audit holds the statement, naming that table; it keeps the text handed
            # to the driver, where psycopg and PyMySQL read %% as %.
            audit = commands.run_statements(config, result.run_id)
            analyze = [s["sql"] for s in audit if s["sql"].upper().startswith("ANALYZE")]
            assert analyze and all(s["error"] is None for s in audit), (name, audit)
            sent = [sql if dialect == "sqlite" else sql.replace("%%", "%") for sql in analyze]
            assert all(quoted(dialect, name) in sql for sql in sent), (name, analyze)
        finally:
            drop_table(url, name)
    assert tables_of(url) == ["keep"]


def test_odd_names_are_maintained_on_sqlite(home: Path, sqlite_url: str) -> None:
    check_odd_names_are_maintained(home, sqlite_url)


def test_odd_names_are_maintained_on_a_server(home: Path, server_url: str) -> None:
    check_odd_names_are_maintained(home, server_url)


def test_a_positional_paramstyle_refuses_a_name_it_cannot_be_handed() -> None:
    """Fail closed where placeholders are found by a pattern: a SQLite dialect in the
    default positional style refuses the name in one line; targets bind named."""
    positional = make_url("sqlite://").get_dialect()()
    with pytest.raises(UnquotableIdentifier) as caught:
        quote_identifier(positional, PYFORMAT_OPENING)
    assert "cannot be quoted safely for sqlite" in str(caught.value)
    assert "\n" not in str(caught.value)
    named = make_url("sqlite://").get_dialect()(paramstyle="named")
    assert quote_identifier(named, PYFORMAT_OPENING) == '"pct%(x)s"'


def check_names_not_in_the_catalog_are_refused(home: Path, url: str, examples: int) -> None:
    config, target = own_target(home, url)
    create_table(url, "keep")
    seen = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        name=st.sampled_from(HOSTILE_NAMES)
        | st.text(st.sampled_from(AWKWARD + "ab"), min_size=1, max_size=20)
    )
    def check(name: str) -> None:
        nonlocal seen
        if name.strip() in ("keep", "") or "," in name:
            return  # the one real table; --tables splits on commas
        with pytest.raises(TargetError) as caught:
            commands.run_job(config, "maintenance", {"type": "quick", "tables": [name]}, target)
        assert "not found" in str(caught.value) and "\n" not in str(caught.value)
        seen += 1

    check()
    assert seen >= examples // 2
    assert tables_of(url) == ["keep"]
    assert dialect_of(url) == "mysql" or analyzed_rows(url, "keep") is None
    assert commands.list_runs(config) == []


def test_names_not_in_the_catalog_are_refused_on_sqlite(home: Path, sqlite_url: str) -> None:
    check_names_not_in_the_catalog_are_refused(home, sqlite_url, 150)


def test_names_not_in_the_catalog_are_refused_on_a_server(home: Path, server_url: str) -> None:
    check_names_not_in_the_catalog_are_refused(home, server_url, 60)


def test_quoting_is_exactly_the_dialects(home: Path) -> None:
    """The same function quotes for display and for execution; % is never doubled here."""
    pg = make_url("postgresql+psycopg://").get_dialect()()
    my = make_url("mysql+pymysql://").get_dialect()()
    assert quote_identifier(pg, 'a%b"c') == '"a%b""c"'
    assert quote_identifier(my, "a%b`c") == "`a%b``c`"
    assert quote_identifier(pg, ":x") == '"\\:x"'


def test_a_value_cannot_smuggle_sql_through_a_param(home: Path, demo_db: Path) -> None:
    """Values are bound: an enum param refuses text, a plan refuses unknown params."""
    from aishell.plan.model import Plan, Step

    config = load_config(home=home)
    bad = Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "x"},
        (
            Step(
                "step_0",
                "generate_maintenance_report",
                {"maintenance_type": "quick'; DROP TABLE users; --"},
            ),
        ),
    )
    with pytest.raises(PlanError, match="is not one of"):
        commands.apply_plan(config, bad)
    smuggled = Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "x"},
        (Step("step_0", "count_table_rows", {"table": "users", "where": "1=1; DROP TABLE users"}),),
    )
    with pytest.raises(PlanError, match="unknown parameter 'where'"):
        commands.apply_plan(config, smuggled)
