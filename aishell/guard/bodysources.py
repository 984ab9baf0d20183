"""The code a write runs, read from the catalog: the bodies of its table's triggers (and
PostgreSQL's rules) for its event, and of the routines they call, each with what runs
it, in one query. bodywrites.py reads what each writes.

A routine is one whose name is a word of a body (PostgreSQL) or appears in it (MariaDB:
of the body's own database, or of one whose name the body holds too, as a call names
it), followed in turn. A body the role may not read comes with no text (None).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from sqlalchemy.engine import Connection

from aishell.guard.pgcode import pg_extension_code
from aishell.guard.sqlitetriggers import EVENTS, SQLITE_TRIGGERS, trigger_events
from aishell.guard.writtentables import Write
from aishell.sqltext import text

# The relation a statement names, found as the statement finds it: an unqualified name
# through the whole search_path, not only its first schema.
PG_TABLE = (
    "(SELECT pg_catalog.to_regclass(coalesce(pg_catalog.quote_ident(:s) || '.', '') "
    "|| pg_catalog.quote_ident(:t))::pg_catalog.oid)"
)
# The table and the tables whose rows a write of it writes too: its partitions (an
# INSERT routes rows to them), and for the other events its inheritance children (a
# write without ONLY; with ONLY they are counted all the same).
PG_FAMILY = (
    "WITH RECURSIVE aishell_family(oid) AS ("
    f"SELECT {PG_TABLE} UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i "
    "JOIN aishell_family f ON i.inhparent = f.oid "
    "JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid WHERE k.relispartition OR :inherited) "
)
IN_FAMILY = "IN (SELECT oid FROM aishell_family)"

# A trigger's tgtype bit and a rule's ev_type, per event (no rule runs on TRUNCATE).
PG_EVENTS = {"INSERT": (4, "3"), "DELETE": (8, "4"), "UPDATE": (16, "2"), "TRUNCATE": (32, None)}
# What a function runs: its source; for a SQL function written BEGIN ATOMIC ... END, whose
# body the server keeps parsed (its prosrc empty), its definition.
PG_FUNCTION_TEXT = "coalesce(NULLIF({f}.prosrc, ''), pg_catalog.pg_get_functiondef({f}.oid))"
# Whether function {p}'s name stands in the text {src}: as one of its words, written or
# folded to lower case as an unquoted name is; or, a name the split into words would
# break (a quoted one may hold any character, an unquoted one U+00A0 or $, each of which
# the split's \W takes for a gap), anywhere in it.
PG_NAMED_IN = (
    "({p}.proname = ANY (CAST(pg_catalog.regexp_split_to_array({src} || ' ' || "
    "pg_catalog.lower({src}), '\\W+') AS pg_catalog.name[])) "
    "OR ({p}.proname OPERATOR(pg_catalog.~) '\\W' "
    "AND (pg_catalog.strpos({src}, {p}.proname) OPERATOR(pg_catalog.>) 0 "
    "OR pg_catalog.strpos(pg_catalog.lower({src}), {p}.proname) OPERATOR(pg_catalog.>) 0)))"
)
# Each body the write runs, with what runs it, its function, its language, and whether it
# is an installed extension's declared IMMUTABLE or STABLE: its triggers' functions and its
# rules' actions, then every function of the database's whose name is a word of a body.
_PG_CODE = (
    f"{PG_FUNCTION_TEXT.format(f='p')}, "
    "CAST(CAST(p.oid AS pg_catalog.regproc) AS pg_catalog.text), "
    "(SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = p.pronamespace), "
    "p.proname, (SELECT l.lanname FROM pg_catalog.pg_language l WHERE l.oid = p.prolang), "
    f"p.provolatile <> 'v' AND {pg_extension_code()}"
)
_PG_BODIES = (
    f"{PG_FAMILY}, aishell_body(who, src, fn, fn_schema, fn_name, lang, extension_reads) AS ("
    "SELECT 'trigger ' || CAST(t.tgname AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(t.tgrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    f"{_PG_CODE} "
    "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    f"WHERE t.tgrelid {IN_FAMILY} AND NOT t.tgisinternal AND t.tgenabled <> 'D' "
    "AND CAST(t.tgtype AS pg_catalog.int4) & CAST(:bit AS pg_catalog.int4) <> 0 "
    "UNION SELECT 'rule ' || CAST(r.rulename AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(r.ev_class AS pg_catalog.regclass) AS pg_catalog.text), "
    "pg_catalog.pg_get_ruledef(r.oid), NULL, NULL, NULL, 'sql', false FROM pg_catalog.pg_rewrite r "
    f"WHERE r.ev_class = {PG_TABLE} AND r.ev_type = :ev AND r.ev_enabled <> 'D' "
    f"UNION SELECT b.who, {_PG_CODE} "
    f"FROM aishell_body b JOIN pg_catalog.pg_proc p ON {PG_NAMED_IN.format(src='b.src', p='p')} "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname <> ALL ('{pg_catalog,information_schema}')) "
    "SELECT who, src, fn, fn_schema, fn_name, lang, extension_reads FROM aishell_body "
    "ORDER BY 1, 2, 3"
)


def _in_body(name: str, body: str) -> str:
    """Whether the name stands in the body: anywhere in it, as the body writes it (a
    backtick in a name is doubled there, the only way to write one)."""
    return f"LOCATE(REPLACE({name}, '`', '``'), {body}) > 0"


# The triggers of the table's event, and the routines they run (the recursion holds the
# routines' keys only), each with its body (NULL: one the role may not read) and the
# sql_mode it was made under, which decides where its strings end.
_MYSQL_BODIES = (
    "WITH RECURSIVE aishell_trigger AS (SELECT TRIGGER_NAME, EVENT_OBJECT_SCHEMA, "
    "EVENT_OBJECT_TABLE, ACTION_STATEMENT, SQL_MODE FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = coalesce(:s, DATABASE()) AND EVENT_OBJECT_TABLE = :t "
    "AND EVENT_MANIPULATION = :event), "
    "aishell_runs(trig, tab, s, n, k) AS (SELECT t.TRIGGER_NAME, t.EVENT_OBJECT_TABLE, "
    "r.ROUTINE_SCHEMA, r.ROUTINE_NAME, r.ROUTINE_TYPE FROM aishell_trigger t "
    "JOIN information_schema.ROUTINES r "
    f"ON {_in_body('r.ROUTINE_NAME', 't.ACTION_STATEMENT')} "
    "AND (r.ROUTINE_SCHEMA = t.EVENT_OBJECT_SCHEMA "
    f"OR {_in_body('r.ROUTINE_SCHEMA', 't.ACTION_STATEMENT')}) "
    "UNION SELECT a.trig, a.tab, r.ROUTINE_SCHEMA, r.ROUTINE_NAME, r.ROUTINE_TYPE "
    "FROM aishell_runs a JOIN information_schema.ROUTINES c ON c.ROUTINE_SCHEMA = a.s "
    "AND c.ROUTINE_NAME = a.n AND c.ROUTINE_TYPE = a.k "
    "JOIN information_schema.ROUTINES r "
    f"ON {_in_body('r.ROUTINE_NAME', 'c.ROUTINE_DEFINITION')} "
    "AND (r.ROUTINE_SCHEMA = c.ROUTINE_SCHEMA "
    f"OR {_in_body('r.ROUTINE_SCHEMA', 'c.ROUTINE_DEFINITION')})) "
    "SELECT CONCAT('trigger ', TRIGGER_NAME, ' on ', EVENT_OBJECT_TABLE), ACTION_STATEMENT, "
    "SQL_MODE "
    "FROM aishell_trigger UNION ALL SELECT CONCAT(LOWER(a.k), ' ', a.s, '.', a.n, "
    "' run by trigger ', a.trig, ' on ', a.tab), r.ROUTINE_DEFINITION, r.SQL_MODE "
    "FROM aishell_runs a "
    "JOIN information_schema.ROUTINES r ON r.ROUTINE_SCHEMA = a.s AND r.ROUTINE_NAME = a.n "
    "AND r.ROUTINE_TYPE = a.k ORDER BY 1"
)
_SQLITE_BODIES = (
    f"SELECT name, tbl_name, sql FROM {SQLITE_TRIGGERS} WHERE tbl_name = :t "
    "COLLATE NOCASE ORDER BY 1"
)


class Body(NamedTuple):
    """A body the write runs: what runs it, its text (None: not readable); on
    PostgreSQL its function (as shown, and its schema and name; None for a rule's), its
    language, and whether an extension's function declared IMMUTABLE or STABLE; on MySQL
    the sql_mode it was made under."""

    who: str
    text: str | None
    function: str | None = None
    schema_and_name: tuple[str, str] | None = None
    language: str | None = None
    extension_reads: bool = False
    sql_mode: str = ""


def bodies(conn: Connection, write: Write, dialect: str) -> Iterator[Body]:
    """The bodies a write of `dialect` runs (the module's docstring), in one query."""
    names = {"s": write.schema, "t": write.table}
    if dialect == "postgresql":
        bit, ev = PG_EVENTS[write.event]
        values = {**names, "bit": bit, "ev": ev, "inherited": write.event != "INSERT"}
        for row in conn.execute(text(_PG_BODIES), values):
            who, src, function, schema, name, language, extension_reads = row
            named = None if function is None else (str(schema), str(name))
            code = None if src is None else str(src)
            yield Body(str(who), code, function, named, language, bool(extension_reads))
        return
    if write.event not in EVENTS:  # MySQL runs no trigger on TRUNCATE; SQLite has none
        return
    if dialect == "mysql":
        found = conn.execute(text(_MYSQL_BODIES), {**names, "event": write.event})
        for who, src, sql_mode in found:
            yield Body(str(who), None if src is None else str(src), sql_mode=str(sql_mode))
        return
    for name, table, sql in conn.execute(text(_SQLITE_BODIES), {"t": write.table}):
        if write.event in trigger_events(sql):
            yield Body(f"trigger {name} on {table}", _BEGIN.split(str(sql), maxsplit=1)[-1])


_BEGIN = re.compile(r"\bBEGIN\b", re.IGNORECASE)
