"""The code of a database's own that the server runs for a step's statements.

ANALYZE evaluates a table's index expressions and partial-index predicates (and, on
PostgreSQL, its extended statistics' expressions); REINDEX, VACUUM FULL, CLUSTER and
a rewriting ALTER TABLE rebuild its indexes, comparing their entries with their
operator classes and their entries' types' functions (a range's subtype_diff); INSERT,
UPDATE and DELETE run its triggers, rules, row-security policies, defaults, generated
columns, check and domain constraints, and a partitioned table's key (its expressions
route each row written; its operator classes route them and prune the partitions a
condition rules out). None of it is in the statement's text, and a function there may write
whatever volatility it declares (IMMUTABLE is a promise, not a proof). So a step's
estimate names each piece of user-defined code its statements run (executor/
estimates.py) and the policy counts it: at least high risk, unless every function it
calls is one the target's config vouches for (`trusted_functions`).

User-defined: on PostgreSQL a function outside pg_catalog and information_schema that no
installed extension owns and CREATE TYPE did not make of the server's code (a range's
constructors; pgcode.pg_type_part), an operator by the function behind it; on MariaDB a
trigger's body (it may write itself) and a UDF of mysql.func (MariaDB refuses stored
functions in generated columns, defaults and checks), and a default that advances or
sets a sequence (DEFAULT (NEXTVAL(s)), DEFAULT (SETVAL(s, 100))): a write of the
sequence, which no rollback undoes, by every INSERT that leaves the column out, as
PostgreSQL's defaults calling the catalog's writing functions count; SQLite keeps no
function in the file, so only its triggers (the connection's TEMP ones too). A plain
VACUUM evaluates a BRIN index's expressions and predicate, as it summarizes the page
ranges rows filled since the last summary, and compares a GIN index's pending entries
with its operator class, and runs no other index's code; PostgreSQL's DELETE maintains
no index, so counts none. A column with no default of its own takes its domain's: an
INSERT, or a foreign key's SET DEFAULT, evaluates that.

A corruption check is a read, yet on PostgreSQL it runs an index's code too: amcheck's
bt_index_check and bt_index_parent_check with heapallindexed build each of the table's
rows into the entry the index should hold, evaluating its expressions and partial-index
predicate row by row (verify_heapam and the structure check without heapallindexed
evaluate none). A read-only session does not stop what such a function does beyond
writing rows (an advisory lock, a statistics reset), so the check asks here (CHECK) and
leaves an index with untrusted code to the structure check (handlers/postgresql/
corruption.py).

The database's code is read once per run (one catalog query, cached in the run's
cache), and matched to each step's statements here without another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.guard.calls import vouched_for
from aishell.guard.memory import USER_CODE_KEY
from aishell.guard.mysqlcalls import mysql_builtins
from aishell.guard.pgcode import PG_OWN_CODE_PARAMETER
from aishell.guard.pgtablecode import PG_TABLE_CODE
from aishell.guard.sqlitetriggers import SQLITE_TRIGGERS, trigger_events
from aishell.guard.usercodeactions import METHODS, RUNS, VERBS, Action
from aishell.sqltext import text


@dataclass(frozen=True)
class Code:
    """One piece of a table's code: kind (index, statistics, default, generated, check,
    domain, policy, trigger, rule), the object's name, which of a write's events run it
    (a trigger's, a policy's command; empty: every event its kind runs on), the
    user-defined functions it calls as (schema, name) (empty: a trigger whose own body
    is the code), and the tables whose statements reach it: its own, then its
    ancestors (partitioned and inherited parents), each (schema, name, visible)."""

    kind: str
    table: tuple[str | None, str]
    name: str
    events: frozenset[str]
    functions: tuple[tuple[str | None, str], ...]
    reached_by: tuple[tuple[str | None, str, bool], ...]
    detail: str = ""
    # An index's access method (PostgreSQL's brin, btree ...), "gin operator class" for
    # the code of its operator class: which runs depends on the action (METHODS).
    method: str = ""
    # A MariaDB default's write of a sequence, as said: "advances sequence `db`.`s`".
    writes: str = ""


def user_code(
    conn: Connection,
    actions: Iterable[Action],
    trusted: Iterable[str],
    run_cache: dict[str, Any],
) -> list[str]:
    """A sentence for each piece of user-defined code the actions run whose functions
    are not all trusted: "index t_expr_idx on public.t evaluates public.zap(), a
    user-defined function that may write (ANALYZE runs it)". One catalog query per run,
    and none for a step with no action."""
    actions = list(dict.fromkeys(actions))
    if not actions:
        return []
    dialect = family(conn.dialect.name)
    runs = RUNS.get(dialect, {})
    if USER_CODE_KEY not in run_cache:
        run_cache[USER_CODE_KEY] = _read(conn, dialect)
    found: dict[str, list[str]] = {}
    for piece in run_cache[USER_CODE_KEY]:
        if not _untrusted(piece, trusted, dialect):
            continue
        for action, schema, table, index in actions:
            if piece.kind not in runs.get(action, ()):
                continue
            if index is not None and not (piece.kind == "index" and piece.name == index):
                continue
            if piece.kind == "index" and piece.method not in METHODS.get(action, (piece.method,)):
                continue
            if piece.events and action not in piece.events:
                continue
            if table is None or _reaches(piece, schema, table, dialect):
                verb = VERBS.get(action, action)
                found.setdefault(_said(piece, dialect), []).append(verb)
    return [
        f"{said} ({' and '.join(dict.fromkeys(verbs))} run{'s' if len(set(verbs)) == 1 else ''} it)"
        for said, verbs in found.items()
    ]


def index_code(
    conn: Connection,
    table: str,
    index: str,
    trusted: Iterable[str],
    run_cache: dict[str, Any],
) -> list[str]:
    """What user_code says of the untrusted code a corruption check of one index would
    run (`table` as the search path finds it); [] when none. The run's one lookup."""
    return user_code(conn, [Action("CHECK", None, table, index)], trusted, run_cache)


