"""Reads that write without naming a function that writes: through a view, an aggregate,
an operator, a cast, a domain, a row-security policy (PostgreSQL), a view or a loadable
function (MariaDB). In a step that writes, the session is read-write: the guard must find
them. On a read-only session the database refuses them anyway."""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.handlers import Handler
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from aishell.tool.context import ToolContext
from tests.guard.test_guard import (
    Cases,
    execute,
    fingerprint,
    fresh_public,
    handler_tool,
    handlers,
    make_tables,
    raw_engine,
    refill,
    refusals,
    run_one,
    scratch_database,
)
from tests.helpers import use_target

__all__ = ["handlers"]  # the fixture, found by pytest in this module

# Each writes a row into `other` when it runs, and says what it was asked.
PG_WRITERS = [
    "CREATE FUNCTION w(x int) RETURNS boolean VOLATILE LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO other (id, v) SELECT max(id) + 1, 0 FROM other; RETURN true; END $$",
    "CREATE FUNCTION w_eq(a int, b int) RETURNS boolean VOLATILE LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO other (id, v) SELECT max(id) + 1, 0 FROM other; RETURN a = b; END $$",
    "CREATE FUNCTION w_sum(s int, x int) RETURNS int VOLATILE LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO other (id, v) SELECT max(id) + 1, 0 FROM other; "
    "RETURN coalesce(s, 0) + x; END $$",
]
PG_HIDDEN = {
    "view": ["CREATE VIEW hv AS SELECT id FROM t WHERE w(id)"],
    "view-over-view": [
        "CREATE VIEW hv AS SELECT id FROM t WHERE w(id)",
        "CREATE VIEW hv_over AS SELECT * FROM hv",
    ],
    "quoted-view": ['CREATE VIEW "Hv" AS SELECT id FROM t WHERE w(id)'],
    # The catalog's table_to_xml reads a relation whose name it is given at run time:
    # no dependency of hv's names the view it reads.
    "view-named-at-run-time": [
        "CREATE VIEW ev AS SELECT id FROM t WHERE w(id)",
        "CREATE VIEW hv AS SELECT "
        "pg_catalog.table_to_xml(('e' || 'v')::text::regclass, true, false, '') AS doc",
    ],
    # The aggregate itself is marked IMMUTABLE; its transition function writes.
    "aggregate": ["CREATE AGGREGATE h_agg(int) (sfunc = w_sum, stype = int)"],
    "operator": ["CREATE OPERATOR @> (LEFTARG = int, RIGHTARG = int, FUNCTION = w_eq)"],
    # What the parser cannot read counts as a write before any of this.
    "unreadable-operator": ["CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = w_eq)"],
    "domain": ["CREATE DOMAIN h_dom AS int CHECK (w(VALUE))"],
    "cast": [
        "CREATE TYPE h_mood AS ENUM ('ok')",
        "CREATE FUNCTION w_mood(x int) RETURNS h_mood VOLATILE LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO other (id, v) SELECT max(id) + 1, 0 FROM other; RETURN 'ok'; END $$",
        "CREATE CAST (int AS h_mood) WITH FUNCTION w_mood(int)",
    ],
    "policy": [
        "CREATE TABLE guarded (id int PRIMARY KEY)",
        "INSERT INTO guarded VALUES (1)",
        "CREATE POLICY p ON guarded USING (w(id))",
        "ALTER TABLE guarded ENABLE ROW LEVEL SECURITY",
    ],
}
PG_READS = {
    "view": "SELECT * FROM hv",
    "view-over-view": "SELECT count(*) FROM public.hv_over",
    "quoted-view": 'SELECT * FROM "Hv"',
    "view-named-at-run-time": "SELECT doc::text FROM hv",
    "aggregate": "SELECT h_agg(id) FROM t",
    "operator": "SELECT count(*) FROM t WHERE id @> 3",
    "unreadable-operator": "SELECT count(*) FROM t WHERE id === 3",
    "domain": "SELECT CAST(5 AS h_dom)",
    "cast": "SELECT 1::h_mood",
    "policy": "SELECT count(*) FROM guarded",
}
# Found by name: the statement counts as a write, and is refused before it is sent.
PG_NAMED = {
    "view",
    "view-over-view",
    "quoted-view",
    "view-named-at-run-time",
    "aggregate",
    "policy",
    "operator",
    "cast",
    "domain",
    "unreadable-operator",
}

