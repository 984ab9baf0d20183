"""Hostile and awkward identifiers and values through every tool on all three dialects.

Two properties, over more than 10,000 generated examples in all:
- a name that is not in the catalog is refused before any SQL is built, by every
  tool, and the schema is unchanged;
- a real table with an awkward name (quotes, backticks, %, backslashes, colons,
  spaces, non-ASCII) works through the tools: the SQL reaches exactly that table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from aishell import schema
from aishell.catalog import user_tables
from aishell.commands import load_catalog
from aishell.config import Config, load_config
from aishell.errors import PlanError, TargetError
from aishell.executor import _check_identifiers
from aishell.registry import ToolContext
from aishell.sqltext import UnquotableIdentifier, quote_identifier
from aishell.targets import open_target

# Characters that break naive quoting, and ordinary ones around them.
AWKWARD = "\"'`%\\:;-_ $#@.,()[]{}*?=+/|<>!~^&éßøЖ中文ا"
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
    "keep\x00",
]
names = st.text(alphabet=st.sampled_from(AWKWARD + "abcXYZ019"), min_size=1, max_size=24)
hostile = st.one_of(st.sampled_from(HOSTILE_NAMES), names)

SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def configure(home: Path, url: str) -> Config:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


@contextmanager
def target_of(dialect: str, home: Path) -> Iterator[Config]:
    if dialect == "sqlite":
        db = home / "ids.db"
        sqlite3.connect(db).close()
        yield configure(home, "sqlite:///ids.db")
    elif dialect == "postgresql":
        from tests.services import scratch_postgresql

        with scratch_postgresql() as url:
            yield configure(home, url)
    else:
        from tests.services import scratch_mysql

        with scratch_mysql() as url:
            yield configure(home, url)


def table_tools(config: Config, dialect: str) -> list:
    registry = load_catalog(config)
    return [
        t
        for t in registry.tools.values()
        if dialect in t.implementations
        and any(kind == "table" for kind, _ in schema.identifier_params(t.params).values())
    ]


def params_for(tool, name: str) -> dict:
    params = {}
    for param, (kind, is_list) in schema.identifier_params(tool.params).items():
        if kind == "table":
            params[param] = [name] if is_list else name
        elif kind == "column" and param in tool.params.get("required", []):
            params[param] = "k"  # the test tables' second column
    if tool.name == "generate_maintenance_report":
        params["maintenance_type"] = "quick"
    if tool.name == "delete_old_records":
        # k holds 2 and 3 (Unix time): a cutoff of 0 keeps both rows.
        params.update(retention_days=30, cutoff=0)
    return schema.with_defaults(params, tool.params)


def fits(dialect: str, name: str) -> bool:
    """Names the server itself accepts as written (no silent truncation)."""
    if "\x00" in name:
        return False
    if dialect in ("postgresql", "mysql") and len(name.encode()) > 60:
        return False
    if dialect == "sqlite" and "%(" in name:
        return False  # refused on SQLite: see the test below
    return not (dialect == "mysql" and (name != name.rstrip() or name.endswith(" ")))


def test_a_name_with_a_pyformat_opening_is_refused_where_placeholders_are_positional(home):
    """SQLAlchemy turns %(name)s into SQLite's ? by a pattern over the compiled text;
    a table named '%(' followed by a bound value would join the two."""
    with target_of("sqlite", home) as config:
        handle = open_target(config, "db")
        with pytest.raises(UnquotableIdentifier, match="cannot be quoted safely for sqlite"):
            handle.quote("%(")
        assert handle.quote("100%") == '"100%"'
        handle.close()


EXAMPLES = {
    # (refused names, real awkward tables) per dialect
    "sqlite": (3000, 3000),
    "postgresql": (1500, 700),
    "mysql": (1500, 500),
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_names_not_in_the_catalog_are_refused_by_every_tool(dialect, home):
    with target_of(dialect, home) as config:
        handle = open_target(config, "db")
        conn = handle.connect()
        conn.execute(text(f"CREATE TABLE {handle.quote('keep')} (id INTEGER PRIMARY KEY)"))
        tools = table_tools(config, dialect)
        refused = 0

        @settings(max_examples=EXAMPLES[dialect][0], **SETTINGS)
        @given(name=hostile)
        def check(name: str) -> None:
            nonlocal refused
            assume(name != "keep")
            for tool in tools:
                params = params_for(tool, name)
                assert schema.validate(params, tool.params) == []
                with pytest.raises(TargetError, match="not found in target 'db'"):
                    _check_identifiers(conn, tool, params, "db", user_tables(conn))
                refused += 1
            assert user_tables(conn) == ["keep"]

        try:
            check()
        finally:
            conn.close()
            handle.close()
        assert refused >= EXAMPLES[dialect][0] * len(tools) // 2


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_real_tables_with_awkward_names_work_through_the_tools(dialect, home):
    with target_of(dialect, home) as config:
        handle = open_target(config, "db")
        conn = handle.connect()
        conn.execute(text(f"CREATE TABLE {handle.quote('keep')} (id INTEGER PRIMARY KEY)"))
        tools = [t for t in table_tools(config, dialect) if t.name != "vacuum_full_table"]
        ctx = ToolContext(
            conn,
            handle.dialect,
            "db",
            backup_dir=config.home / "backups",
            quote_identifier=handle.quote,
        )

        ran = 0

        @settings(max_examples=EXAMPLES[dialect][1], **SETTINGS)
        @given(name=names, tool=st.sampled_from(tools))
        def check(name: str, tool) -> None:
            nonlocal ran
            assume(fits(dialect, name) and name != "keep")
            ran += 1
            quoted = handle.quote(name)
            index = handle.quote(f"i_{name}"[:60])
            conn.execute(text(f"CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, k INTEGER)"))
            try:
                conn.execute(text(f"CREATE INDEX {index} ON {quoted} (k)"))
                conn.execute(text(f"INSERT INTO {quoted} (id, k) VALUES (1, 2), (2, 3)"))
                assert sorted(user_tables(conn)) == sorted(["keep", name])
                params = params_for(tool, name)
                _check_identifiers(conn, tool, params, "db", user_tables(conn))
                impl = tool.implementation(dialect)
                assert impl.render_sql(params, ctx)
                output = impl.run(params, ctx)
                assert isinstance(output, dict)
                # The statements reached that table and no other (repair on MySQL
                # copies the table aside first: that copy is expected).
                copies = [t for t in user_tables(conn) if "_aishell_bak_" in t]
                for copy in copies:
                    conn.execute(text(f"DROP TABLE {handle.quote(copy)}"))
                assert len(copies) <= 1
                assert sorted(user_tables(conn)) == sorted(["keep", name])
                count = conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar()
                assert count == 2
            finally:
                conn.execute(text(f"DROP TABLE {quoted}"))
            assert user_tables(conn) == ["keep"]

        try:
            check()
        finally:
            conn.close()
            handle.close()
        assert ran >= EXAMPLES[dialect][1]


def test_quoting_is_exactly_the_dialects(home):
    """The same function quotes for display and for execution; % is never doubled here."""
    from sqlalchemy.engine import make_url

    pg = make_url("postgresql+psycopg://").get_dialect()()
    my = make_url("mysql+pymysql://").get_dialect()()
    assert quote_identifier(pg, 'a%b"c') == '"a%b""c"'
    assert quote_identifier(my, "a%b`c") == "`a%b``c`"
    assert quote_identifier(pg, ":x") == '"\\:x"'


def test_a_value_cannot_smuggle_sql_through_a_param(home, demo_db):
    """Values are bound: an enum param refuses text, a plan refuses unknown params."""
    from aishell import commands
    from aishell.plan import Plan, Step

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