def tables_with_index_code(
    conn: Connection, tables: Iterable[str], trusted: Iterable[str], run_cache: dict[str, Any]
) -> set[str]:
    """Which of these tables (as the search path finds them) have an index whose check
    would run untrusted code: a preview names the check it gets instead."""
    return {t for t in tables if user_code(conn, [Action("CHECK", None, t)], trusted, run_cache)}


def _untrusted(piece: Code, trusted: Iterable[str], dialect: str) -> bool:
    """Whether some function it calls is not vouched for (a trigger's own body never is)."""
    if not piece.functions:
        return True
    fold = dialect != "postgresql"
    return any(not vouched_for(s, n, trusted, fold) for s, n in piece.functions)


def _reaches(piece: Code, schema: str | None, table: str, dialect: str) -> bool:
    """Whether a statement's (schema, table) names the piece's table or an ancestor of it:
    on PostgreSQL an unqualified name the one the search path finds; MySQL's (whose code
    is read from the connection's database) and SQLite's without regard to case."""
    for own_schema, own, visible in piece.reached_by:
        if dialect == "postgresql":
            if own == table and (own_schema == schema if schema else visible):
                return True
        elif own.lower() == table.lower() and (
            schema is None or (own_schema or "").lower() == schema.lower()
        ):
            return True
    return False