MY_WRITER = (
    "CREATE FUNCTION g() RETURNS INT READS SQL DATA "
    "BEGIN INSERT INTO other (id, v) SELECT max(id) + 1, 0 FROM other; RETURN 1; END"
)
MY_HIDDEN = {
    "view": ["CREATE VIEW hv AS SELECT id, g() AS x FROM t"],
    "view-over-view": [
        "CREATE VIEW hv AS SELECT id, g() AS x FROM t",
        "CREATE VIEW hv_over AS SELECT id FROM hv",
    ],
}
MY_READS = {"view": "SELECT * FROM hv", "view-over-view": "SELECT count(*) FROM `HV_OVER`"}


def _delete_then_read(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 2})
    rows = conn.execute(text(params["statement"])).all()
    return {"rows": len(rows)}


def _read_then_delete(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    rows = conn.execute(text(params["statement"])).all()
    conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 3})
    return {"rows": len(rows)}


@contextmanager
def own_transaction(conn: Any) -> Iterator[None]:
    """A transaction of the tool's own, committed at the end (what autocommit began is
    ended first, so the isolation level may change)."""
    conn.commit()
    conn.execution_options(isolation_level="READ COMMITTED")
    try:
        yield
        conn.commit()
    finally:
        conn.rollback()
        conn.execution_options(isolation_level="AUTOCOMMIT")


