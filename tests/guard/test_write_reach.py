"""What a step's writes do beyond the rows their statements name, on each engine: a
foreign key that cascades waits for a person's yes to that very step, a trigger or rule
that fires is among the reasons for approval. Site tools here; the purge's own cases
are in test_log_cleanup.py."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from aishell.guard.writereach import Reach, write_reach
from aishell.guard.writtentables import Write, view_bases, written
from aishell.policy.approvers import PreApproved
from tests.guard.test_guard import (
    Cases,
    dialect_of,
    execute,
    fingerprint,
    make_tables,
    run_one,
    scalar,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)
from tests.helpers import one_step_plan, use_target
from tests.services import scratch_mysql

CHILD = {
    "postgresql": "CREATE TABLE child (id integer PRIMARY KEY, "
    "t_id integer REFERENCES t (id) ON DELETE {action})",
    "mysql": "CREATE TABLE child (id integer PRIMARY KEY, t_id integer, "
    "FOREIGN KEY (t_id) REFERENCES t (id) ON DELETE {action}) ENGINE=InnoDB",
}
DELETES = {
    "plain": "DELETE FROM {table} WHERE id < 3",
    # A data-modifying CTE deletes as surely.
    "cte": "WITH gone AS (DELETE FROM {table} WHERE id < 3 RETURNING id) SELECT count(*) FROM gone",
}


def sql_tool(home: Path, url: str, name: str, risk: str, sql: str) -> Config:
    folder = home / f"site_{name}"
    write_tool(folder, tool_yaml(name, risk, {dialect_of(url): {"sql": sql}}))
    return site_config(home, url, folder)


# The deletes and the keys' actions each engine is tried with.
CASCADES = {
    "postgresql": [("plain", "CASCADE"), ("cte", "SET NULL")],
    "mysql": [("plain", "CASCADE"), ("plain", "SET NULL")],
}


def fresh_tables(url: str, *statements: str) -> None:
    """make_tables' tables and `statements` anew (for the next case on one database):
    what a case made of them, and whatever references them, dropped first."""
    execute(url, "DROP TABLE IF EXISTS grandchild", "DROP TABLE IF EXISTS child")
    execute(url, "DROP TABLE IF EXISTS t", "DROP TABLE IF EXISTS other")
    make_tables(url)
    execute(url, *statements)


@pytest.mark.parametrize("dialect", sorted(CASCADES))
def test_a_delete_that_cascades_waits_for_a_yes_to_that_very_step(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """Each delete and action of the engine, on one database, its tables made anew."""
    with scratch_database(dialect, tmp_path) as url, Cases() as case:
        for delete, action in CASCADES[dialect]:
            with case(f"{delete}-{action}"):
                child = CHILD[dialect].format(action=action)
                fresh_tables(url, child, "INSERT INTO child VALUES (1, 1), (2, 2)")
                config = sql_tool(home, url, "trim_t", "high", DELETES[delete])

                run = run_one(config, url, "trim_t", {"table": "t"})

                step = run.steps[0]
                assert run.status == "waiting_approval" and step.status == "waiting_approval"
                said = " ".join(step.personal)
                assert "deleting from t also acts on " in said
                assert f"child.t_id (ON DELETE {action}, " in said
                assert "though no statement of the step names them" in said
                assert fingerprint(url) == (10, 55)
                assert fingerprint(url, "child") == (2, 3)


UPDATE_TRIGGER = {
    "postgresql": [
        "CREATE FUNCTION touched() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO other (id, v) VALUES (100 + NEW.id, 0); RETURN NEW; END $$",
        "CREATE TRIGGER t_touched AFTER UPDATE OF v ON t FOR EACH ROW EXECUTE FUNCTION touched()",
        "CREATE TRIGGER t_gone AFTER DELETE ON t FOR EACH ROW EXECUTE FUNCTION touched()",
    ],
    "mysql": [
        "CREATE TRIGGER t_touched AFTER UPDATE ON t FOR EACH ROW "
        "INSERT INTO other (id, v) VALUES (100 + NEW.id, 0)",
        "CREATE TRIGGER t_gone AFTER DELETE ON t FOR EACH ROW "
        "INSERT INTO other (id, v) VALUES (200 + OLD.id, 0)",
    ],
    "sqlite": [
        "CREATE TRIGGER t_touched AFTER UPDATE OF v ON t BEGIN "
        "INSERT INTO other (id, v) VALUES (100 + NEW.id, 0); END",
        "CREATE TRIGGER t_gone AFTER DELETE ON t BEGIN "
        "INSERT INTO other (id, v) VALUES (200 + OLD.id, 0); END",
    ],
}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_a_trigger_an_update_fires_is_named_and_runs_once_approved(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """Only the trigger on the statement's event is named: not the one on DELETE."""
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(url, *UPDATE_TRIGGER[dialect])
        config = sql_tool(
            home, url, "bump_t", "medium", "UPDATE {table} SET v = v + 1 WHERE id < 3"
        )
        plan = one_step_plan("maintenance", "db", dialect, "bump_t", {"table": "t"})

        dry = commands.apply_plan(config, plan, dry_run=True)
        run = run_one(config, url, "bump_t", {"table": "t"})

        fires = dry.steps[0].estimate["fires"]
        assert len(fires) == 1 and fires[0].startswith("updating t fires trigger t_touched")
        assert fires[0] in dry.steps[0].reasons
        assert dry.steps[0].estimate["cascades"] == []
        assert run.status == "completed", run.steps[0].error
        assert fingerprint(url, "other") == (7, 218)  # what the trigger wrote: ids 101, 102


