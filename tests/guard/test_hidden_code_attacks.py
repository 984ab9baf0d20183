"""Attacks on the guard by code the server runs that a read's text does not show: the
planner's evaluation of a table's index, statistics, partition key and check
expressions; an operator class's support function; functions that read relations named
only as text; names the parser folds or reads apart from the server (non-ASCII letters,
Unicode escapes, MariaDB's accent-blind routine names, ANSI_QUOTES); a view that
advances a sequence; SQLite pragmas and functions that set state. Each is caused on the
real server; each must leave the test's tables as they were."""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell.guard.connection import Guard
from aishell.guard.statements import classify
from aishell.risk import RiskLevel
from tests.guard.test_guard import (
    Cases,
    execute,
    fingerprint,
    handlers,
    make_tables,
    refill,
    refusals,
    run_one,
    scalar,
    scratch_database,
)
from tests.guard.test_guard_unseen import _params, _tool

__all__ = ["handlers"]  # the fixture, found by pytest in this module

STEPS = pytest.mark.parametrize("read_only_step", [True, False], ids=["read-step", "write-step"])
BOTH_STEPS = {"read-step": True, "write-step": False}  # as cases sharing a database


@contextmanager
def database(dialect: str, tmp_path: Path, *statements: str) -> Iterator[str]:
    """A scratch database of the test's own with make_tables' tables and `statements`."""
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(url, *statements)
        yield url


def assert_refused(url: str, run: Any) -> None:
    step = run.steps[0]
    assert fingerprint(url, "other") == (5, 15)
    assert step.status == "failed"
    assert "statement refused" in (step.error or ""), step.error


# --- PostgreSQL: code the planner runs for any read of a table -------------------------

# zap() deletes every row of `other`; imm() declares itself IMMUTABLE and calls it. An
# index, statistics, partition key or check made over imm() is made while imm() is
# harmless, then imm() is replaced: the planner folds imm(1), a constant, when it reads
# the table's definition for a read that names the table.
PG_IMM = [
    "CREATE FUNCTION zap() RETURNS int VOLATILE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN 1; END $$",
    "CREATE FUNCTION imm(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN x; END $$",
]
PG_IMM_ARMED = (
    "CREATE OR REPLACE FUNCTION imm(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM zap(); RETURN x; END $$"
)
PG_PLANNED = {
    "index-expression": (
        ["CREATE TABLE h (id int, v int)", "CREATE INDEX h_e ON h ((v + imm(1)))"],
        "SELECT count(*) FROM h",
    ),
    "partial-index": (
        ["CREATE TABLE h (id int, v int)", "CREATE INDEX h_p ON h (v) WHERE imm(1) = 1"],
        "SELECT count(*) FROM h",
    ),
    # Folded first, then the call over them: constants too, to the planner.
    "index-expression-of-folded-constants": (
        ["CREATE TABLE h (id int, v int)", "CREATE INDEX h_e ON h ((v + imm(1 + 1)))"],
        "SELECT count(*) FROM h",
    ),
    "partial-index-of-a-call-of-constants": (
        ["CREATE TABLE h (id int, v int)", "CREATE INDEX h_p ON h (v) WHERE imm(abs(-1)) = 1"],
        "SELECT count(*) FROM h",
    ),
    "check-of-a-cast-constant": (
        [
            "CREATE TABLE h (id int, v bigint CHECK (v < imm(int4(100::bigint))))",
            "CREATE TABLE h_child (extra int) INHERITS (h)",
        ],
        "SELECT count(*) FROM h WHERE v > 500",
    ),
    "statistics": (
        ["CREATE TABLE h (id int, v int)", "CREATE STATISTICS h_s ON (v + imm(1)), id FROM h"],
        "SELECT count(*) FROM h",
    ),
    "partition-key": (
        [
            "CREATE TABLE h (id int, v int) PARTITION BY RANGE ((v + imm(1)))",
            "CREATE TABLE h_1 PARTITION OF h FOR VALUES FROM (0) TO (100)",
        ],
        "SELECT count(*) FROM h",
    ),
    "check-of-a-child": (
        [
            "CREATE TABLE h (id int, v int CHECK (v < imm(100)))",
            "CREATE TABLE h_child (extra int) INHERITS (h)",
        ],
        "SELECT count(*) FROM h WHERE v > 500",
    ),
    "index-of-a-child": (
        [
            "CREATE TABLE h (id int, v int)",
            "CREATE TABLE h_child (extra int) INHERITS (h)",
            "CREATE INDEX h_child_e ON h_child ((v + imm(1)))",
        ],
        "SELECT count(*) FROM h",
    ),
    "view-over-the-table": (
        [
            "CREATE TABLE h0 (id int, v int)",
            "CREATE INDEX h0_e ON h0 ((v + imm(1)))",
            "CREATE VIEW h AS SELECT * FROM h0",
        ],
        "SELECT count(*) FROM h",
    ),
}