def _said(piece: Code, dialect: str) -> str:
    schema, name = piece.table
    table = f"{schema}.{name}" if schema else name
    if piece.writes:
        return (
            f"the {piece.kind} of {table}.{piece.name} {piece.writes}, a write no rollback undoes"
        )
    if not piece.functions:
        return (
            f"trigger {piece.name} on {table}{piece.detail} runs its own statements, "
            "which may write"
        )
    calls = " and ".join(f"{s}.{n}()" if s else f"{n}()" for s, n in piece.functions)
    what = (
        "a user-defined function that may write"
        if len(piece.functions) == 1
        else "user-defined functions that may write"
    )
    subject = {
        "index": f"index {piece.name} on {table}"
        + (f"{piece.detail} orders its entries with" if piece.detail else " evaluates"),
        "column type": f"column {table}.{piece.name}{piece.detail} is analyzed with",
        "statistics": f"statistics object {piece.name} on {table} evaluates",
        "partition key": f"the partition key of {table}{piece.detail} calls",
        "generated": f"generated column {table}.{piece.name} calls",
        "default": f"the default of {table}.{piece.name}{piece.detail} calls",
        "check": f"check constraint {piece.name} on {table} calls",
        "domain": f"column {table}.{piece.name}{piece.detail} checks with",
        "policy": f"row-security policy {piece.name} on {table} calls",
        "trigger": f"trigger {piece.name} on {table} runs",
        "rule": f"rule {piece.name} on {table} calls",
    }[piece.kind]
    return f"{subject} {calls}, {what}"


def _read(conn: Connection, dialect: str) -> list[Code]:
    if dialect == "postgresql":
        return _postgresql(conn)
    if dialect == "mysql":
        return _mysql(conn)
    return list(_sqlite(conn))


# --- PostgreSQL ----------------------------------------------------------------------

# A trigger's tgtype bits, a rule's ev_type and a policy's command, as the events they
# run on (a policy FOR SELECT filters the rows an UPDATE or DELETE finds).
_PG_TRIGGER_BITS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}
_PG_RULE_EVENTS = {"2": "UPDATE", "3": "INSERT", "4": "DELETE"}
_PG_POLICY_EVENTS = {
    "*": ("INSERT", "UPDATE", "DELETE"),
    "r": ("UPDATE", "DELETE"),
    "a": ("INSERT",),
    "w": ("UPDATE",),
    "d": ("DELETE",),
}


def _pg_events(kind: str, events: str | None) -> frozenset[str]:
    if kind == "trigger":
        bits = int(events or 0)
        return frozenset(e for e, bit in _PG_TRIGGER_BITS.items() if bits & bit)
    if kind == "rule":
        return frozenset({_PG_RULE_EVENTS.get(events or "", "SELECT")})
    if kind == "policy":
        return frozenset(_PG_POLICY_EVENTS.get(events or "*", ()))
    return frozenset()


def _postgresql(conn: Connection) -> list[Code]:
    grouped: dict[tuple[Any, ...], list[tuple[str | None, str]]] = {}
    reached: dict[tuple[Any, ...], tuple[tuple[str | None, str, bool], ...]] = {}
    methods: dict[tuple[Any, ...], str] = {}
    for row in conn.execute(text(PG_TABLE_CODE), PG_OWN_CODE_PARAMETER):
        kind, schema, table, name, events, detail, fn_schema, fn_name, visible = row[:9]
        up_schemas, up_names, up_visible, method = row[9:]
        key = (kind, schema, table, name, events, detail or "")
        grouped.setdefault(key, []).append((fn_schema, fn_name))
        ancestors = zip(up_schemas or [], up_names or [], up_visible or [], strict=True)
        reached[key] = ((schema, table, bool(visible)), *ancestors)
        methods[key] = method or ""
    return [
        Code(
            kind,
            (schema, table),
            name,
            _pg_events(kind, events),
            tuple(dict.fromkeys(functions)),
            reached[(kind, schema, table, name, events, detail)],
            detail,
            methods[(kind, schema, table, name, events, detail)],
        )
        for (kind, schema, table, name, events, detail), functions in grouped.items()
    ]


# --- MariaDB / MySQL -----------------------------------------------------------------