ON_UPDATE = {
    "postgresql": "CREATE TABLE child (id integer PRIMARY KEY, "
    "t_id integer REFERENCES t (id) ON UPDATE CASCADE)",
    "mysql": "CREATE TABLE child (id integer PRIMARY KEY, t_id integer, "
    "FOREIGN KEY (t_id) REFERENCES t (id) ON UPDATE CASCADE) ENGINE=InnoDB",
}


def approved_and_resumed(config: Config, run_id: str) -> None:
    """A person's yes to step 0, then the run resumed: it completes."""
    commands.decide_steps(config, run_id, "approved", step=0)
    resumed = commands.resume_run(config, run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_an_update_of_a_referenced_key_that_cascades_waits_for_that_very_step(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """Only an UPDATE that sets a column the key references cascades: setting another
    column names no key and runs. Each on one database, its tables made anew."""
    with scratch_database(dialect, tmp_path) as url, Cases() as case:
        for sets in ("id = id + 100", "v = v + 1"):
            with case(sets):
                fresh_tables(url, ON_UPDATE[dialect], "INSERT INTO child VALUES (1, 1), (2, 2)")
                sql = f"UPDATE {{table}} SET {sets} WHERE id < 3"
                config = sql_tool(home, url, "set_t", "medium", sql)
                _update_case(config, url, sets)


def _update_case(config: Config, url: str, sets: str) -> None:
    run = run_one(config, url, "set_t", {"table": "t"})

    if sets.startswith("v"):
        assert run.status == "completed", run.error
        assert run.steps[0].estimate["cascades"] == []
        assert scalar(url, "SELECT sum(v) FROM t") == 57
        return
    said = " ".join(run.steps[0].personal)
    assert run.status == "waiting_approval", run.error
    assert "updating t also acts on " in said and "child.t_id (ON UPDATE CASCADE" in said
    assert fingerprint(url) == (10, 55) and fingerprint(url, "child") == (2, 3)
    approved_and_resumed(config, run.run_id)
    assert scalar(url, "SELECT sum(t_id) FROM child") == 203  # what the cascade wrote


def gone_trigger(dialect: str, table: str) -> list[str]:
    """A trigger on `table`'s DELETE that writes a row of `other` (id 100 + the row's)."""
    insert = "INSERT INTO other (id, v) VALUES (100 + OLD.id, 0)"
    if dialect == "mysql":
        return [f"CREATE TRIGGER {table}_gone AFTER DELETE ON {table} FOR EACH ROW {insert}"]
    return [
        f"CREATE FUNCTION {table}_gone() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {insert}; RETURN OLD; END $$",
        f"CREATE TRIGGER {table}_gone AFTER DELETE ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION {table}_gone()",
    ]


# t <- child (ON DELETE CASCADE) <- grandchild (ON DELETE SET NULL)
CHAIN = {
    "postgresql": [
        CHILD["postgresql"].format(action="CASCADE"),
        "CREATE TABLE grandchild (id integer PRIMARY KEY, "
        "c_id integer REFERENCES child (id) ON DELETE SET NULL)",
    ],
    "mysql": [
        CHILD["mysql"].format(action="CASCADE"),
        "CREATE TABLE grandchild (id integer PRIMARY KEY, c_id integer, "
        "FOREIGN KEY (c_id) REFERENCES child (id) ON DELETE SET NULL) ENGINE=InnoDB",
    ],
}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_cascade_is_followed_through_the_tables_it_writes(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """The grandchild's key is named, and the child's trigger where the engine runs it:
    PostgreSQL runs a table's triggers for a cascade's rows, InnoDB does not (shown by
    running it)."""
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(
            url,
            *CHAIN[dialect],
            *gone_trigger(dialect, "child"),
            "INSERT INTO child VALUES (1, 1), (2, 2), (3, 3)",
            "INSERT INTO grandchild VALUES (1, 1), (2, 3)",
        )
        config = sql_tool(home, url, "trim_t", "high", "DELETE FROM {table} WHERE id < 3")

        run = run_one(config, url, "trim_t", {"table": "t"})

        step = run.steps[0]
        said = " ".join(step.personal)
        assert run.status == "waiting_approval", run.error
        assert "deleting from t also acts on " in said and "child.t_id (ON DELETE CASCADE" in said
        assert "deleting from child (by the cascade from t) also acts on " in said
        assert "grandchild.c_id (ON DELETE SET NULL" in said
        fired = [f for f in step.estimate["fires"] if "child_gone" in f]
        assert fingerprint(url, "child") == (3, 6)
        approved_and_resumed(config, run.run_id)
        assert fingerprint(url, "child") == (1, 3)
        assert scalar(url, "SELECT count(*) FROM grandchild WHERE c_id IS NULL") == 1
        ran = fingerprint(url, "other") != (5, 15)
        assert ran == (dialect == "postgresql")
        assert bool(fired) == ran
        if fired:
            assert fired[0].startswith("deleting from child (by the cascade from t) fires ")


def test_a_key_that_references_its_own_table_is_followed_once(home: Path, tmp_path: Path) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(url, "ALTER TABLE t ADD parent integer REFERENCES t (id) ON DELETE CASCADE")
        config = sql_tool(home, url, "trim_t", "high", "DELETE FROM {table} WHERE id = 1")
        plan = one_step_plan("maintenance", "db", "postgresql", "trim_t", {"table": "t"})

        dry = commands.apply_plan(config, plan, dry_run=True)

        cascades = dry.steps[0].estimate["cascades"]
        assert 1 <= len(cascades) <= 2, cascades
        assert all("t.parent (ON DELETE CASCADE" in c for c in cascades)


def test_mysql_multi_table_delete_names_the_table_it_deletes_from(
    home: Path, tmp_path: Path
) -> None:
    """DELETE q FROM t AS p JOIN other AS q deletes from other, not t: other's trigger is
    what runs."""
    with scratch_database("mysql", tmp_path) as url:
        make_tables(url)
        execute(
            url,
            "CREATE TABLE gone (id integer PRIMARY KEY)",
            "CREATE TRIGGER other_gone AFTER DELETE ON other FOR EACH ROW "
            "INSERT INTO gone VALUES (OLD.id)",
            "CREATE TRIGGER t_gone AFTER DELETE ON t FOR EACH ROW "
            "INSERT INTO gone VALUES (1000 + OLD.id)",
        )
        sql = "DELETE q FROM {table} AS p JOIN other AS q ON p.id = q.id WHERE p.id < 3"
        config = sql_tool(home, url, "trim_other", "medium", sql)

        run = run_one(config, url, "trim_other", {"table": "t"})

        fires = run.steps[0].estimate["fires"]
        assert fires == ["deleting from other fires trigger other_gone (AFTER DELETE)"]
        assert run.status == "completed", run.error
        assert fingerprint(url, "gone") == (2, 3) and fingerprint(url) == (10, 55)


def test_truncate_cascade_names_every_table_it_empties(home: Path, tmp_path: Path) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(
            url,
            "CREATE TABLE child (id integer PRIMARY KEY, t_id integer REFERENCES t (id))",
            "CREATE TABLE grandchild (id integer PRIMARY KEY, c_id integer REFERENCES child (id))",
            "INSERT INTO child VALUES (1, 1)",
            "CREATE FUNCTION emptied() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NULL; END $$",
            "CREATE TRIGGER t_emptied AFTER TRUNCATE ON t EXECUTE FUNCTION emptied()",
        )
        config = sql_tool(home, url, "empty_t", "critical", "TRUNCATE {table} CASCADE")
        plan = one_step_plan("maintenance", "db", "postgresql", "empty_t", {"table": "t"})

        dry = commands.apply_plan(config, plan, dry_run=True)

        estimate = dry.steps[0].estimate
        assert [c.split(" (")[0] for c in estimate["cascades"]] == [
            "truncating t also acts on child.t_id",
            "truncating child",
        ]
        assert "grandchild.c_id (TRUNCATE ... CASCADE empties it" in estimate["cascades"][1]
        assert estimate["fires"] == ["truncating t fires trigger t_emptied (runs emptied)"]
        assert fingerprint(url) == (10, 55) and fingerprint(url, "child") == (1, 1)


D, U, INS, T = "DELETE", "UPDATE", "INSERT", "TRUNCATE"


@pytest.mark.parametrize(
    ("dialect", "sql", "found"),
    [
        ("postgresql", 'DELETE FROM "s"."T" WHERE id = :n', [Write(D, "s", "T")]),
        # PostgreSQL folds unquoted names to lower case, as its catalog holds them.
        ("postgresql", "DELETE FROM S.Events WHERE id = :n", [Write(D, "s", "events")]),
        ("mysql", "DELETE FROM Events WHERE id = :n", [Write(D, None, "Events")]),
        (
            "postgresql",
            "WITH g AS (DELETE FROM a RETURNING *) INSERT INTO b (x) SELECT x FROM g",
            [Write(INS, None, "b"), Write(D, None, "a")],
        ),
        ("mysql", "UPDATE `t` SET v = :v WHERE id = :n", [Write(U, None, "t", frozenset({"v"}))]),
        # Columns as the catalog compares them: PostgreSQL's folded, MySQL's in lower case.
        (
            "postgresql",
            'UPDATE t SET "V" = 1, W = 2 FROM o WHERE t.id = o.id',
            [Write(U, None, "t", frozenset({"V", "w"}))],
        ),
        ("postgresql", "UPDATE t SET (v, w) = (1, 2)", [Write(U, None, "t", frozenset("vw"))]),
        # MySQL's multi-table forms write the tables they list or set, by name or alias.
        (
            "mysql",
            "DELETE q FROM a AS p JOIN b AS q ON p.id = q.id WHERE p.x = 1",
            [Write(D, None, "b")],
        ),
        (
            "mysql",
            "DELETE a, b FROM a JOIN b ON a.id = b.a_id",
            [Write(D, None, "a"), Write(D, None, "b")],
        ),
        (
            "mysql",
            "UPDATE a AS p JOIN b AS q ON p.id = q.a_id SET q.Y = 2",
            [Write(U, None, "b", frozenset({"y"}))],
        ),
        # An unqualified column of a multi-table UPDATE may be either table's.
        (
            "mysql",
            "UPDATE a, b SET y = 2 WHERE a.id = b.id",
            [Write(U, None, "a", frozenset({"y"})), Write(U, None, "b", frozenset({"y"}))],
        ),
        ("postgresql", "DELETE FROM t USING o WHERE t.id = o.id", [Write(D, None, "t")]),
        (
            "mysql",
            "REPLACE INTO `d`.`T x` (id) VALUES (:n)",
            [Write(INS, "d", "T x"), Write(D, "d", "T x")],
        ),
        (
            "mysql",
            "INSERT INTO t (id) VALUES (1) ON DUPLICATE KEY UPDATE V = 2",
            [Write(INS, None, "t"), Write(U, None, "t", frozenset({"v"}))],
        ),
        (
            "postgresql",
            "INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2",
            [Write(INS, None, "t"), Write(U, None, "t", frozenset({"v"}))],
        ),
        (
            "postgresql",
            "INSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING",
            [Write(INS, None, "t")],
        ),
        (
            "postgresql",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            [Write(INS, None, "t"), Write(U, None, "t"), Write(D, None, "t")],
        ),
        (
            "postgresql",
            "TRUNCATE a, S.b CASCADE",
            [Write(T, None, "a", cascade=True), Write(T, "s", "b", cascade=True)],
        ),
        ("mysql", "TRUNCATE TABLE `a`", [Write(T, None, "a")]),
        ("postgresql", 'VACUUM (ANALYZE) "deleted_rows"', []),
        ("sqlite", "SELECT count(*) FROM t WHERE v > :n", []),
        ("sqlite", "VACUUM", []),
        ("postgresql", "not sql at all ((", []),
    ],
)
def test_the_tables_a_statement_writes_are_read_by_the_parser(
    dialect: str, sql: str, found: list[Write]
) -> None:
    assert list(written(sql, dialect)) == found


def test_sqlite_keys_are_followed_where_the_session_acts_on_them(tmp_path: Path) -> None:
    """aishell's own sessions leave SQLite's foreign keys off (test_log_cleanup.py); a
    session that turns them on cascades, and its cascades fire the child's triggers. A
    key that names no column references the primary key."""
    engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys = ON")
        for sql in (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)",
            "CREATE TABLE child (id INTEGER PRIMARY KEY, t_id INTEGER REFERENCES t "
            "ON UPDATE CASCADE ON DELETE SET NULL)",
            "CREATE TABLE seen (what TEXT)",
            "CREATE TRIGGER child_moved AFTER UPDATE ON child BEGIN "
            "INSERT INTO seen VALUES ('moved'); END",
            "INSERT INTO t VALUES (1, 1), (2, 2)",
            "INSERT INTO child VALUES (1, 1), (2, 2)",
        ):
            conn.exec_driver_sql(sql)

        renumber = write_reach(conn, ["UPDATE t SET ID = id + 10 WHERE id = 1"])
        bump = write_reach(conn, ["UPDATE t SET v = 0"])
        trim = write_reach(conn, ["DELETE FROM t WHERE id = 2"])
        conn.exec_driver_sql("UPDATE t SET id = id + 10 WHERE id = 1")

        assert renumber is not None and bump is not None and trim is not None
        assert renumber.cascades == ["updating t also acts on child.t_id (ON UPDATE CASCADE)"]
        assert renumber.fires == [
            "updating child (by the cascade from t) fires trigger child_moved"
        ]
        assert bump.cascades == [] and bump.fires == []
        assert trim.cascades == ["deleting from t also acts on child.t_id (ON DELETE SET NULL)"]
        assert conn.exec_driver_sql("SELECT t_id FROM child WHERE id = 1").scalar() == 11
        assert conn.exec_driver_sql("SELECT count(*) FROM seen").scalar() == 1
    engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_write_through_a_view_is_a_write_of_its_table(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """A DELETE through a view (here a view of a view) deletes from the table: the
    table's keys cascade and its triggers fire, as the run shows once approved."""
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(
            url,
            CHILD[dialect].format(action="CASCADE"),
            *gone_trigger(dialect, "t"),
            "INSERT INTO child VALUES (1, 1), (2, 2), (3, 3)",
            "CREATE VIEW recent AS SELECT id, v FROM t WHERE v > 0",
            "CREATE VIEW recent_ids AS SELECT id FROM recent",
        )
        sql = "DELETE FROM recent_ids WHERE id < 3"
        config = sql_tool(home, url, "trim_view", "high", sql)

        run = run_one(config, url, "trim_view", {"table": "t"})

        step = run.steps[0]
        said = " ".join(step.personal)
        assert run.status == "waiting_approval", run.error
        assert "deleting from t (through the view recent) also acts on " in said
        assert "child.t_id (ON DELETE CASCADE" in said
        assert [f.split(" fires ")[0] for f in step.estimate["fires"]] == [
            "deleting from t (through the view recent)"
        ]
        approved_and_resumed(config, run.run_id)
        assert fingerprint(url, "child") == (1, 3)
        assert fingerprint(url, "other") == (7, 218)  # what t's trigger wrote


def test_a_write_of_a_partitioned_table_reaches_its_partitions_keys_and_triggers(
    home: Path, tmp_path: Path
) -> None:
    """A DELETE from the parent deletes from its partitions: a trigger made on one
    partition alone fires, and a key that references that partition alone cascades. A
    trigger made on the parent (copied to each partition) is named once."""
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(
            url,
            "CREATE TABLE events (id integer PRIMARY KEY, v integer) PARTITION BY RANGE (id)",
            "CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100)",
            "CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (100) TO (200)",
            "INSERT INTO events SELECT g, g FROM generate_series(1, 150) g",
            "CREATE TABLE tags (id integer PRIMARY KEY, "
            "event_id integer REFERENCES events_low (id) ON DELETE CASCADE)",
            "INSERT INTO tags VALUES (1, 1), (2, 50)",
            *gone_trigger("postgresql", "events_low"),
            "CREATE FUNCTION counted() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN OLD; END $$",
            "CREATE TRIGGER any_gone AFTER DELETE ON events FOR EACH ROW "
            "EXECUTE FUNCTION counted()",
        )
        sql = "DELETE FROM events WHERE id < 3"
        config = sql_tool(home, url, "trim_events", "high", sql)

        run = run_one(config, url, "trim_events", {"table": "t"})

        step = run.steps[0]
        assert run.status == "waiting_approval", run.error
        assert [c.split(" (")[0] for c in step.estimate["cascades"]] == [
            "deleting from events also acts on tags.event_id"
        ]
        assert step.estimate["fires"] == [
            "deleting from events fires trigger any_gone (runs counted)",
            "deleting from events fires trigger events_low_gone (runs events_low_gone) on "
            "events_low",
        ]
        approved_and_resumed(config, run.run_id)
        assert fingerprint(url, "tags") == (1, 2)
        assert fingerprint(url, "other") == (7, 218)  # what events_low_gone wrote: 101, 102


def test_a_write_of_an_inheritance_parent_reaches_its_children_but_an_insert_does_not(
    home: Path, tmp_path: Path
) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(
            url,
            "CREATE TABLE old_t (LIKE t) INHERITS (t)",
            "CREATE FUNCTION noted() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NULL; END $$",
            "CREATE TRIGGER old_touched AFTER DELETE OR INSERT ON old_t "
            "FOR EACH ROW EXECUTE FUNCTION noted()",
        )
        plan = one_step_plan("maintenance", "db", "postgresql", "touch_t", {"table": "t"})
        fired = {}
        for verb, sql in (
            ("delete", "DELETE FROM {table} WHERE id < 3"),
            ("insert", "INSERT INTO {table} (id, v) VALUES (100, 0)"),
        ):
            config = sql_tool(home, url, "touch_t", "high", sql)
            fired[verb] = commands.apply_plan(config, plan, dry_run=True).steps[0].estimate["fires"]

        assert fired == {
            "delete": ["deleting from t fires trigger old_touched (runs noted) on old_t"],
            "insert": [],
        }


@contextmanager
def mariadb_login(url: str, *grants: str) -> Iterator[str]:
    """A login of its own on the server of `url`, with only `grants`; its URL."""
    user = f"aishell_u_{uuid.uuid4().hex[:8]}"
    execute(
        url, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'", *[g.format(user=user) for g in grants]
    )
    try:
        yield str(make_url(url).set(username=user, password="pw").render_as_string(False))
    finally:
        execute(url, f"DROP USER '{user}'@'%'")


def asked(url: str, statements: list[str]) -> tuple[Reach | None, str]:
    """write_reach on a connection of `url`, and the catalog it asked."""
    sent: list[str] = []
    engine = create_engine(url)
    event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    try:
        with engine.connect() as conn:
            return write_reach(conn, statements), " ".join(sent)
    finally:
        engine.dispose()


def test_mariadb_keys_come_from_innodb_where_it_may_say_and_from_the_catalog_where_not(
    tmp_path: Path,
) -> None:
    """InnoDB's dictionary answers without opening every table on the server, a key of
    another database's table too; a login without the PROCESS privilege, and a database
    whose name InnoDB encodes, are asked through REFERENTIAL_CONSTRAINTS."""
    odd = f"aishell-{uuid.uuid4().hex[:8]}"  # encoded by InnoDB: 'aishell@002d...'
    with (
        scratch_database("mysql", tmp_path) as url,
        scratch_mysql() as other_url,
        scratch_mysql(name=odd) as odd_url,
    ):
        database, other = make_url(url).database, make_url(other_url).database
        for where in (url, odd_url):
            make_tables(where)
            execute(where, CHILD["mysql"].format(action="CASCADE"))
        execute(
            other_url,
            "CREATE TABLE elsewhere (id integer PRIMARY KEY, t_id integer, "
            f"FOREIGN KEY (t_id) REFERENCES `{database}`.t (id) ON DELETE SET NULL)",
        )
        delete = ["DELETE FROM t WHERE id < 3"]
        with mariadb_login(url, f"GRANT ALL ON `{database}`.* TO '{{user}}'@'%'") as plain:
            found = {
                "root": asked(url, delete),
                "no PROCESS": asked(plain, delete),
                "encoded name": asked(odd_url, delete),
            }

        acts = {
            who: sorted(c.split(" (", 1)[0] for c in reach.cascades)
            for who, (reach, _) in found.items()
            if reach is not None
        }
        catalog = {who: "REFERENTIAL_CONSTRAINTS" in sent for who, (_, sent) in found.items()}
        assert acts == {
            "root": sorted(
                [
                    f"deleting from t also acts on {database}.child.t_id",
                    f"deleting from t also acts on {other}.elsewhere.t_id",
                ]
            ),
            # What the catalog view shows is what the server lets the login see: not the
            # key in the database it has no grant on.
            "no PROCESS": [f"deleting from t also acts on {database}.child.t_id"],
            "encoded name": [f"deleting from t also acts on {odd}.child.t_id"],
        }
        assert catalog == {"root": False, "no PROCESS": True, "encoded name": True}
        assert "INNODB_SYS_FOREIGN" in found["root"][1]


def test_a_login_without_process_still_waits_for_a_cascade(home: Path, tmp_path: Path) -> None:
    """The refused look into InnoDB's dictionary is only a statement that failed: the
    step asks the catalog view, names the key and waits."""
    with scratch_database("mysql", tmp_path) as url:
        make_tables(url)
        execute(url, CHILD["mysql"].format(action="CASCADE"), "INSERT INTO child VALUES (1, 1)")
        grant = f"GRANT ALL ON `{make_url(url).database}`.* TO '{{user}}'@'%'"
        with mariadb_login(url, grant) as plain:
            config = sql_tool(home, plain, "trim_t", "high", "DELETE FROM {table} WHERE id < 3")
            run = run_one(config, plain, "trim_t", {"table": "t"})

        assert run.status == "waiting_approval", run.error
        assert "child.t_id (ON DELETE CASCADE" in " ".join(run.steps[0].personal)
        assert fingerprint(url) == (10, 55) and fingerprint(url, "child") == (1, 1)


EVENT_TRIGGERS = [
    "CREATE TABLE ddl_log (tag text)",
    "CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO ddl_log SELECT command_tag FROM pg_event_trigger_ddl_commands(); END $$",
    "CREATE FUNCTION quiet() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$",
    "CREATE EVENT TRIGGER on_index ON ddl_command_end WHEN TAG IN ('CREATE INDEX') "
    "EXECUTE FUNCTION log_ddl()",
    "CREATE EVENT TRIGGER on_drop ON sql_drop EXECUTE FUNCTION quiet()",
    "CREATE EVENT TRIGGER on_table ON ddl_command_start WHEN TAG IN ('CREATE TABLE') "
    "EXECUTE FUNCTION quiet()",
    "CREATE EVENT TRIGGER switched_off ON ddl_command_end EXECUTE FUNCTION quiet()",
    "ALTER EVENT TRIGGER switched_off DISABLE",
]


DDL_FIRES = [
    (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_v ON {table} (v)",
        ["CREATE INDEX fires event trigger on_index (ddl_command_end, runs log_ddl)"],
    ),
    (
        "-- a comment first\nCREATE INDEX t_w ON {table} (v)",
        ["CREATE INDEX fires event trigger on_index (ddl_command_end, runs log_ddl)"],
    ),
    (
        "DROP INDEX IF EXISTS t_nothing",
        ["DROP INDEX fires event trigger on_drop (sql_drop, runs quiet)"],
    ),
    ("ANALYZE {table}", []),
    ("REINDEX TABLE {table}", []),  # PostgreSQL 15 fires none on REINDEX
]


def test_ddl_names_the_event_triggers_it_fires(home: Path, tmp_path: Path) -> None:
    """Only an enabled event trigger whose tags and event take the command is named; the
    one named runs once the step is approved. Each command on one database: the
    indexes a case made are dropped, and the log emptied, before the next."""
    with scratch_database("postgresql", tmp_path) as url, Cases() as case:
        make_tables(url)
        execute(url, *EVENT_TRIGGERS)
        plan = one_step_plan("maintenance", "db", "postgresql", "ddl_t", {"table": "t"})
        for sql, fires in DDL_FIRES:
            with case(sql):
                execute(url, "DROP INDEX IF EXISTS t_v, t_w", "DELETE FROM ddl_log")
                config = sql_tool(home, url, "ddl_t", "medium", sql)

                dry = commands.apply_plan(config, plan, dry_run=True)
                run = run_one(config, url, "ddl_t", {"table": "t"})

                estimate = dry.steps[0].estimate
                assert (estimate or {}).get("fires", []) == fires
                assert all(f in dry.steps[0].reasons for f in fires)
                assert run.status == "completed", run.error
                logged = scalar(url, "SELECT string_agg(tag, ',') FROM ddl_log")
                assert logged == ("CREATE INDEX" if "on_index" in " ".join(fires) else None)


def test_an_unqualified_table_is_found_through_the_whole_search_path(
    home: Path, tmp_path: Path
) -> None:
    """With search_path app, public and t in public, the statement deletes from
    public.t: its key is named, though the first schema of the path is app. (The
    tool's table parameter names a table of the first schema, as aishell's catalog
    reads it; the statement names t itself.)"""
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        database = make_url(url).database
        execute(
            url,
            CHILD["postgresql"].format(action="CASCADE"),
            "INSERT INTO child VALUES (1, 1)",
            "CREATE SCHEMA app",
            "CREATE TABLE app.unrelated (id integer)",
            f'ALTER DATABASE "{database}" SET search_path = app, public',
        )
        config = sql_tool(home, url, "trim_t", "high", "DELETE FROM t WHERE id < 3")

        run = run_one(config, url, "trim_t", {"table": "unrelated"})

        assert run.status == "waiting_approval", run.error
        assert "child.t_id (ON DELETE CASCADE" in " ".join(run.steps[0].personal)
        assert fingerprint(url, "child") == (1, 1)


def test_a_view_definition_the_parser_cannot_read_names_no_table_and_says_so() -> None:
    """None, not an empty list: the write reach then says the tables are not known,
    which only a person's yes covers."""
    assert view_bases("select `d`.`t`.`id` AS `id` from `d`.`t`") == [("d", "t")]
    assert view_bases("select ((( not a view") is None


def test_an_sqlite_key_left_unenforced_is_said_once_without_a_contrary_reason(
    home: Path, tmp_path: Path
) -> None:
    """A child's ON DELETE CASCADE that aishell's session (foreign_keys off) does not act
    on is one reason saying its rows stay; before, the reason went on "those rows go or
    change with it", the opposite."""
    path = tmp_path / "fk.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, "
            "log_id INTEGER REFERENCES logs ON DELETE CASCADE)"
        )
        db.executemany("INSERT INTO logs VALUES (?, '2020-01-01')", [(i,) for i in range(1, 5)])
    config = use_target(home, f"sqlite:///{path}")
    job = {"table": "logs", "date_column": "created_at", "retention_days": 30}
    steps = commands.plan_job(config, "log_cleanup", job).to_dict()["steps"]
    (purge,) = [s for s in steps if s["tool"] == "delete_old_records"]
    (said,) = [r for r in purge["personal"] if "notes" in r]
    assert "is not acted on" in said and "go or change with it" not in said, said