@pytest.mark.parametrize("kind", sorted(PG_PLANNED))
def test_postgresql_code_the_planner_runs_for_a_read_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType, kind: str
) -> None:
    """In a step that only reads and in one that writes, on one database. (A database
    a kind: remade in one, the kinds' child tables left plans JIT-compiled for seconds.)"""
    objects, read = PG_PLANNED[kind]
    with (
        database("postgresql", tmp_path, *PG_IMM, *objects, PG_IMM_ARMED) as url,
        Cases() as case,
    ):
        for step, read_only_step in BOTH_STEPS.items():
            with case(step):
                refill(url)
                config = _tool(home, url, handlers, read_only_step)

                run = run_one(config, url, "caller", _params(read))

                assert_refused(url, run)
                assert "it reads h:" in (run.steps[0].error or "")


def _conninfo(url: str) -> str:
    """libpq's keywords for the test's database, as dblink takes them."""
    parts = make_url(url)
    return (
        f"host={parts.host or '127.0.0.1'} port={parts.port or 5432} "
        f"dbname={parts.database} user={parts.username}"
    )


def test_postgresql_a_read_only_step_cannot_write_elsewhere_through_an_index_expression(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """The read-only session stops what the function writes itself, not what it writes
    through a session of its own (dblink): only the guard stands in the way."""
    with scratch_database("postgresql", tmp_path) as url:
        conninfo = _conninfo(url)
        far = (
            "CREATE OR REPLACE FUNCTION imm(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM dblink_exec('{conninfo}', 'DELETE FROM other'); RETURN x; END $$"
        )
        make_tables(url)
        execute(url, "CREATE EXTENSION dblink", *PG_IMM, *PG_PLANNED["index-expression"][0], far)
        config = _tool(home, url, handlers, True)

        run = run_one(config, url, "caller", _params("SELECT count(*) FROM h"))

        assert_refused(url, run)


def test_postgresql_an_operator_class_support_function_runs_read_only(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """A btree operator class's comparison function runs in an index scan that names
    neither it nor its type: in a step that writes, the read is refused before it is
    sent (its type's operator class calls a function that may write), or sent
    read-only."""
    objects = [
        "CREATE FUNCTION zap() RETURNS int VOLATILE LANGUAGE plpgsql AS "
        "$$ BEGIN DELETE FROM other; RETURN 1; END $$",
        "CREATE FUNCTION icmp(a int, b int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN btint4cmp(a, b); END $$",
        "CREATE OPERATOR CLASS my_int_ops FOR TYPE int4 USING btree AS OPERATOR 1 <, "
        "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 icmp(int4, int4)",
        "CREATE TABLE io (id int, v int)",
        "INSERT INTO io SELECT g, g FROM generate_series(1, 5000) g",
        "CREATE INDEX io_v ON io (v my_int_ops)",
        "ANALYZE io",
        "CREATE OR REPLACE FUNCTION icmp(a int, b int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM zap(); RETURN btint4cmp(a, b); END $$",
    ]
    with database("postgresql", tmp_path, *objects) as url:
        config = _tool(home, url, handlers, False)

        run = run_one(config, url, "caller", _params("SELECT count(*) FROM io WHERE v = 5"))

        assert fingerprint(url, "other") == (5, 15)
        assert run.steps[0].status == "failed"
        error = run.steps[0].error or ""
        refused = "operator class my_int_ops" in error and "icmp" in error
        assert refused or "read-only transaction" in error, error


def test_postgresql_an_operator_class_that_writes_through_dblink_stops_every_read(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """What a support function writes through a session of its own, no read-only session
    stops: while the database has dblink, a read is refused, naming the way out (in a
    step that only reads and in one that writes, on one database)."""
    with scratch_database("postgresql", tmp_path) as url, Cases() as case:
        conninfo = _conninfo(url)
        make_tables(url)
        execute(
            url,
            "CREATE EXTENSION dblink",
            "CREATE FUNCTION icmp(a int, b int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN btint4cmp(a, b); END $$",
            "CREATE OPERATOR CLASS my_int_ops FOR TYPE int4 USING btree AS OPERATOR 1 <, "
            "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
            "FUNCTION 1 icmp(int4, int4)",
            "CREATE TABLE io (id int, v int)",
            "INSERT INTO io SELECT g, g FROM generate_series(1, 5000) g",
            "CREATE INDEX io_v ON io (v my_int_ops)",
            "ANALYZE io",
            # Only now does it write: the index was built with the harmless one.
            "CREATE OR REPLACE FUNCTION icmp(a int, b int) RETURNS int IMMUTABLE "
            "LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM dblink_exec('{conninfo}', 'DELETE FROM other'); "
            "RETURN btint4cmp(a, b); END $$",
        )
        for step, read_only_step in BOTH_STEPS.items():
            with case(step):
                refill(url)
                config = _tool(home, url, handlers, read_only_step)

                run = run_one(config, url, "caller", _params("SELECT count(*) FROM io WHERE v = 5"))

                assert_refused(url, run)
                assert "through the extension dblink" in (run.steps[0].error or "")


# --- PostgreSQL: names the parser reads apart from the server ---------------------------

PG_NAMES = [
    "CREATE FUNCTION zap(x int) RETURNS int VOLATILE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN x; END $$",
    # Unquoted, PostgreSQL keeps a non-ASCII capital as it is: Äzap is "Äzap", not "äzap".
    "CREATE FUNCTION Äzap(x int) RETURNS int VOLATILE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN x; END $$",
    "CREATE VIEW hv AS SELECT zap(1) AS z",
    "CREATE VIEW Ähv AS SELECT zap(1) AS z",
]
MISNAMED = {
    "non-ascii-function": "SELECT Äzap(1)",
    "non-ascii-view": "SELECT * FROM Ähv",
    "unicode-escaped-function": 'SELECT U&"\\007Aap"(1)',
    "unicode-escaped-view": 'SELECT * FROM U&"\\0068v"',
    "table-to-xml": "SELECT table_to_xml('hv', true, false, '')",
    "schema-to-xml": "SELECT schema_to_xml('public', true, false, '')",
    "database-to-xml": "SELECT database_to_xml(true, false, '')",
}


@STEPS
def test_postgresql_a_call_the_parser_misnames_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType, read_only_step: bool
) -> None:
    """Each misnamed call on one database, its rows made anew for each."""
    with database("postgresql", tmp_path, *PG_NAMES) as url, Cases() as case:
        config = _tool(home, url, handlers, read_only_step)
        for name, sql in MISNAMED.items():
            with case(name):
                refill(url)

                run = run_one(config, url, "caller", _params(sql))

                assert_refused(url, run)
                assert refusals(config, run.run_id)


# --- row locks: a read that locks is stopped by the read-only session ------------------


ROW_LOCKS = {
    "postgresql": [
        "SELECT * FROM other FOR UPDATE",
        "SELECT * FROM other FOR UPDATE SKIP LOCKED",
        "SELECT * FROM other FOR KEY SHARE",
    ],
    "mysql": [
        "SELECT * FROM other FOR UPDATE",
        # MariaDB takes these in a READ ONLY transaction: the guard stops it.
        "SELECT * FROM other LOCK IN SHARE MODE",
        "SELECT * FROM (SELECT * FROM other LOCK IN SHARE MODE) x",
    ],
}


@pytest.mark.parametrize("dialect", sorted(ROW_LOCKS))
def test_a_read_only_step_cannot_take_row_locks(
    home: Path, tmp_path: Path, handlers: types.ModuleType, dialect: str
) -> None:
    """Each locking read of the engine, on one database."""
    with database(dialect, tmp_path) as url, Cases() as case:
        config = _tool(home, url, handlers, True)
        for sql in ROW_LOCKS[dialect]:
            with case(sql):
                run = run_one(config, url, "caller", _params(sql))

                assert run.steps[0].status == "failed"
                assert "read" in (run.steps[0].error or "").lower()
                assert "only" in (run.steps[0].error or "").lower()


# --- MariaDB ---------------------------------------------------------------------------

MY_EVIL = [
    "CREATE FUNCTION evil() RETURNS INT NO SQL BEGIN DELETE FROM other; RETURN 1; END",
    # The server finds a routine by its name compared without case or accents.
    "CREATE VIEW accented AS SELECT evíl() AS e",
]


ACCENTED = {
    "accented-call": "SELECT evíl()",
    "accented-capital-call": "SELECT ÉVÎL()",
    "view-with-an-accented-call": "SELECT count(*) FROM accented",
}


def test_mariadb_a_stored_function_named_with_accents_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """Each call, in a step that only reads and in one that writes, on one database."""
    with database("mysql", tmp_path, *MY_EVIL) as url, Cases() as case:
        for step, read_only_step in BOTH_STEPS.items():
            config = _tool(home, url, handlers, read_only_step)
            for name, sql in ACCENTED.items():
                with case(f"{name}-{step}"):
                    refill(url)

                    run = run_one(config, url, "caller", _params(sql))

                    assert_refused(url, run)


def test_mariadb_a_view_that_advances_a_sequence_is_refused_in_a_writing_step(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with database(
        "mysql", tmp_path, "CREATE SEQUENCE s", "CREATE VIEW sv AS SELECT NEXT VALUE FOR s AS n"
    ) as url:
        config = _tool(home, url, handlers, False)

        run = run_one(config, url, "caller", _params("SELECT * FROM sv"))

        assert_refused(url, run)
        # The sequence never handed out a value: nothing of its cache was taken.
        assert scalar(url, "SELECT next_not_cached_value FROM s") == 1


def test_mariadb_under_ansi_quotes_a_double_quoted_name_is_a_name(tmp_path: Path) -> None:
    """With sql_mode ANSI_QUOTES (a server's or a session's setting) "hv" is the view and
    db."evil"() the function, not strings: the guard counts them as names."""
    with database(
        "mysql",
        tmp_path,
        "CREATE FUNCTION evil() RETURNS INT NO SQL BEGIN DELETE FROM other; RETURN 1; END",
        "CREATE VIEW hv AS SELECT evil() AS e",
    ) as url:
        database_name = make_url(url).database
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')"))
                cursor = conn.connection.dbapi_connection.cursor()
                for sql in ['SELECT * FROM "hv"', f'SELECT "{database_name}"."evil"()']:
                    guard = Guard(label="a read", connection=conn)
                    assert guard.check(sql, cursor, "mysql", "format") is not None, sql
                # What the guard refused is what the server would have run.
                conn.execute(text('SELECT * FROM "hv"')).all()
        finally:
            engine.dispose()
        assert fingerprint(url, "other") == (0, 0)


# --- SQLite ----------------------------------------------------------------------------


SETS_LATER = {
    "auto-vacuum": "PRAGMA auto_vacuum(2)",
    "page-size": "PRAGMA main.page_size(1024)",
    "fts3": "SELECT fts3_tokenizer('aishell', fts3_tokenizer('simple'))",
    "fts3-address": "SELECT hex(fts3_tokenizer('simple'))",
    "load-extension": "SELECT load_extension('aishell_none')",
}


def test_sqlite_a_read_only_step_may_not_set_what_a_later_step_runs(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """A pragma's argument sets what the next VACUUM makes of the file; fts3_tokenizer
    sets (or shows) the address of C code a later query of an FTS table calls. Both in a
    query_only session: only the guard stands in the way. Each case on a file of its
    own."""
    with Cases() as case:
        for name, sql in SETS_LATER.items():
            (tmp_path / name).mkdir()
            with case(name), database("sqlite", tmp_path / name) as url:
                config = _tool(home, url, handlers, True)

                run = run_one(config, url, "caller", _params(sql))

                assert run.steps[0].status == "failed"
                assert "statement refused" in (run.steps[0].error or ""), run.steps[0].error


def test_sqlite_a_read_only_step_attaches_no_file(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    made = tmp_path / f"attached-{uuid.uuid4().hex[:8]}.db"
    with database("sqlite", tmp_path) as url:
        config = _tool(home, url, handlers, True)

        run = run_one(config, url, "caller", _params(f"ATTACH DATABASE '{made}' AS x"))

        assert run.steps[0].status == "failed"
        assert "statement refused" in (run.steps[0].error or "")
        assert not made.exists()


# --- what the parser alone must call a write, whatever the server ----------------------


@pytest.mark.parametrize(
    ("dialect", "sql", "least"),
    [
        ("postgresql", "SELECT pg_read_file('postgresql.conf')", RiskLevel.CRITICAL),
        ("postgresql", "SELECT lo_export(1, '/tmp/aishell-never')", RiskLevel.CRITICAL),
        ("postgresql", "SELECT pg_logical_emit_message(true, 'p', 'x')", RiskLevel.MEDIUM),
        ("postgresql", "SELECT nextval('s')", RiskLevel.MEDIUM),
        ("postgresql", "SELECT setval('s', 5)", RiskLevel.MEDIUM),
        ("postgresql", "SELECT txid_current()", RiskLevel.MEDIUM),
        ("postgresql", "SELECT pg_try_advisory_lock(1)", RiskLevel.CRITICAL),
        ("postgresql", "SELECT pg_notify('c', 'x')", RiskLevel.CRITICAL),
        ("postgresql", "PREPARE p AS SELECT 1", RiskLevel.HIGH),
        ("postgresql", "EXECUTE p", RiskLevel.HIGH),
        ("postgresql", "LISTEN c", RiskLevel.HIGH),
        ("postgresql", "SET ROLE nobody", RiskLevel.MEDIUM),
        ("postgresql", "SET SESSION AUTHORIZATION nobody", RiskLevel.MEDIUM),
        ("postgresql", "RESET ALL", RiskLevel.MEDIUM),
        ("postgresql", "DISCARD ALL", RiskLevel.MEDIUM),
        ("postgresql", "LOCK TABLE t", RiskLevel.MEDIUM),
        ("postgresql", "SELECT $$ a $$, 1 /* /* */ DELETE FROM t */", None),
        ("postgresql", "SELECT table_to_xml('t', true, false, '')", RiskLevel.MEDIUM),
        ("postgresql", 'SELECT U&"\\0077"(1)', RiskLevel.HIGH),
        ("mysql", "SELECT NEXT VALUE FOR s", RiskLevel.MEDIUM),
        ("mysql", "SELECT 1 INTO @a", RiskLevel.MEDIUM),
        ("mysql", "SET STATEMENT max_statement_time = 0 FOR SELECT 1", RiskLevel.MEDIUM),
        ("mysql", "HANDLER t OPEN", RiskLevel.MEDIUM),
        ("mysql", "DO 1", RiskLevel.MEDIUM),
        ("mysql", "ANALYZE TABLE t PERSISTENT FOR ALL", RiskLevel.LOW),
        ("mysql", "CHECK TABLE t FOR UPGRADE", RiskLevel.MEDIUM),
        ("mysql", "SELECT 1 /*M!100000 , evil() */", RiskLevel.HIGH),
        ("sqlite", "PRAGMA user_version = 1", RiskLevel.MEDIUM),
        ("sqlite", "PRAGMA auto_vacuum(1)", RiskLevel.MEDIUM),
        ("sqlite", "SELECT load_extension('x')", RiskLevel.CRITICAL),
        ("sqlite", "VACUUM INTO '/tmp/aishell-never.db'", RiskLevel.LOW),
        ("sqlite", "DETACH DATABASE x", RiskLevel.MEDIUM),
    ],
)
def test_what_the_text_alone_shows_is_judged_a_write(
    dialect: str, sql: str, least: RiskLevel | None
) -> None:
    found = classify(sql, dialect)
    if least is None:  # comments and dollar quotes hide nothing: a read
        assert not found.writes, found
        return
    assert found.writes, found
    assert found.risk.rank >= least.rank, found