# One row: the triggers of the connection's database, and the server's UDFs (a generated
# column, default or check may call a UDF, never a stored function: MariaDB refuses
# those). Scalar subqueries, not a UNION: MariaDB 10.11 crashed on a UNION ALL of
# information_schema tables.
_MYSQL_TRIGGERS = (
    "SELECT (SELECT JSON_ARRAYAGG(JSON_ARRAY(EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, "
    "TRIGGER_NAME, EVENT_MANIPULATION, ACTION_TIMING)) FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = DATABASE())"
)
_MYSQL_UDFS = ", (SELECT JSON_ARRAYAGG(name) FROM mysql.func)"
_MYSQL_COLUMNS = (
    "SELECT IF(GENERATION_EXPRESSION IS NULL, 'default', 'generated'), TABLE_SCHEMA, "
    "TABLE_NAME, COLUMN_NAME, coalesce(GENERATION_EXPRESSION, COLUMN_DEFAULT) "
    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
    "AND coalesce(GENERATION_EXPRESSION, COLUMN_DEFAULT) LIKE '%(%'"
)
_MYSQL_CHECKS = (
    "SELECT 'check', CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE "
    "FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()"
)
_CALLED = re.compile(r"`?(\w+)`?\s*\(")
# The server's own functions a column's expression may call that write a sequence, as
# the server stores them (NEXT VALUE FOR s as nextval(`db`.`s`)), with the sequence.
_SEQUENCE_STEPS = {"nextval": "advances", "setval": "sets"}
_SEQUENCE_CALL = re.compile(
    r"\b(nextval|setval)\s*\(\s*((?:`(?:[^`]|``)*`|\w+)(?:\s*\.\s*(?:`(?:[^`]|``)*`|\w+))?)",
    re.IGNORECASE,
)


def _mysql(conn: Connection) -> list[Code]:
    is_udf: Callable[[str], bool]
    try:
        triggers, udfs = conn.execute(text(_MYSQL_TRIGGERS + _MYSQL_UDFS)).one()
        listed = {str(n).lower() for n in json.loads(udfs or "[]")}
        is_udf, any_udf = listed.__contains__, bool(listed)
    except DBAPIError:
        # mysql.func unreadable: any function none of the server's own may be a UDF
        # (guard/mysqlcalls.py).
        triggers = conn.execute(text(_MYSQL_TRIGGERS)).scalar()
        is_udf, any_udf = _not_built_in(conn), True
    found = [
        Code(
            "trigger",
            (schema, table),
            name,
            frozenset({event}),
            (),
            ((schema, table, True),),
            f" ({timing} {event})",
        )
        for schema, table, name, event, timing in json.loads(triggers or "[]")
    ]
    # A default may write a sequence with the server's own functions, UDFs or not.
    for sql in (_MYSQL_COLUMNS, _MYSQL_CHECKS) if any_udf else (_MYSQL_COLUMNS,):
        for kind, schema, table, name, expression in conn.execute(text(sql)):
            reached = ((schema, table, True),)
            called = [c for c in _CALLED.findall(expression or "") if is_udf(c.lower())]
            if called:
                functions = tuple((None, c) for c in dict.fromkeys(called))
                found.append(Code(kind, (schema, table), name, frozenset(), functions, reached))
            for word, sequence in dict.fromkeys(_SEQUENCE_CALL.findall(expression or "")):
                said = f"{_SEQUENCE_STEPS[word.lower()]} sequence {sequence} ({word.upper()})"
                calls = ((None, word.lower()),)
                found.append(
                    Code(kind, (schema, table), name, frozenset(), calls, reached, writes=said)
                )
    return found


def _not_built_in(conn: Connection) -> Callable[[str], bool]:
    """Whether a name (lower case) is none of the server's own functions or words."""
    lookup = conn.connection.cursor()
    try:
        builtins = mysql_builtins(lookup)
    finally:
        lookup.close()
    return lambda name: name not in builtins


# --- SQLite --------------------------------------------------------------------------

_SQLITE_TRIGGERS = f"SELECT name, tbl_name, sql FROM {SQLITE_TRIGGERS} ORDER BY 1"


def _sqlite(conn: Connection) -> Iterator[Code]:
    for name, table, sql in conn.execute(text(_SQLITE_TRIGGERS)):
        events = trigger_events(sql)
        shown = "/".join(sorted(events))
        yield Code(
            "trigger", (None, table), name, events, (), ((None, table, True),), f" ({shown})"
        )