def _read_in_transaction(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """A DELETE and a read in one transaction, in the order `n` says: the DELETE first
    (2) or the read first (3), as a purge's batch reads where it ends."""
    conn = ctx.connection
    delete = f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"
    with own_transaction(conn):
        if params["n"] == 2:
            conn.execute(text(delete), {"n": 2})
        rows = conn.execute(text(params["statement"])).all()
        if params["n"] == 3:
            conn.execute(text(delete), {"n": 3})
    return {"rows": len(rows)}


DELETES = ("DELETE FROM {table} WHERE id < :n",)


@contextmanager
def database_with(dialect: str, tmp_path: Path, *statements: str) -> Iterator[str]:
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(url, *statements)
        yield url


def writing_tool(
    home: Path,
    url: str,
    module: types.ModuleType,
    name: str,
    fn: Any,
    trusted: tuple[str, ...] = (),
) -> Any:
    handler = Handler(sql_templates=DELETES, run_fn=fn, risk=RiskLevel.MEDIUM)
    return handler_tool(home, url, module, name, handler, "medium", trusted)


@contextmanager
def as_role(url: str, *statements: str) -> Iterator[str]:
    """The scratch database's URL for a login role of the test's own, with rights on its
    tables: a table's policies apply to it, as they do not to a superuser. `statements`
    ({role} for its name) run after it is made."""
    role = f"aishell_rls_{uuid.uuid4().hex[:8]}"
    execute(
        url,
        f'CREATE ROLE "{role}" LOGIN',
        f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
        *(sql.format(role=f'"{role}"') for sql in statements),
    )
    try:
        yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        execute(url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


@contextmanager
def pg_hidden(url: str, kind: str) -> Iterator[str]:
    """The database's schema public made anew (fresh_public) with the tables and what
    PG_HIDDEN[kind] makes, and the URL its reads are sent as: a role the table's policy
    applies to for the policy, else the superuser."""
    fresh_public(url)
    make_tables(url)
    execute(url, *PG_WRITERS, *PG_HIDDEN[kind])
    reader: AbstractContextManager[str] = as_role(url) if kind == "policy" else nullcontext(url)
    with reader as read_as:
        yield read_as


def test_a_writing_step_may_not_read_through_what_writes_on_postgresql(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """In a step that writes, the guard refuses the read. And in a step that only
    reads (its rows made anew), whatever the guard makes of the read, the read-only
    session refuses its write. Each kind on one database, made anew for each."""
    with scratch_database("postgresql", tmp_path) as url, Cases() as case:
        for kind in sorted(PG_HIDDEN):
            with pg_hidden(url, kind) as read_as:
                with case(f"{kind}-write-step"):
                    _writing_step_is_refused(home, handlers, url, read_as, kind)
                with case(f"{kind}-read-step"):
                    refill(url)
                    _read_only_step_changes_nothing(home, handlers, url, read_as, kind)


def _writing_step_is_refused(
    home: Path, handlers: types.ModuleType, url: str, read_as: str, kind: str
) -> None:
    config = writing_tool(home, read_as, handlers, "delete_then_read", _delete_then_read)

    params = {"table": "t", "statement": PG_READS[kind]}
    run = run_one(config, read_as, "delete_then_read", params)

    step = run.steps[0]
    assert step.status == "failed"
    assert fingerprint(url, "other") == (5, 15)
    if kind in PG_NAMED:
        assert "statement refused" in (step.error or "")
        assert len(refusals(config, run.run_id)) == 1
    else:  # sent in a read-only session: the server refused what it would write
        assert "read-only transaction" in (step.error or "")


def test_a_writing_step_may_not_read_through_a_view_that_writes_on_mariadb(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """Each read on one database: the view-over-view kind's views, of which the view
    kind's is one; its rows made anew for each."""
    assert set(MY_HIDDEN["view"]) <= set(MY_HIDDEN["view-over-view"])
    views = MY_HIDDEN["view-over-view"]
    with database_with("mysql", tmp_path, MY_WRITER, *views) as url, Cases() as case:
        config = writing_tool(home, url, handlers, "delete_then_read", _delete_then_read)
        for kind in sorted(MY_HIDDEN):
            with case(kind):
                refill(url)
                params = {"table": "t", "statement": MY_READS[kind]}

                run = run_one(config, url, "delete_then_read", params)

                assert run.steps[0].status == "failed"
                assert "which may write" in (run.steps[0].error or "")
                assert fingerprint(url, "other") == (5, 15)
                assert len(refusals(config, run.run_id)) == 1


TWICE = [
    "CREATE VIEW recent AS SELECT id, now() AS at FROM t WHERE id > 2",
    "CREATE FUNCTION twice(x int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 2 * x'",
    "CREATE OPERATOR ~~~ (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)",
    "CREATE VIEW doubled AS SELECT twice(id) AS d FROM t WHERE id ~~~ id",
]
TWICE_READ = "SELECT count(*) FROM recent JOIN doubled ON doubled.d = recent.id"


@pytest.mark.parametrize(
    ("dialect", "objects", "read", "trusts"),
    [
        # twice() is a user's: it counts as a possible write unless the site trusts it,
        # by its schema's name or in any schema (each a case on the same database).
        pytest.param(
            "postgresql", TWICE, TWICE_READ, [("public.twice",), ("twice",)], id="postgresql"
        ),
        pytest.param(
            "postgresql",
            [
                "CREATE EXTENSION pg_buffercache",
                "CREATE EXTENSION pg_stat_statements",
                "CREATE EXTENSION pgstattuple",
            ],
            "SELECT count(*) FROM pg_buffercache JOIN t ON t.id = pg_buffercache.bufferid",
            [()],
            id="postgresql-extensions",
        ),
        pytest.param(
            "mysql",
            ["CREATE VIEW recent AS SELECT id, now() AS at FROM t WHERE id > 2"],
            "SELECT count(*) FROM recent",
            [()],
            id="mysql",
        ),
    ],
)
def test_views_and_operators_that_only_read_pass_in_a_writing_step(
    home: Path,
    tmp_path: Path,
    handlers: types.ModuleType,
    dialect: str,
    objects: list[str],
    read: str,
    trusts: list[tuple[str, ...]],
) -> None:
    with database_with(dialect, tmp_path, *objects) as url, Cases() as case:
        for trusted in trusts:
            with case(f"trusted: {', '.join(trusted) or 'none'}"):
                refill(url)
                fn = _read_then_delete
                config = writing_tool(home, url, handlers, "read_then_delete", fn, trusted)

                run = run_one(config, url, "read_then_delete", {"table": "t", "statement": read})

                assert run.steps[0].status == "succeeded", run.steps[0].error
                assert fingerprint(url) == (8, 52)


def test_where_any_read_may_write_reads_go_read_only_and_writes_still_run(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """A read, then the step's approved DELETE, then a second writing step: the session
    goes read-only for the read and back for each write. For an operator, a domain and
    a cast that write, each on one database made anew (fresh_public)."""
    with scratch_database("postgresql", tmp_path) as url, Cases() as case:
        for kind in ("operator", "domain", "cast"):
            with case(kind), pg_hidden(url, kind):
                _reads_go_read_only(home, handlers, url)


def _reads_go_read_only(home: Path, handlers: types.ModuleType, url: str) -> None:
    config = writing_tool(home, url, handlers, "read_then_delete", _read_then_delete)
    params = {"table": "t", "statement": "SELECT count(*) FROM t"}
    plan = Plan(
        "maintenance",
        "db",
        "postgresql",
        {"type": "read_then_delete"},
        (
            Step("step_0", "read_then_delete", params),
            Step("step_1", "read_then_delete", {**params, "table": "other"}),
        ),
    )

    run = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.HIGH))

    assert [s.status for s in run.steps] == ["succeeded", "succeeded"], run.steps[0].error
    assert fingerprint(url) == (8, 52)
    assert fingerprint(url, "other") == (3, 12)


# Where the read stands in the transaction: after its DELETE (2), or first (3).
IN_TRANSACTION = {"after-a-write": 2, "first": 3}


def test_where_any_read_may_write_a_read_inside_a_transaction_is_sent_read_only(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """Inside a transaction the session's default cannot make one statement read-only
    (and a read that begins one would make the step's writes read-only with it): the
    read runs in a read-only savepoint, and the transaction's writes around it run.
    Each place of the read, on one database, its rows made anew for each."""
    hazard = [*PG_WRITERS, *PG_HIDDEN["operator"]]
    with database_with("postgresql", tmp_path, *hazard) as url, Cases() as case:
        config = writing_tool(home, url, handlers, "read_in_tx", _read_in_transaction)
        read = "SELECT count(*) FROM t WHERE id > 0"
        for name, n in IN_TRANSACTION.items():
            with case(name):
                refill(url)

                run = run_one(config, url, "read_in_tx", {"table": "t", "statement": read, "n": n})

                assert run.steps[0].status == "succeeded", run.steps[0].error
                assert run.steps[0].output == {"rows": 1}
                assert fingerprint(url) == ((9, 54) if n == 2 else (8, 52))


def test_where_any_read_may_write_a_read_inside_a_transaction_cannot_write(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    # A domain over the checked one: the read names neither the check's domain nor its
    # function, and only the savepoint made read-only stands in the way.
    over = "CREATE DOMAIN h_dom_over AS h_dom"
    hazard = [*PG_WRITERS, *PG_HIDDEN["domain"], over]
    with database_with("postgresql", tmp_path, *hazard) as url, Cases() as case:
        config = writing_tool(home, url, handlers, "read_in_tx", _read_in_transaction)
        read = "SELECT CAST(5 AS h_dom_over)"
        for name, n in IN_TRANSACTION.items():
            with case(name):
                refill(url)

                run = run_one(config, url, "read_in_tx", {"table": "t", "statement": read, "n": n})

                assert run.steps[0].status == "failed"
                assert "read-only transaction" in (run.steps[0].error or "")
                assert fingerprint(url, "other") == (5, 15)
                assert fingerprint(url) == (10, 55)  # the DELETE before it was rolled back


def _stream_in_transaction(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """A read through a server-side cursor, inside a transaction: a savepoint rolled back
    to would close the cursor before its rows are read."""
    conn = ctx.connection
    with own_transaction(conn):
        conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 2})
        streamed = conn.execution_options(stream_results=True).execute(text(params["statement"]))
        rows = streamed.all()
    return {"rows": len(rows)}


def test_where_any_read_may_write_a_server_side_cursor_in_a_transaction_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with database_with("postgresql", tmp_path, *PG_WRITERS, *PG_HIDDEN["cast"]) as url:
        config = writing_tool(home, url, handlers, "stream_in_tx", _stream_in_transaction)

        run = run_one(config, url, "stream_in_tx", {"table": "t", "statement": "SELECT id FROM t"})

        assert run.steps[0].status == "failed"
        assert "server-side cursor inside a transaction" in (run.steps[0].error or "")
        assert "cast integer to h_mood" in (run.steps[0].error or "")
        assert fingerprint(url) == (10, 55)


def _read_then_delete_in_transaction(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """As a purge: its estimates read on the autocommitting session, then its batches
    delete in transactions of their own."""
    conn = ctx.connection
    rows = conn.execute(text(params["statement"])).all()
    with own_transaction(conn):
        conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 3})
    return {"rows": len(rows)}


def test_where_any_read_may_write_a_transaction_after_a_read_still_writes(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """The session went read-only for the read; the transaction the DELETE begins does
    not inherit that."""
    with database_with("postgresql", tmp_path, *PG_WRITERS, *PG_HIDDEN["operator"]) as url:
        fn = _read_then_delete_in_transaction
        config = writing_tool(home, url, handlers, "read_then_tx", fn)

        run = run_one(config, url, "read_then_tx", {"table": "t", "statement": "SELECT 1"})

        assert run.steps[0].status == "succeeded", run.steps[0].error
        assert fingerprint(url) == (8, 52)


@contextmanager
def loadable_function(url: str) -> Iterator[None]:
    """MariaDB's sphinx_snippets() from ha_sphinx.so: a loadable function belongs to the
    whole server, so one test at a time makes it, under a lock of this test's own."""
    engine = raw_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT GET_LOCK('aishell_test_guard_udf', 60)")).scalar_one()
            conn.execute(
                text(
                    "CREATE FUNCTION IF NOT EXISTS sphinx_snippets RETURNS STRING "
                    "SONAME 'ha_sphinx.so'"
                )
            )
            try:
                yield
            finally:
                conn.execute(text("DROP FUNCTION IF EXISTS sphinx_snippets"))
                conn.execute(text("SELECT RELEASE_LOCK('aishell_test_guard_udf')"))
    finally:
        engine.dispose()


def test_a_loadable_function_on_mariadb_counts_as_a_write(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with database_with("mysql", tmp_path) as url, loadable_function(url):
        config = writing_tool(home, url, handlers, "delete_then_read", _delete_then_read)
        read = "SELECT count(*) FROM t WHERE sphinx_snippets('a', 'b', 'c') IS NULL"

        run = run_one(config, url, "delete_then_read", {"table": "t", "statement": read})

        assert run.steps[0].status == "failed"
        assert "it calls sphinx_snippets()" in (run.steps[0].error or "")
        assert len(refusals(config, run.run_id)) == 1


def _read(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return {"rows": len(ctx.connection.execute(text(params["statement"])).all())}


def _read_only_step_changes_nothing(
    home: Path, handlers: types.ModuleType, url: str, read_as: str, kind: str
) -> None:
    """Whatever the guard makes of the read, the read-only session refuses its write."""
    handler = Handler(sql_templates=("SELECT * FROM {table}",), run_fn=_read)
    config = handler_tool(home, read_as, handlers, "read_only", handler, "safe")

    run = run_one(config, read_as, "read_only", {"table": "t", "statement": PG_READS[kind]})

    assert fingerprint(url, "other") == (5, 15)
    assert run.steps[0].status == "failed"


def test_a_policy_counts_only_where_it_applies_to_the_sessions_role(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """A superuser and the table's owner read past its policies (unless the table forces
    them on its owner): nothing of the policy runs, and the read passes. Each on one
    database, its policy's table and the rows made anew for each."""
    with database_with("postgresql", tmp_path, *PG_WRITERS) as url, Cases() as case:
        for who in ("superuser", "owner", "owner-forced"):
            with case(who):
                execute(url, "DROP TABLE IF EXISTS guarded", *PG_HIDDEN["policy"])
                refill(url)
                _policy_case(home, handlers, url, who)


def _policy_case(home: Path, handlers: types.ModuleType, url: str, who: str) -> None:
    owner = ["ALTER TABLE guarded OWNER TO {role}"]
    if who == "owner-forced":
        owner.append("ALTER TABLE guarded FORCE ROW LEVEL SECURITY")
    with nullcontext(url) if who == "superuser" else as_role(url, *owner) as read_as:
        config = writing_tool(home, read_as, handlers, "delete_then_read", _delete_then_read)

        params = {"table": "t", "statement": PG_READS["policy"]}
        run = run_one(config, read_as, "delete_then_read", params)

        step = run.steps[0]
        assert fingerprint(url, "other") == (5, 15)
        if who == "owner-forced":
            assert step.status == "failed"
            assert "(policy p) runs a function that may write" in (step.error or "")
            assert "listed in the target's trusted_functions" in (step.error or "")
        else:
            assert step.status == "succeeded", step.error
            assert fingerprint(url) == (9, 54)


def test_where_any_read_may_write_a_purge_walking_a_text_key_with_an_archive_file_completes(
    home: Path, tmp_path: Path
) -> None:
    """A purge reads inside its batches' transactions: where each batch ends (a text key
    is looked up) and the rows it archives. Each read runs read-only; the DELETEs write."""
    events = [
        "CREATE TABLE events (code varchar(20) PRIMARY KEY, created_at timestamp NOT NULL)",
        "INSERT INTO events SELECT 'k' || lpad(g::text, 4, '0'), "
        "localtimestamp - make_interval(days => g % 60) FROM generate_series(1, 600) g",
    ]
    hazard = [*PG_WRITERS, *PG_HIDDEN["operator"]]
    with database_with("postgresql", tmp_path, *hazard, *events) as url:
        config = use_target(home, url)
        archive = home / "archive" / "events.jsonl"
        job = {
            "table": "events",
            "date_column": "created_at",
            "retention_days": 30,
            "archive_to": f"file:{archive}",
            "batch_size": 25,
            "max_batch_size": 25,
            # The text key's walk (PostgreSQL 14+ would walk the pages).
            "walk": "keys",
        }

        result = commands.run_job(config, "log_cleanup", job)

        assert result.status == "completed", result.error
        purge = result.steps[1].output
        assert purge["complete"] and purge["batches"] > 10
        engine = raw_engine(url)
        try:
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
                old = conn.execute(
                    text("SELECT count(*) FROM events WHERE created_at < :cut"),
                    {"cut": result.steps[0].output["cutoff"]},
                ).scalar_one()
        finally:
            engine.dispose()
        assert old == 0 and left == 600 - purge["rows_deleted"] > 0
        assert len(archive.read_text().splitlines()) == purge["rows_deleted"]
        assert fingerprint(url, "other") == (5, 15)


CONTRIB = (
    "pg_stat_statements",
    "pg_buffercache",
    "pgstattuple",
    "amcheck",
    "hstore",
    "citext",
    "pg_trgm",
    "btree_gist",
    "btree_gin",
    "pgcrypto",
    "ltree",
    "cube",
    "earthdistance",
    "intarray",
    "isn",
    "fuzzystrmatch",
    "uuid-ossp",
    "tablefunc",
    "unaccent",
)


def test_the_extensions_a_dba_commonly_installs_make_no_read_write(tmp_path: Path) -> None:
    """Their operators, casts, types and views only read (or are trusted to): on such a
    database reads are sent as they are, with no switch and no savepoint."""
    import psycopg

    from aishell.guard.hidden import hidden_writers

    statements = [f'CREATE EXTENSION IF NOT EXISTS "{name}" CASCADE' for name in CONTRIB]
    with database_with("postgresql", tmp_path, *statements) as url:
        dsn = raw_engine(url).url.render_as_string(hide_password=False)
        with psycopg.connect(dsn.replace("postgresql+psycopg://", "postgresql://")) as conn:
            found = hidden_writers("postgresql", conn.cursor())
            installed = conn.execute("SELECT count(*) FROM pg_extension").fetchone()
    assert installed is not None and installed[0] > len(CONTRIB)  # with plpgsql
    assert not found, found


# --- a declared read that the catalog shows writing ------------------------------------------

DECLARED_READS = {
    "function": "SELECT w(:n)",
    "view": "SELECT count(*) FROM hv WHERE id > :n",
}


def _delete_then_declared_read(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 2})
    conn.execute(text(DECLARED_READS[params["statement"]]), {"n": 1}).all()
    return {}


def test_a_declared_read_that_writes_through_the_catalog_runs_only_in_a_tool_tagged_high(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """The parser takes the declared statement for a read, so its shape alone would let
    it through a writing step approved at the tool's risk: the catalog's verdict (a
    volatile function, a view that runs one) is a high risk, and only a tool tagged that
    high was approved for it. Each kind and tag on one database, its rows made anew."""
    hazard = [*PG_WRITERS, *PG_HIDDEN["view"]]
    with database_with("postgresql", tmp_path, *hazard) as url, Cases() as case:
        for tagged in ("medium", "high"):
            for kind in sorted(DECLARED_READS):
                with case(f"{tagged}-{kind}"):
                    refill(url)
                    _declared_read_case(home, handlers, url, kind, tagged)


def _declared_read_case(
    home: Path, handlers: types.ModuleType, url: str, kind: str, tagged: str
) -> None:
    risk = RiskLevel(tagged)
    handler = Handler(
        sql_templates=(*DELETES, DECLARED_READS[kind]),
        run_fn=_delete_then_declared_read,
        risk=risk,
    )
    config = handler_tool(home, url, handlers, "declared_read", handler, tagged)

    run = run_one(config, url, "declared_read", {"table": "t", "statement": kind})

    step = run.steps[0]
    if risk is RiskLevel.HIGH:
        assert step.status == "succeeded", step.error
        assert fingerprint(url, "other")[0] > 5  # what the function wrote
    else:
        assert step.status == "failed"
        assert f"a high risk, above the {tagged} " in (step.error or "")
        assert "(tag the tool high to approve it)" in (step.error or "")
        assert fingerprint(url, "other") == (5, 15)
        assert len(refusals(config, run.run_id)) == 1
