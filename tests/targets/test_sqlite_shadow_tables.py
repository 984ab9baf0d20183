"""A virtual table's shadow tables (FTS3/4/5's, R-Tree's) hold its data in its module's
own layout: a row deleted from one corrupts the virtual table. They are no user table:
the catalog does not list them, maintenance does not plan for them, and a job naming one
is refused in one line naming its virtual table. A user table whose name only looks
like one stays a user table. Before SQLite 3.37 (no PRAGMA table_list) they are known
by their names, and that reading finds the same ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from aishell import commands
from aishell.errors import TargetError
from aishell.targets.catalog import sqlite_shadows_sql, table_columns, user_tables
from aishell.targets.tables import TableCatalog
from tests.helpers import query, use_target

SHADOWS = {
    "ft_config": "ft",
    "ft_content": "ft",
    "ft_data": "ft",
    "ft_docsize": "ft",
    "ft_idx": "ft",
    "f4_content": "f4",
    "f4_docsize": "f4",
    "f4_segdir": "f4",
    "f4_segments": "f4",
    "f4_stat": "f4",
    "rt_node": "rt",
    "rt_parent": "rt",
    "rt_rowid": "rt",
}
# Virtual tables, and user tables named as a shadow table would be.
OWN = {"ft", "f4", "rt", "logs", "ft_archive", "logs_content", "ft_content_copy"}


def _made(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, msg TEXT);
        CREATE TABLE ft_archive (id INTEGER PRIMARY KEY, c1 TEXT);
        CREATE TABLE logs_content (id INTEGER PRIMARY KEY, c1 TEXT);
        CREATE TABLE ft_content_copy (id INTEGER PRIMARY KEY, c1 TEXT);
        CREATE VIRTUAL TABLE ft USING fts5(body, created_at UNINDEXED);
        CREATE VIRTUAL TABLE f4 USING fts4(body);
        CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
        INSERT INTO ft (body, created_at)
        SELECT 'hello world ' || i, datetime('now', '-' || (i % 100) || ' days') FROM n;
        INSERT INTO f4 (body) VALUES ('hello');
        INSERT INTO rt VALUES (1, 0, 1);
        """
    )
    conn.close()
    return f"sqlite:///{path}"


def test_the_catalog_lists_no_shadow_table(tmp_path):
    engine = create_engine(_made(tmp_path / "fts.db"))
    with engine.connect() as conn:
        catalog = TableCatalog.read(conn)
        assert set(catalog.names) == OWN
        assert set(user_tables(conn, shadows=False)) == OWN
        # A backup holds and counts them, as it lists a copy's tables.
        assert set(user_tables(conn)) == OWN | set(SHADOWS)
    engine.dispose()


@pytest.mark.parametrize("table_list", [True, False], ids=["table_list", "by_name"])
def test_each_shadow_table_is_found_with_its_virtual_table(tmp_path, table_list):
    """PRAGMA table_list's reading (SQLite 3.37 on) and the names' (before it)."""
    _made(tmp_path / "fts.db")
    found = dict(query(tmp_path / "fts.db", sqlite_shadows_sql(table_list)))
    assert found == SHADOWS


def test_a_purge_of_a_shadow_table_is_refused_naming_its_virtual_table(home, tmp_path):
    """The probe's purge of ft_content by its c1 column: refused in one line, and the
    full-text index stays whole."""
    path = tmp_path / "fts.db"
    config = use_target(home, _made(path))
    before = query(path, "SELECT count(*) FROM ft_content")
    job = {"table": "ft_content", "date_column": "c1", "retention_days": 70}
    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", job)
    error = str(refused.value)
    assert "'ft_content' belongs to virtual table 'ft'" in error, error
    assert "\n" not in error
    assert query(path, "SELECT count(*) FROM ft_content") == before
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO ft (ft) VALUES ('integrity-check')")  # raises if corrupt
    conn.close()


def test_maintenance_plans_no_shadow_table(home, tmp_path):
    config = use_target(home, _made(tmp_path / "fts.db"))
    plan = commands.make_plan(config, "maintenance", {"type": "full"})
    named = {t for step in plan.steps for t in step.params.get("tables") or []}
    assert named, plan.steps
    assert not named & set(SHADOWS), named
    with pytest.raises(TargetError) as refused:
        commands.make_plan(config, "maintenance", {"type": "full", "tables": ["rt_node"]})
    assert "'rt_node' belongs to virtual table 'rt'" in str(refused.value), refused.value


def test_generated_columns_are_columns_and_hidden_ones_are_not(tmp_path):
    """A generated column is one of the table's (not one a row is inserted with); an
    FTS5 table's hidden columns (named after the table, and rank) are none."""
    path = tmp_path / "columns.db"
    _made(path)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE g (id INTEGER PRIMARY KEY, ts INTEGER, "
        "day TEXT GENERATED ALWAYS AS (date(ts, 'unixepoch')) VIRTUAL, "
        "sday TEXT GENERATED ALWAYS AS (date(ts, 'unixepoch')) STORED)"
    )
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert table_columns(conn, "g") == ["id", "ts", "day", "sday"]
        assert table_columns(conn, "g", stored_only=True) == ["id", "ts"]
        assert table_columns(conn, "ft") == ["body", "created_at"]
        catalog = TableCatalog.read(conn)
        assert catalog.columns(conn, "g") == ["id", "ts", "day", "sday"]
        assert catalog.columns(conn, "ft") == ["body", "created_at"]
        catalog.check_column(conn, "g", "day")
    engine.dispose()


def test_a_step_naming_no_tables_works_on_no_shadow_table(tmp_path: Path) -> None:

    from aishell.handlers import step_tables
    from aishell.tool.context import ToolContext

    path = tmp_path / "steps.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
    raw.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY)")
    raw.commit()
    raw.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        ctx = ToolContext(conn, "sqlite", "steps")
        # The virtual table is the user's; its shadow tables (notes_data, ...) are fts5's.
        assert sorted(step_tables({}, ctx)) == ["notes", "plain"]
    engine.dispose()
