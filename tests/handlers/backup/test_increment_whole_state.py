"""An incremental backup restores the database as it was when the increment was taken,
not only the rows of the tables that changed: its schema (routines, indexes, views), its
sequences' values and its large objects too (SQLite: test_sqlite_increment_schema.py).
On PostgreSQL a changed schema (or any large object) makes the run take a whole backup
and say so; an increment carries every sequence's value; tables with views, materialized
views and foreign keys on them take increments. Validation of an increment compares the
restored copy's schema with the source's. Every database and file is the test's own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import Prompting
from tests.helpers import run_sql, use_target
from tests.services import engine, scratch_postgresql

YES = Prompting(ask=lambda request: "yes")


def _take(config: Any, kind: str) -> Any:
    done = commands.run_job(config, "backup", {"type": kind})
    assert done.status == "completed", done.error
    return done


def _restore_newest(config: Any, into: str) -> None:
    newest = commands.list_backups(config, "db")[0]
    done = commands.restore(config, newest["id"], into, approver=YES, create=True)
    assert done.status == "completed", done.error


def _pg_base(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE t (id integer PRIMARY KEY, v text)",
        "INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 20) i",
        "CREATE TABLE u (id integer)",
        "INSERT INTO u VALUES (1), (2)",
        "CREATE FUNCTION f() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "CREATE SEQUENCE s",
        "SELECT setval('s', 10)",
    )


def test_pg_a_changed_schema_sequence_and_large_object_come_back(home):
    with scratch_postgresql() as url, scratch_postgresql() as other:
        _pg_base(url)
        config = use_target(home, url, copy=other)
        _take(config, "full")
        run_sql(
            url,
            "CREATE OR REPLACE FUNCTION f() RETURNS integer LANGUAGE sql AS 'SELECT 2'",
            "SELECT setval('s', 99)",
            "SELECT lo_from_bytea(0, '\\xbeef'::bytea)",
            "UPDATE t SET v = 'changed' WHERE id = 5",
            "CREATE INDEX ui ON u (id)",
        )
        inc = _take(config, "incremental")
        newest = commands.list_backups(config, "db")[0]
        assert (
            newest["kind"] == "full" and "the schema changed" in newest["manifest"]["taken_whole"]
        )
        # Taken whole, it names every table it holds, as SQLite's does.
        assert sorted(inc.steps[1].output["changed_tables"]) == sorted(newest["manifest"]["tables"])
        assert inc.steps[1].output["taken_whole"] == newest["manifest"]["taken_whole"]
        assert inc.steps[2].output["ok"] is True
        _restore_newest(config, "copy")
        with engine(other).connect() as conn:
            assert conn.execute(text("SELECT f()")).scalar() == 2
            assert conn.execute(text("SELECT nextval('s')")).scalar() == 100
            assert conn.execute(text("SELECT count(*) FROM pg_largeobject_metadata")).scalar() == 1
            assert conn.execute(text("SELECT to_regclass('ui')")).scalar() == "ui"
            assert conn.execute(text("SELECT v FROM t WHERE id = 5")).scalar() == "changed"


def test_pg_an_increment_carries_every_sequence_value(home):
    with scratch_postgresql() as url, scratch_postgresql() as other:
        _pg_base(url)
        run_sql(url, "CREATE TABLE w (id serial PRIMARY KEY, n integer)")
        run_sql(url, "INSERT INTO w (n) SELECT i FROM generate_series(1, 5) i")
        config = use_target(home, url, copy=other)
        _take(config, "full")
        # Rows of t change; s and w's own sequence move on, w's rows do not.
        run_sql(
            url,
            "SELECT setval('s', 99)",
            "SELECT setval('w_id_seq', 40)",
            "UPDATE t SET v = 'changed' WHERE id = 5",
        )
        inc = _take(config, "incremental")
        assert inc.steps[1].output["changed_tables"] == ["t"]
        _restore_newest(config, "copy")
        with engine(other).connect() as conn:
            assert conn.execute(text("SELECT nextval('s')")).scalar() == 100
            assert conn.execute(text("SELECT nextval('w_id_seq')")).scalar() == 41
            assert conn.execute(text("SELECT v FROM t WHERE id = 5")).scalar() == "changed"
            assert conn.execute(text("SELECT count(*) FROM w")).scalar() == 5


def test_pg_increments_of_tables_with_views_and_foreign_keys(home):
    with scratch_postgresql() as url, scratch_postgresql() as other:
        run_sql(
            url,
            "CREATE TABLE t1 (id integer PRIMARY KEY, v text)",
            "INSERT INTO t1 SELECT i, 'v' || i FROM generate_series(1, 10) i",
            "CREATE TABLE child (id integer PRIMARY KEY, t1_id integer REFERENCES t1)",
            "INSERT INTO child SELECT i, i FROM generate_series(1, 10) i",
            "CREATE TABLE other (id integer PRIMARY KEY)",
            "INSERT INTO other VALUES (1), (2)",
            "CREATE TABLE refs (id integer PRIMARY KEY, other_id integer REFERENCES other)",
            "INSERT INTO refs VALUES (1, 1)",
            "CREATE VIEW v1 AS SELECT id, v FROM t1",
            "CREATE VIEW v2 AS SELECT id FROM v1 WHERE id > 2",
            "CREATE MATERIALIZED VIEW m1 AS SELECT count(*) AS n FROM t1",
        )
        config = use_target(home, url, copy=other)
        _take(config, "full")
        # t1 (under two views, a materialized view and a foreign key) and refs (whose
        # foreign key points at a table that did not change) change.
        run_sql(url, "UPDATE t1 SET v = 'changed' WHERE id = 3", "INSERT INTO refs VALUES (2, 2)")
        inc = _take(config, "incremental")
        assert {"t1", "refs"} <= set(inc.steps[1].output["changed_tables"])
        assert inc.steps[2].output["ok"] is True
        _restore_newest(config, "copy")
        with engine(other).connect() as conn:
            assert conn.execute(text("SELECT v FROM v1 WHERE id = 3")).scalar() == "changed"
            assert conn.execute(text("SELECT count(*) FROM v2")).scalar() == 8
            assert conn.execute(text("SELECT count(*) FROM child")).scalar() == 10
            assert conn.execute(text("SELECT count(*) FROM refs")).scalar() == 2
            assert conn.execute(text("SELECT n FROM m1")).scalar() == 10


def test_pg_validation_fails_a_chain_that_misses_a_schema_change(home, monkeypatch):
    from aishell.handlers.backup import pgincrement

    with scratch_postgresql() as url:
        _pg_base(url)
        config = use_target(home, url)
        _take(config, "full")
        run_sql(url, "CREATE INDEX ui ON u (id)", "UPDATE t SET v = 'changed' WHERE id = 5")
        # An increment taken as if nothing but rows had changed.
        monkeypatch.setattr(pgincrement, "taken_whole_because", lambda *args: None)
        done = commands.run_job(config, "backup", {"type": "incremental"})
        assert done.status == "failed"
        assert "differs from that of" in done.steps[2].error
