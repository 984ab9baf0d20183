"""A database cannot run its own code through aishell's catalog queries (CVE-2018-1058).

PostgreSQL picks an operator or a function by its argument types before the search path:
one in `public` whose types match exactly beats pg_catalog's that needs an implicit cast,
wherever pg_catalog stands in the path. So a database owner who writes
`public.>= (oid, integer)` or `public.pg_relation_size(oid)` would have their code run by
every catalog query that compares an oid with an integer constant or measures a relation
by its oid, in a preview as in a run.

The database here holds such a trap for every operator name pg_catalog defines, over
every pair of the catalog's types for which pg_catalog has no exact operator, and for
every catalog function named in aishell's source, over the catalog's types of its arity
(up to two). Each trap resets a canary table's statistics (which no transaction undoes)
and raises an error with a marker: the command fails loudly, and a call an error handler
swallowed still shows in the canary.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.guard.test_user_code import with_trusted
from tests.helpers import use_target
from tests.services import scratch_postgresql

MARKER = "fixshadow-trap"
REPO = Path(__file__).resolve().parents[2]
HANG_SECONDS = 60  # a hang detector, never a timing assertion
CANARY_ROWS = 7
# The types aishell's catalog queries compare, and what a driver sends for a number.
TYPES = [
    *("oid", "regclass", "regproc", "regtype", "regnamespace", "regrole", "int2", "int4"),
    *("int8", "real", "float8", "numeric", "text", "name", '"char"', "char", "bool", "xid"),
    *("xid8", "timestamptz", "interval", "aclitem", "oid[]", "int2vector", "oidvector"),
    *("name[]", "text[]", "varchar", "bigint[]", "information_schema.sql_identifier"),
    *("information_schema.character_data", "information_schema.cardinal_number"),
    "information_schema.yes_or_no",
]

FIRED = f"""
CREATE FUNCTION public.fixshadow_fired(sig pg_catalog.text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM pg_catalog.pg_stat_reset_single_table_counters('public.fixshadow_canary'::regclass);
  RAISE EXCEPTION '{MARKER} %', sig;
END $f$
"""

# Builders named in pg_temp, with a path of pg_catalog alone: no trap catches them.
# What pg_catalog answers for a call is found by asking PostgreSQL (pg_typeof of the
# call, in a subtransaction of its own), asked only where pg_catalog has a candidate the
# call's types could be coerced to, as PostgreSQL requires of one: the same type or base
# type, a pseudo-type (polymorphic, "any", record), a cast in pg_cast (of any context:
# more than the implicit ones PostgreSQL takes), or two types with elements (arrays).
# Elsewhere PostgreSQL has nothing to answer with: the traps are those that asking of
# every pair made (2,780 operators and 3,988 functions on PostgreSQL 15, both ways), for
# a quarter of the questions. JIT off: compiling these queries' plans took longer than
# running them.
COERCIBLE = """
CREATE FUNCTION pg_temp.fixshadow_coercible(types text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $do$
BEGIN
  CREATE TEMP TABLE fixshadow_types AS
    SELECT name, name::regtype::oid AS oid FROM unnest(types) AS name;
  CREATE TEMP TABLE fixshadow_coercible (source oid, target oid, PRIMARY KEY (source, target));
  INSERT INTO fixshadow_coercible
    WITH RECURSIVE taken(oid) AS (
      SELECT oprleft FROM pg_operator UNION SELECT oprright FROM pg_operator
      UNION SELECT unnest(proargtypes::oid[]) FROM pg_proc
    ), chain(oid, cur) AS (
      SELECT oid, oid FROM pg_type
      UNION ALL
      SELECT c.oid, t.typbasetype FROM chain c JOIN pg_type t ON t.oid = c.cur
      WHERE t.typtype = 'd'
    ), base AS (
      SELECT c.oid, c.cur AS base, t.typelem, t.typtype
      FROM chain c JOIN pg_type t ON t.oid = c.cur
      WHERE t.typtype <> 'd'
    ), casts AS (
      SELECT castsource, casttarget FROM pg_cast
    )
    SELECT s.oid, t.oid
    FROM fixshadow_types s JOIN base bs ON bs.oid = s.oid
    CROSS JOIN base bt JOIN pg_type t ON t.oid = bt.oid
    WHERE t.oid IN (TABLE taken)
      AND (s.oid = t.oid OR t.typtype = 'p' OR bs.base = bt.base
           OR (s.oid, t.oid) IN (TABLE casts) OR (bs.base, t.oid) IN (TABLE casts)
           OR (s.oid, bt.base) IN (TABLE casts) OR (bs.base, bt.base) IN (TABLE casts)
           OR (bs.typelem <> 0 AND bt.typelem <> 0));
  ANALYZE fixshadow_types;
  ANALYZE fixshadow_coercible;
END $do$
"""

# A pair of types gets a trap where pg_catalog has no operator taking exactly those types
# and yet answers (by an implicit cast, or a polymorphic operator); a type also gets one
# over (type, type) where pg_catalog answers it beside an untyped literal ('r'), which
# PostgreSQL first looks up as that very pair (and which any type matches).
OPERATOR_TRAPS = """
CREATE FUNCTION pg_temp.fixshadow_operators() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $do$
DECLARE
  found record; op text; lt text; rt text; res text; fn text; args text; forms text[];
  form text;
BEGIN
  FOR found IN
    WITH candidate AS (
      SELECT oprname AS op, oprleft, oprright FROM pg_operator
      WHERE oprnamespace = 'pg_catalog'::regnamespace
    )
    -- Prefix: the operand's type to the operator's.
    SELECT o.op, 'NONE' AS lt, r.name AS rt
    FROM candidate o JOIN fixshadow_coercible cr ON cr.target = o.oprright
    JOIN fixshadow_types r ON r.oid = cr.source
    WHERE o.oprleft = 0
    UNION
    -- Infix: both types to the operator's.
    SELECT o.op, l.name, r.name
    FROM candidate o
    JOIN fixshadow_coercible cl ON cl.target = o.oprleft
    JOIN fixshadow_coercible cr ON cr.target = o.oprright
    JOIN fixshadow_types l ON l.oid = cl.source
    JOIN fixshadow_types r ON r.oid = cr.source
    WHERE o.oprleft <> 0
    UNION
    -- A type beside an untyped literal: its one side's.
    SELECT o.op, t.name, t.name
    FROM candidate o
    JOIN fixshadow_coercible c ON c.target IN (o.oprleft, o.oprright)
    JOIN fixshadow_types t ON t.oid = c.source
    WHERE o.oprleft <> 0
    EXCEPT
    -- What pg_catalog has exactly.
    SELECT o.op, CASE WHEN o.oprleft = 0 THEN 'NONE' ELSE l.name END, r.name
    FROM candidate o
    LEFT JOIN fixshadow_types l ON l.oid = o.oprleft
    JOIN fixshadow_types r ON r.oid = o.oprright
    WHERE o.oprleft = 0 OR l.oid IS NOT NULL
  LOOP
    op := found.op; lt := found.lt; rt := found.rt;
    IF lt = 'NONE' THEN
      forms := ARRAY[format('OPERATOR(pg_catalog.%s) NULL::%s', op, rt)];
    ELSIF lt = rt THEN
      forms := ARRAY[format('NULL::%s OPERATOR(pg_catalog.%s) NULL::%s', lt, op, rt),
                     format('NULL::%s OPERATOR(pg_catalog.%s) %L', lt, op, 'r'),
                     format('%L OPERATOR(pg_catalog.%s) NULL::%s', 'r', op, rt)];
    ELSE
      forms := ARRAY[format('NULL::%s OPERATOR(pg_catalog.%s) NULL::%s', lt, op, rt)];
    END IF;
    res := NULL;
    FOREACH form IN ARRAY forms LOOP
      BEGIN
        EXECUTE format('SELECT pg_catalog.pg_typeof(%s)::text', form) INTO res;
        EXIT;
      EXCEPTION WHEN OTHERS THEN
        res := NULL;
      END;
    END LOOP;
    CONTINUE WHEN res IS NULL;
    -- One function for each result type and pair, shared by the operators.
    fn := 'fixshadow_trap_' || regexp_replace(res, '[^a-z0-9]+', '_', 'g');
    args := CASE WHEN lt = 'NONE' THEN rt ELSE lt || ', ' || rt END;
    BEGIN
      EXECUTE format(
        'CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS '
        '$f$ BEGIN PERFORM public.fixshadow_fired(%L); RETURN NULL; END $f$',
        fn, args, res, format('operator over (%s)', args));
    EXCEPTION WHEN duplicate_function THEN
      NULL;
    END;
    BEGIN
      IF lt = 'NONE' THEN
        EXECUTE format('CREATE OPERATOR public.%s (RIGHTARG = %s, FUNCTION = '
                       'public.%I)', op, rt, fn);
      ELSE
        EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, '
                       'FUNCTION = public.%I)', op, lt, rt, fn);
      END IF;
    EXCEPTION WHEN OTHERS THEN
      NULL;  -- a name CREATE OPERATOR refuses outside pg_catalog
    END;
  END LOOP;
END $do$
"""

# A call of one or two arguments has candidates of that many arguments, and those that
# take more with defaults or a variadic one (taken whatever the types). A call of the
# catalog's very types gets a trap too: it shadows where a path puts public first.
FUNCTION_TRAPS = """
CREATE FUNCTION pg_temp.fixshadow_functions(names text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $do$
DECLARE
  found record; fn text; a text; b text; args text; res text;
BEGIN
  FOR found IN
    WITH candidate AS (
      SELECT proname::text AS fn, pronargs, pronargdefaults, provariadic,
             proargtypes[0] AS first, proargtypes[1] AS second
      FROM pg_proc
      WHERE pronamespace = 'pg_catalog'::regnamespace AND proname::text = ANY(names)
    ), pair AS (
      SELECT x.name AS a, x.oid AS a_oid, y.name AS b, y.oid AS b_oid
      FROM fixshadow_types x
      CROSS JOIN (SELECT name, oid FROM fixshadow_types UNION ALL SELECT 'NONE', 0) y
    )
    SELECT f.fn, p.a, p.b
    FROM candidate f CROSS JOIN pair p
    WHERE f.provariadic <> 0
       OR f.pronargs - f.pronargdefaults <= CASE WHEN p.b_oid = 0 THEN 1 ELSE 2 END
          AND f.pronargs > CASE WHEN p.b_oid = 0 THEN 1 ELSE 2 END
    UNION
    SELECT f.fn, x.name, 'NONE'
    FROM candidate f JOIN fixshadow_coercible c ON c.target = f.first
    JOIN fixshadow_types x ON x.oid = c.source
    WHERE f.pronargs = 1
    UNION
    SELECT f.fn, x.name, y.name
    FROM candidate f
    JOIN fixshadow_coercible cx ON cx.target = f.first
    JOIN fixshadow_coercible cy ON cy.target = f.second
    JOIN fixshadow_types x ON x.oid = cx.source
    JOIN fixshadow_types y ON y.oid = cy.source
    WHERE f.pronargs = 2
  LOOP
    fn := found.fn; a := found.a; b := found.b;
    args := CASE WHEN b = 'NONE' THEN a ELSE a || ', ' || b END;
    BEGIN
      EXECUTE format('SELECT pg_catalog.pg_typeof(pg_catalog.%I(%s))::text', fn,
                     CASE WHEN b = 'NONE' THEN 'NULL::' || a
                          ELSE 'NULL::' || a || ', NULL::' || b END) INTO res;
    EXCEPTION WHEN OTHERS THEN
      CONTINUE;
    END;
    BEGIN
      EXECUTE format(
        'CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS '
        '$f$ BEGIN PERFORM public.fixshadow_fired(%L); RETURN NULL; END $f$',
        fn, args, res, format('function %s(%s)', fn, args));
    EXCEPTION WHEN OTHERS THEN
      NULL;  -- an aggregate or window function called as a plain one
    END;
  END LOOP;
END $do$
"""

TABLES = (
    # The corruption check and the exact measurements run where these are installed.
    "CREATE EXTENSION amcheck",
    "CREATE EXTENSION pgstattuple",
    "CREATE TABLE public.fixshadow_canary (id integer)",
    "CREATE TABLE public.events (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL,"
    " kind text, payload text)",
    "CREATE INDEX events_created_at ON public.events (created_at)",
    "INSERT INTO public.events (created_at, kind, payload) SELECT"
    " now() - g * interval '1 hour', 'k' || (g % 5), repeat('x', 50)"
    " FROM generate_series(1, 3000) g",
    "CREATE TABLE public.accounts (id integer PRIMARY KEY, name text NOT NULL)",
    "CREATE INDEX accounts_name ON public.accounts (name)",
    "INSERT INTO public.accounts SELECT g, 'name ' || g FROM generate_series(1, 500) g",
    "DELETE FROM public.accounts WHERE id % 3 = 0",
    "ANALYZE",
)


def catalog_function_names(conn: Any) -> list[str]:
    """The pg_catalog functions whose names appear as calls in aishell's source."""
    called: set[str] = set()
    for path in (REPO / "aishell").rglob("*.py"):
        called.update(m.lower() for m in re.findall(r"\b([A-Za-z_]\w*)\s*\(", path.read_text()))
    rows = conn.execute(
        text(
            "SELECT DISTINCT proname::text FROM pg_catalog.pg_proc"
            " WHERE pronamespace = 'pg_catalog'::regnamespace AND prokind = 'f'"
            " AND pronargs BETWEEN 1 AND 2 AND proname::text = ANY(CAST(:names AS text[]))"
            " AND NOT EXISTS (SELECT FROM pg_catalog.pg_type t WHERE t.typname = proname)"
        ),
        {"names": sorted(called)},
    )
    return sorted(r[0] for r in rows)


def build(url: str) -> None:
    """The tables, the traps, and the canary's rows reported."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", use_native_hstore=False)
    try:
        with engine.connect() as conn:
            for statement in TABLES:
                conn.execute(text(statement))
            conn.execute(text(FIRED))
            for builder in (COERCIBLE, OPERATOR_TRAPS, FUNCTION_TRAPS):
                conn.execute(text(builder))
            names = catalog_function_names(conn)
            conn.execute(
                text("SELECT pg_temp.fixshadow_coercible(CAST(:types AS text[]))"),
                {"types": list(TYPES)},
            )
            conn.execute(text("SELECT pg_temp.fixshadow_operators()"))
            conn.execute(
                text("SELECT pg_temp.fixshadow_functions(CAST(:names AS text[]))"),
                {"names": names},
            )
            conn.execute(
                text(
                    f"INSERT INTO public.fixshadow_canary SELECT 1 FROM"
                    f" generate_series(1, {CANARY_ROWS})"
                )
            )
    finally:
        engine.dispose()
    until = time.monotonic() + HANG_SECONDS
    while canary_inserts(url) != CANARY_ROWS:
        assert time.monotonic() < until, "the canary's inserts were never reported"
        time.sleep(0.1)


def canary_inserts(url: str) -> int:
    engine = create_engine(url, use_native_hstore=False)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT n_tup_ins FROM pg_catalog.pg_stat_user_tables"
                        " WHERE relname OPERATOR(pg_catalog.=) 'fixshadow_canary'"
                    )
                ).scalar()
                or 0
            )
    finally:
        engine.dispose()


def trap_count(url: str) -> int:
    """The operators the database defines."""
    engine = create_engine(url, use_native_hstore=False)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_operator"
                        " WHERE oprnamespace OPERATOR(pg_catalog.=) 'public'::regnamespace"
                    )
                ).scalar()
                or 0
            )
    finally:
        engine.dispose()


def trap_functions(url: str) -> list[str]:
    """The functions the database defines (those of its extensions left out)."""
    engine = create_engine(url, use_native_hstore=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT DISTINCT 'public.' OPERATOR(pg_catalog.||) p.proname::pg_catalog.text"
                    " FROM pg_catalog.pg_proc p"
                    " WHERE p.pronamespace OPERATOR(pg_catalog.=) 'public'::regnamespace"
                    " AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d"
                    "  WHERE d.objid OPERATOR(pg_catalog.=) p.oid"
                    "  AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog.char)"
                )
            )
            return sorted(r[0] for r in rows)
    finally:
        engine.dispose()


@contextmanager
def unhurried_login(url: str) -> Iterator[str]:
    """url as a superuser login of the test's own whose commits do not wait for the
    disk (synchronous_commit off, a setting of that login alone): the backup's check
    restores the traps into a scratch copy, thousands of objects each committed on
    its own, which otherwise wait for as many flushes of the WAL. What a query finds
    and runs is the same."""
    role = f"fixshadow_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", use_native_hstore=False)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN SUPERUSER'))
            conn.execute(text(f'ALTER ROLE "{role}" SET synchronous_commit = off'))
        try:
            yield make_url(url).set(username=role).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))
    finally:
        admin.dispose()


@pytest.fixture
def trapped(home: Path) -> Iterator[str]:
    """The target, whose site trusts every trap: the guard, which refuses a read naming
    an operator or function a database defines that may write, then lets them by, and
    only the catalog queries' own exactness keeps the traps from running."""
    with (
        scratch_postgresql(name=f"fixshadow_{uuid.uuid4().hex[:12]}") as url,
        unhurried_login(url) as login,
    ):
        build(url)
        with_trusted(home, use_target(home, login), *trap_functions(url))
        yield url


PURGE = ["--table", "events", "--date-column", "created_at", "--retention-days", "100"]
COMMANDS: tuple[list[str], ...] = (
    *(
        ["plan", "maintenance", "--type", kind]
        for kind in ("quick", "standard", "full", "emergency")
    ),
    ["plan", "log-cleanup", *PURGE],
    ["plan", "backup"],
    *(
        ["run", "maintenance", "--type", kind, "--dry-run"]
        for kind in ("quick", "standard", "full", "emergency")
    ),
    ["run", "log-cleanup", *PURGE, "--dry-run"],
    ["targets", "check"],
    ["doctor", "--target", "db"],
    *(
        ["run", "maintenance", "--type", kind, "--yes", "--non-interactive"]
        for kind in ("quick", "standard", "full", "emergency")
    ),
    ["run", "log-cleanup", *PURGE, "--yes", "--non-interactive"],
    ["run", "backup", "--yes", "--non-interactive"],
)


def test_no_command_runs_the_databases_operators_or_functions(trapped: str) -> None:
    # The traps are there: hundreds of operators and functions a query could fall into.
    assert trap_count(trapped) > 1000
    failures: list[str] = []
    for words in COMMANDS:
        result = CliRunner().invoke(cli, words)
        output = result.output + (repr(result.exception) if result.exception else "")
        if result.exit_code != 0 or MARKER in output:
            failures.append(f"$ aishell {' '.join(words)} -> {result.exit_code}\n{output[-3000:]}")
    assert not failures, "\n\n".join(failures)
    # No trap ran unseen either (one that raised reset the canary before it raised).
    assert canary_inserts(trapped) == CANARY_ROWS
