"""Code the server runs that the parser does not see or misjudges: MariaDB's executable
comments, PostgreSQL's attribute notation, a user's function that declares itself
IMMUTABLE, functions that reach beyond the session, comments inside a pragma; and a
read-only session switched back from inside a step. Each is caused on the real server,
and each must leave the test's tables as they were."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from aishell.config.models import Config
from aishell.guard.lex import disagreement
from aishell.guard.statements import classify
from aishell.handlers import Handler
from aishell.risk import RiskLevel
from tests.guard.test_guard import (
    Cases,
    _send,
    execute,
    fingerprint,
    handler_tool,
    handlers,
    make_tables,
    refill,
    refusals,
    run_one,
    scalar,
    scratch_database,
)

__all__ = ["handlers"]  # the fixture, found by pytest in this module

# --- what the parser reads apart from the server, by the text alone ------------------

EXECUTABLE_COMMENTS = [
    "SELECT 1 /*!, evil() */",
    "SELECT 1 /*!50000 , evil() */",
    "SELECT 1 /*M!, evil() */",
    "SELECT 1 /*M!100000 , evil() */",
    "SELECT 1 /*m!, evil() */",
    "SELECT count(*) FROM t WHERE v > 0 /*! OR evil() */",
    "SELECT 1 /*!50000 INTO OUTFILE '/tmp/aishell-never' */",
    "/*!40101 SET @x = 1 */ SELECT 1",
    "SELECT /*!*/ 1",
    # A comment inside a quoted name is the name: only real comments count.
    "ANALYZE TABLE `t` /*!, evil() */",
]


@pytest.mark.parametrize("sql", EXECUTABLE_COMMENTS)
def test_mysql_executable_comments_are_writes_of_high_risk(sql: str) -> None:
    found = classify(sql, "mysql")
    assert found.writes
    assert found.risk.rank >= RiskLevel.HIGH.rank
    assert "/*!" in found.reason


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "SELECT `a/*!b*/` FROM t"),
        ("mysql", "SELECT '/*!, evil() */' FROM t"),
        ("mysql", "SELECT 1 -- /*!, evil() */"),
        ("mysql", "SELECT 1 # /*!, evil() */"),
        ("postgresql", "SELECT '/*!, evil() */', $$ -- $$, E'\\'' FROM t"),
        ("postgresql", "SELECT 1 /* outer /* inner */ still a comment */"),
        ("sqlite", 'SELECT [a /* b], "c -- d" FROM t'),
    ],
)
def test_comment_marks_inside_literals_and_comments_are_text(dialect: str, sql: str) -> None:
    assert disagreement(sql, dialect) is None
    assert not classify(sql, dialect).writes


@pytest.mark.parametrize(
    ("dialect", "sql", "why"),
    [
        # NO_BACKSLASH_ESCAPES decides whether evil() is inside the string.
        ("mysql", "SELECT 'a\\', evil(), '\\'", "sql_mode"),
        ("postgresql", "SELECT 1 /* a comment never closed", "not closed"),
        ("postgresql", "SELECT $x$ never closed", "not closed"),
        ("mysql", "SELECT 'never closed", "not closed"),
    ],
)
def test_text_the_server_may_read_otherwise_is_a_write(dialect: str, sql: str, why: str) -> None:
    found = classify(sql, dialect)
    assert found.writes
    assert why in found.reason


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA journal_mode/**/=WAL",
        "PRAGMA journal_mode /* a */ = /* b */ WAL",
        "PRAGMA -- first\n journal_mode = DELETE",
        "PRAGMA main.journal_mode/**/=WAL",
        "PRAGMA /**/ journal_mode(WAL)",
        "PRAGMA query_only/**/=0",
    ],
)
def test_a_sqlite_pragma_with_comments_is_judged_without_them(sql: str) -> None:
    assert classify(sql, "sqlite").writes


REACHING = [
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')"),
    ("mysql", "SELECT GET_LOCK('aishell', 0)"),
    ("mysql", "SELECT RELEASE_ALL_LOCKS()"),
    ("mysql", "SELECT 1 INTO OUTFILE '/tmp/aishell-never'"),
    ("mysql", "SELECT 1 INTO DUMPFILE '/tmp/aishell-never'"),
    ("postgresql", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
    ("postgresql", "SELECT (pid).pg_terminate_backend FROM pg_stat_activity"),
    ("postgresql", "SELECT a.pg_cancel_backend FROM pg_stat_activity a"),
    ("postgresql", "SELECT dblink_exec('dbname=x', 'DELETE FROM t')"),
    ("postgresql", "SELECT * FROM dblink('dbname=x', 'SELECT 1') AS r(x int)"),
    ("postgresql", "SELECT lo_import('/etc/passwd')"),
    ("postgresql", "SELECT pg_read_file('postgresql.conf')"),
    ("postgresql", "SELECT pg_notify('c', 'x')"),
    ("postgresql", "SELECT pg_advisory_lock(1)"),
]


@pytest.mark.parametrize(("dialect", "sql"), REACHING)
def test_functions_that_reach_beyond_the_session_are_critical(dialect: str, sql: str) -> None:
    found = classify(sql, dialect)
    assert found.writes
    assert found.risk is RiskLevel.CRITICAL, found


# --- on the servers: each way an engine calls a function -------------------------------

# zap(victim) deletes every row of `other`: called by name, in attribute notation, by an
# operator, a cast, a default or a view.
PG_ZAP = [
    "CREATE TABLE victim (id int)",
    "INSERT INTO victim VALUES (1)",
    "CREATE FUNCTION zap(victim) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN 1; END $$",
    "CREATE FUNCTION zapi(int) RETURNS int STABLE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN 1; END $$",
    "CREATE FUNCTION zap_eq(int, int) RETURNS boolean IMMUTABLE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN $1 = $2; END $$",
    "CREATE OPERATOR <~> (LEFTARG = int, RIGHTARG = int, FUNCTION = zap_eq)",
    "CREATE VIEW zapped AS SELECT zapi(id) AS z FROM victim",
    "CREATE TYPE zmood AS ENUM ('ok')",
    "CREATE FUNCTION zap_mood(int) RETURNS zmood IMMUTABLE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN 'ok'; END $$",
    "CREATE CAST (int AS zmood) WITH FUNCTION zap_mood(int)",
    "CREATE DOMAIN zdom AS int CHECK (zapi(VALUE) = 1)",
]
PG_CALLS = {
    "by-name-stable": "SELECT zapi(1)",
    "attribute": "SELECT v.zap FROM victim v",
    "attribute-parenthesised": "SELECT (v).zap FROM victim v",
    "attribute-table-name": "SELECT victim.zap FROM victim",
    "composite-argument": "SELECT zap(v) FROM victim v",
    "attribute-of-a-scalar": "SELECT (id).zapi FROM victim",
    "view": "SELECT count(*) FROM zapped",
    "operator": "SELECT count(*) FROM victim WHERE id <~> 1",
    "cast": "SELECT 1::zmood",
    "cast-function-form": "SELECT CAST(id AS zmood) FROM victim",
    "domain-check": "SELECT CAST(5 AS zdom)",
    "view-joined": "SELECT count(*) FROM zapped JOIN victim ON true",
}


@pytest.mark.parametrize("read_only_step", [True, False], ids=["read-step", "write-step"])
def test_each_way_postgresql_calls_a_users_function_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType, read_only_step: bool
) -> None:
    """A user's function may write whatever volatility it declares: refused in a step
    that only reads and in one that writes (whose session is read-write). Every way, on
    one database, its rows made anew for each."""
    _each_refused(home, tmp_path, handlers, read_only_step, "postgresql", PG_ZAP, PG_CALLS)


# Operators of the database's own for (int, text), which pg_catalog has none of, so a
# statement comparing an int with a text resolves to them: each deletes every row of
# `other`. No statement below writes their symbols; its words stand for them.
PG_WORD_OPERATORS = [
    "CREATE TABLE victim (id int)",
    "INSERT INTO victim VALUES (1)",
    "CREATE FUNCTION zap_it(int, text) RETURNS boolean VOLATILE LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM other; RETURN true; END $$",
    *(
        f"CREATE OPERATOR {symbol} (LEFTARG = int, RIGHTARG = text, FUNCTION = zap_it)"
        for symbol in ("~~", "!~~", "~~*", "~", "=", ">=", "<=")
    ),
]
PG_WORDS = {
    "like": "SELECT count(*) FROM victim WHERE id LIKE '1%'",
    "not-like": "SELECT count(*) FROM victim WHERE id NOT LIKE 'x'",
    "ilike": "SELECT count(*) FROM victim WHERE id ILIKE '1'",
    "similar-to": "SELECT count(*) FROM victim WHERE id SIMILAR TO '1'",
    "in": "SELECT count(*) FROM victim WHERE id IN ('1'::text)",
    "case-when": "SELECT CASE id WHEN '1'::text THEN 1 END FROM victim",
    "nullif": "SELECT NULLIF(id, '1'::text) FROM victim",
    "between": "SELECT count(*) FROM victim WHERE id BETWEEN '1'::text AND '2'::text",
}


@pytest.mark.parametrize("read_only_step", [True, False], ids=["read-step", "write-step"])
def test_an_operator_a_word_stands_for_is_refused_as_a_written_one_is(
    home: Path, tmp_path: Path, handlers: types.ModuleType, read_only_step: bool
) -> None:
    """x LIKE y is x ~~ y, looked up on the search_path: the database's own ~~ runs."""

    def by_the_operator(_config: Config, _url: str, run: Any) -> None:
        assert "it uses the operator" in (run.steps[0].error or ""), run.steps[0].error

    _each_refused(
        home, tmp_path, handlers, read_only_step, "postgresql", PG_WORD_OPERATORS, PG_WORDS,
        by_the_operator,
    )  # fmt: skip


