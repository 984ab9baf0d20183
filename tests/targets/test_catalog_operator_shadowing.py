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
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

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
# A pair of types gets a trap where pg_catalog has no operator taking exactly those types
# and yet answers (by an implicit cast, or a polymorphic operator); a type also gets one
# over (type, type) where pg_catalog answers it beside an untyped literal ('r'), which
# PostgreSQL first looks up as that very pair.
OPERATOR_TRAPS = """
CREATE FUNCTION pg_temp.fixshadow_operators(types text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $do$
DECLARE
  op text; lt text; rt text; res text; fn text; args text; forms text[]; form text;
BEGIN
  FOR op IN SELECT DISTINCT oprname FROM pg_catalog.pg_operator LOOP
    FOREACH lt IN ARRAY array_prepend('NONE', types) LOOP
      FOREACH rt IN ARRAY types LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_operator o
                   WHERE o.oprname OPERATOR(pg_catalog.=) op
                     AND o.oprnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::regnamespace
                     AND o.oprleft OPERATOR(pg_catalog.=)
                         CASE WHEN lt = 'NONE' THEN 0::oid ELSE lt::regtype::oid END
                     AND o.oprright OPERATOR(pg_catalog.=) rt::regtype::oid) THEN
          CONTINUE;
        END IF;
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
    END LOOP;
  END LOOP;
END $do$
"""

FUNCTION_TRAPS = """
CREATE FUNCTION pg_temp.fixshadow_functions(types text[], names text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $do$
DECLARE
  fn text; a text; b text; args text; res text; n int := 0;
BEGIN
  FOREACH fn IN ARRAY names LOOP
    FOREACH a IN ARRAY types LOOP
      FOREACH b IN ARRAY array_prepend('NONE', types) LOOP
        args := CASE WHEN b = 'NONE' THEN a ELSE a || ', ' || b END;
        IF EXISTS (SELECT FROM pg_catalog.pg_proc p
                   WHERE p.proname OPERATOR(pg_catalog.=) fn
                     AND p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::regnamespace
                     AND p.proargtypes::oid[] OPERATOR(pg_catalog.=)
                         CASE WHEN b = 'NONE' THEN ARRAY[a::regtype::oid]
                              ELSE ARRAY[a::regtype::oid, b::regtype::oid] END) THEN
          CONTINUE;
        END IF;
        BEGIN
          EXECUTE format('SELECT pg_catalog.pg_typeof(pg_catalog.%I(%s))::text', fn,
                         CASE WHEN b = 'NONE' THEN 'NULL::' || a
                              ELSE 'NULL::' || a || ', NULL::' || b END) INTO res;
        EXCEPTION WHEN OTHERS THEN
          CONTINUE;
        END;
        n := n + 1;
        BEGIN
          EXECUTE format(
            'CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS '
            '$f$ BEGIN PERFORM public.fixshadow_fired(%L); RETURN NULL; END $f$',
            fn, args, res, format('function %s(%s)', fn, args));
        EXCEPTION WHEN OTHERS THEN
          NULL;  -- an aggregate or window function called as a plain one
        END;
      END LOOP;
    END LOOP;
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
            conn.execute(text(OPERATOR_TRAPS))
            conn.execute(text(FUNCTION_TRAPS))
            names = catalog_function_names(conn)
            conn.execute(
                text("SELECT pg_temp.fixshadow_operators(CAST(:types AS text[]))"),
                {"types": list(TYPES)},
            )
            conn.execute(
                text(
                    "SELECT pg_temp.fixshadow_functions(CAST(:types AS text[]),"
                    " CAST(:names AS text[]))"
                ),
                {"types": list(TYPES), "names": names},
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


@pytest.fixture
def trapped(home: Path) -> Iterator[str]:
    """The target, whose site trusts every trap: the guard, which refuses a read naming
    an operator or function a database defines that may write, then lets them by, and
    only the catalog queries' own exactness keeps the traps from running."""
    with scratch_postgresql(name=f"fixshadow_{uuid.uuid4().hex[:12]}") as url:
        build(url)
        with_trusted(home, use_target(home, url), *trap_functions(url))
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