def _each_refused(
    home: Path,
    tmp_path: Path,
    handlers: types.ModuleType,
    read_only_step: bool,
    dialect: str,
    objects: list[str],
    calls: dict[str, str],
    then: Callable[[Config, str, Any], None] = lambda _config, _url, _run: None,
) -> None:
    """Each of `calls` run by the caller step on one database holding `objects`:
    refused, `other` untouched (then `then`'s checks of the run)."""
    with scratch_database(dialect, tmp_path) as url, Cases() as case:
        make_tables(url)
        execute(url, *objects)
        config = _tool(home, url, handlers, read_only_step)
        for name, sql in calls.items():
            with case(name):
                then(config, url, _refused_leaving_other_whole(config, url, sql))


def _refused_leaving_other_whole(config: Config, url: str, sql: str) -> Any:
    """The caller step running sql, on `other` filled anew: refused, `other` untouched."""
    refill(url)

    run = run_one(config, url, "caller", _params(sql))

    assert fingerprint(url, "other") == (5, 15)
    assert run.steps[0].status == "failed"
    assert "statement refused" in (run.steps[0].error or ""), run.steps[0].error
    return run


def test_a_function_the_site_trusts_runs_in_a_read(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(
            url,
            "CREATE FUNCTION twice(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 2 * $1'",
        )
        refused = _tool(home, url, handlers, True)
        run = run_one(refused, url, "caller", _params("SELECT twice(id) FROM t"))
        assert run.steps[0].status == "failed"
        assert "trusted_functions" in (run.steps[0].error or "")

        trusting = _tool(home, url, handlers, True, trusted=("public.twice",))
        run = run_one(trusting, url, "caller", _params("SELECT twice(id) FROM t"))
        assert run.steps[0].status == "succeeded", run.steps[0].error


MYSQL_EVIL = [
    "CREATE TABLE victim (id INT)",
    "INSERT INTO victim VALUES (1)",
    "CREATE FUNCTION evil() RETURNS INT DETERMINISTIC NO SQL "
    "BEGIN DELETE FROM other; RETURN 1; END",
    "CREATE VIEW locked AS SELECT GET_LOCK('aishell-test-view-lock', 0) AS l",
]
MYSQL_CALLS = {
    "executable-comment": "SELECT 1 /*!, evil() */",
    "mariadb-comment": "SELECT 1 /*M!100000 , evil() */",
    "double-dash-without-space": "SELECT 1 --evil()",
    "by-name-no-sql": "SELECT evil()",
    "view-taking-a-lock": "SELECT count(*) FROM locked",
}


@pytest.mark.parametrize("read_only_step", [True, False], ids=["read-step", "write-step"])
def test_each_way_mariadb_runs_hidden_code_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType, read_only_step: bool
) -> None:

    def nothing_held(config: Config, url: str, run: Any) -> None:
        assert refusals(config, run.run_id)
        assert scalar(url, "SELECT IS_USED_LOCK('aishell-test-view-lock')") is None

    _each_refused(
        home, tmp_path, handlers, read_only_step, "mysql", MYSQL_EVIL, MYSQL_CALLS, nothing_held
    )


def test_an_executable_comment_writes_no_server_file(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with scratch_database("mysql", tmp_path) as url:
        make_tables(url)
        name = f"aishell-outfile-{make_url(url).database}"
        sql = f"SELECT 1 /*!50000 INTO OUTFILE '/tmp/{name}' */"
        run = run_one(_tool(home, url, handlers, True), url, "caller", _params(sql))
        assert run.steps[0].status == "failed"
        assert not Path("/tmp", name).exists()


# --- a read-only session switched back from inside ------------------------------------

PG_TAMPER = [
    # Declared STABLE and trusted by the site: it switches the session to read-write.
    "CREATE FUNCTION flip() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('default_transaction_read_only', 'off', false); RETURN 1; END $$",
    "CREATE FUNCTION repath() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('search_path', 'public, pg_catalog', false); RETURN 1; END $$",
    # Or it changes what the steps after it run as and under: the role (whose schema
    # "$user" then names first), the time zone dates are read in, the statement limit.
    "CREATE FUNCTION rerole() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('role', 'pg_read_all_stats', false); RETURN 1; END $$",
    "CREATE FUNCTION retime() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('TimeZone', 'Pacific/Apia', false); RETURN 1; END $$",
    "CREATE FUNCTION unlimit() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('statement_timeout', '0', false); RETURN 1; END $$",
    # Or the digits every float after it is read with.
    "CREATE FUNCTION refloat() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('extra_float_digits', '-15', false); RETURN 1; END $$",
    # Or the currency money is written in, which an archive file reads it back in.
    "CREATE FUNCTION remoney() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM set_config('lc_monetary', 'C', false); RETURN 1; END $$",
]
MYSQL_TAMPER = [
    "CREATE FUNCTION flip() RETURNS INT NO SQL BEGIN SET @@session.tx_read_only = 0; RETURN 1; END",
]


def _flip_then_delete(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """A read-only handler that runs the trusted function, then tries a write the guard
    does not see (as a defect would): only the database stands in its way."""
    from sqlalchemy import text

    conn = ctx.connection
    conn.execute(text(params["statement"])).all()
    raw = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute("DELETE FROM other")
    finally:
        cursor.close()
    raw.commit()
    return {}


@pytest.mark.parametrize(
    ("dialect", "fns"),
    [
        ("postgresql", ("flip", "repath", "rerole", "retime", "unlimit", "refloat", "remoney")),
        ("mysql", ("flip",)),
    ],
    ids=["postgresql", "mysql"],
)
def test_a_step_that_switches_its_read_only_session_fails_as_tampering(
    home: Path, tmp_path: Path, handlers: types.ModuleType, dialect: str, fns: tuple[str, ...]
) -> None:
    with scratch_database(dialect, tmp_path) as url, Cases() as case:
        make_tables(url)
        execute(url, *(PG_TAMPER if dialect == "postgresql" else MYSQL_TAMPER))
        handler = Handler(sql_templates=("SELECT * FROM {table}",), run_fn=_flip_then_delete)
        for function in fns:
            with case(function):
                refill(url)
                trusted = (function,)
                config = handler_tool(home, url, handlers, "flipper", handler, "safe", trusted)

                run = run_one(config, url, "flipper", _params(f"SELECT {function}()"))

                assert run.steps[0].status == "failed"
                assert "changed its own read-only session" in (run.steps[0].error or "")
                assert fingerprint(url, "other") == (5, 15)


@pytest.mark.parametrize("kind", ["quick", "standard", "full"])
def test_maintenance_of_a_database_that_shadows_the_catalog_runs_the_catalogs_functions(
    home: Path, tmp_path: Path, kind: str
) -> None:
    """A database whose path puts public before pg_catalog, and public shadows of the
    catalog's functions that delete rows: aishell's sessions pin the catalog first and
    name it in their own queries, so maintenance runs and no row is deleted."""
    from aishell import commands
    from aishell.policy.approvers import PreApproved
    from tests.helpers import use_target

    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        database = make_url(url).database
        execute(
            url, *_shadows(), f'ALTER DATABASE "{database}" SET search_path = public, pg_catalog'
        )
        config = use_target(home, url)

        result = commands.run_job(
            config, "maintenance", {"type": kind}, approver=PreApproved(up_to=RiskLevel.HIGH)
        )

        assert _other_rows(url) == 5
        assert result.status == "completed", [(s.tool, s.status, s.error) for s in result.steps]


def test_a_read_naming_a_shadowed_function_unqualified_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """The guard cannot tell which of two functions of one name the server picks: one a
    user defined is enough. Named by its schema, the catalog's passes."""
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        database = make_url(url).database
        execute(
            url, *_shadows(), f'ALTER DATABASE "{database}" SET search_path = public, pg_catalog'
        )
        config = _tool(home, url, handlers, True)

        bare = run_one(config, url, "caller", _params("SELECT current_setting('search_path')"))
        named = "SELECT pg_catalog.current_setting('search_path'), pg_catalog.current_schema()"
        qualified = run_one(config, url, "caller", _params(named))

        assert bare.steps[0].status == "failed"
        assert qualified.steps[0].status == "succeeded", qualified.steps[0].error
        assert _other_rows(url) == 5


def _other_rows(url: str) -> int:
    """The rows of `other`, counted on a session of the test's that searches the catalog
    first (SQLAlchemy's own first statement calls current_schema() unqualified)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"options": "-c search_path=pg_catalog,public"})
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_catalog.count(*) FROM public.other")).scalar())
    finally:
        engine.dispose()


def _shadows() -> list[str]:
    """public functions with the catalog's names and argument types, each deleting `other`."""
    body = "LANGUAGE plpgsql AS $$ BEGIN DELETE FROM other; RETURN {}; END $$"
    return [
        f"CREATE FUNCTION public.current_setting(text) RETURNS text {body.format(repr('x'))}",
        f"CREATE FUNCTION public.current_schema() RETURNS name {body.format(repr('public'))}",
        f"CREATE FUNCTION public.pg_relation_size(oid) RETURNS bigint {body.format(0)}",
        f"CREATE FUNCTION public.pg_total_relation_size(oid) RETURNS bigint {body.format(0)}",
        f"CREATE FUNCTION public.pg_table_size(oid) RETURNS bigint {body.format(0)}",
        f"CREATE FUNCTION public.pg_indexes_size(oid) RETURNS bigint {body.format(0)}",
        f"CREATE FUNCTION public.now() RETURNS timestamptz {body.format('clock_timestamp()')}",
        f"CREATE FUNCTION public.lower(text) RETURNS text {body.format('$1')}",
        f"CREATE FUNCTION public.coalesce(bigint, bigint) RETURNS bigint {body.format(0)}",
        f"CREATE FUNCTION public.count(oid) RETURNS bigint {body.format(0)}",
        f"CREATE FUNCTION public.quote_ident(name) RETURNS text {body.format('$1')}",
        f"CREATE FUNCTION public.format_type(oid, int) RETURNS text {body.format(repr('x'))}",
    ]


# --- set-up -----------------------------------------------------------------------------


def _params(sql: str) -> dict[str, Any]:
    return {"table": "t", "statement": sql}


def _tool(
    home: Path,
    url: str,
    module: types.ModuleType,
    read_only_step: bool,
    trusted: tuple[str, ...] = (),
) -> Any:
    """A site tool `caller` that sends params.statement: in a step that only reads, or
    after its declared DELETE in a step that writes (approved at medium)."""
    if read_only_step:
        handler = Handler(sql_templates=("SELECT * FROM {table}",), run_fn=_send)
        return handler_tool(home, url, module, "caller", handler, "safe", trusted)
    handler = Handler(
        sql_templates=("DELETE FROM {table} WHERE id < :n",),
        run_fn=_delete_then_send,
        risk=RiskLevel.MEDIUM,
    )
    return handler_tool(home, url, module, "caller", handler, "medium", trusted)


def _delete_then_send(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    from sqlalchemy import text

    conn = ctx.connection
    conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 2})
    conn.execute(text(params["statement"])).all()
    return {}


# --- sessions elsewhere ----------------------------------------------------------------


def _foreign_objects(url: str) -> list[str]:
    """A foreign table over the test's own `other`, through postgres_fdw to the same
    server and database, and dblink: both open a session that was never read-only."""
    parts = make_url(url)
    host, port = parts.host or "127.0.0.1", parts.port or 5432
    options = f"host '{host}', port '{port}', dbname '{parts.database}'"
    return [
        "CREATE EXTENSION postgres_fdw",
        "CREATE EXTENSION dblink",
        f"CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({options})",
        f"CREATE USER MAPPING FOR CURRENT_USER SERVER loop OPTIONS (user '{parts.username}')",
        "CREATE FOREIGN TABLE far_other (id int, v int) SERVER loop OPTIONS (table_name 'other')",
    ]


ELSEWHERE = {
    "foreign-table": "SELECT count(*) FROM far_other",
    "dblink": "SELECT * FROM dblink('dbname={db}', 'DELETE FROM other RETURNING 1') AS r(x int)",
    "dblink-exec": "SELECT dblink_exec('dbname={db}', 'DELETE FROM other')",
}


@pytest.mark.parametrize("read_only_step", [True, False], ids=["read-step", "write-step"])
def test_a_read_never_opens_a_session_elsewhere(
    home: Path, tmp_path: Path, handlers: types.ModuleType, read_only_step: bool
) -> None:
    """Each way out, on one database, its rows made anew for each."""
    with scratch_database("postgresql", tmp_path) as url, Cases() as case:
        make_tables(url)
        execute(url, *_foreign_objects(url))
        config = _tool(home, url, handlers, read_only_step)
        for name, sql in ELSEWHERE.items():
            with case(name):
                refill(url)
                statement = sql.replace("{db}", make_url(url).database or "")

                run = run_one(config, url, "caller", _params(statement))

                assert run.steps[0].status == "failed"
                assert "statement refused" in (run.steps[0].error or ""), run.steps[0].error
                assert fingerprint(url, "other") == (5, 15)


def test_a_sqlite_pragma_hiding_its_value_behind_a_comment_changes_nothing(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """The finding: a read-only step sent it and the file went to WAL for good."""
    pragmas = [
        "PRAGMA journal_mode/**/=WAL",
        "PRAGMA journal_mode /* x */ = WAL",
        "PRAGMA --\njournal_mode=WAL",
    ]
    with scratch_database("sqlite", tmp_path) as url, Cases() as case:
        make_tables(url)
        config = _tool(home, url, handlers, True)
        for sql in pragmas:
            with case(sql):
                run = run_one(config, url, "caller", _params(sql))

                assert run.steps[0].status == "failed"
                assert "statement refused" in (run.steps[0].error or "")
                assert scalar(url, "PRAGMA journal_mode") == "delete"


def _qualified_analyze(params: dict[str, Any], ctx: Any) -> list[str]:
    return [f"ANALYZE {ctx.quote('public')}.{ctx.quote(params['table'])}"]


def _analyze_qualified(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    from sqlalchemy import text

    ctx.connection.execute(text(_qualified_analyze(params, ctx)[0]))
    return {}


def test_a_maintenance_commands_qualified_name_is_a_name_not_a_call(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """`ANALYZE "public"."t"` names a table: a user's function t(int) that may write is
    not what it runs, though `SELECT "x"."t"` calls it in attribute notation. The step
    is neither refused at its plan nor as it is sent."""
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(url, "CREATE FUNCTION t(int) RETURNS int VOLATILE LANGUAGE sql AS 'SELECT 1'")
        handler = Handler(
            sql_templates=("ANALYZE {table}",),
            run_fn=_analyze_qualified,
            render_fn=_qualified_analyze,
        )
        config = handler_tool(home, url, handlers, "analyzer", handler, "low")
        run = run_one(config, url, "analyzer", {"table": "t"})
        assert run.steps[0].status == "succeeded", run.steps[0].error
        # The same dotted name where it is an expression is still a call that may write.
        config = _tool(home, url, handlers, True)
        run = run_one(config, url, "caller", _params('SELECT "x"."t" FROM (SELECT 1) x'))
        assert run.steps[0].status == "failed"
        assert "t (called as x.t)" in (run.steps[0].error or ""), run.steps[0].error


def _run_it(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    from sqlalchemy import text

    ctx.connection.execute(text(params["statement"])).all()
    return {}


def test_a_step_that_writes_and_changes_its_session_is_the_one_failed(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    """A trusted function run by a step that may write sets the session's time zone:
    that step fails, rather than the next read-only step, which did not do it."""
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        execute(url, *PG_TAMPER)
        handler = Handler(sql_templates=("DELETE FROM {table} WHERE 1 = 0",), run_fn=_run_it)
        config = handler_tool(home, url, handlers, "zoner", handler, "medium", ("retime",))

        run = run_one(config, url, "zoner", _params("SELECT retime()"))

        assert run.steps[0].status == "failed"
        error = run.steps[0].error or ""
        assert "changed its session (TimeZone is now Pacific/Apia)" in error, error
