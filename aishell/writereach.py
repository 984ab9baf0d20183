"""What a step's writes do beyond the rows their statements name.

Another table's foreign key with ON DELETE CASCADE, SET NULL or SET DEFAULT deletes or
changes that table's rows with each DELETE: rows no statement of the step names, which
a purge neither counts nor archives. A trigger (and on PostgreSQL a rule) that runs on
the DELETE, UPDATE or INSERT writes whatever its code writes. The statements the
approval shows are the step's own; these are part of what they run, so the step's
estimate names them (executor/estimates.py), its preview shows them and the policy asks
for them (policy._reaches_beyond): a cascade only by a person's yes for that very step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlalchemy.engine import Connection
from sqlglot import exp

from aishell.sqlcheck import SQLGLOT_DIALECT
from aishell.sqltext import text

# (event, schema or None, table) of one statement's write.
Written = tuple[str, str | None, str]


@dataclass(frozen=True)
class Reach:
    """cascades: "deleting from t also acts on child.column (ON DELETE CASCADE, name)",
    one per foreign key; fires: "deleting from t fires trigger x (runs f)", one per
    trigger or rule."""

    cascades: list[str] = field(default_factory=list)
    fires: list[str] = field(default_factory=list)


_DOING = {"DELETE": "deleting from", "UPDATE": "updating", "INSERT": "inserting into"}
# What each kind of statement may do to the rows of its table: MERGE all three, an
# INSERT that updates on conflict (ON CONFLICT DO UPDATE, ON DUPLICATE KEY UPDATE) both,
# MySQL's REPLACE deletes the row it replaces.
_NODES: dict[type[exp.Expression], tuple[str, ...]] = {
    exp.Delete: ("DELETE",),
    exp.Update: ("UPDATE",),
    exp.Insert: ("INSERT",),
    exp.Merge: ("INSERT", "UPDATE", "DELETE"),
}
# Only a statement with one of these words can write rows: the others (VACUUM, ANALYZE,
# REINDEX, a SELECT) are not parsed, as a step per table sends thousands of them.
_WRITES_ROWS = re.compile(r"\b(?:DELETE|UPDATE|INSERT|MERGE|REPLACE)\b", re.IGNORECASE)
_REPLACE = re.compile(
    r"^\s*REPLACE\s+(?:(?:LOW_PRIORITY|DELAYED)\s+)?(?:INTO\s+)?"
    r"(?:(`(?:[^`]|``)+`|\w+)\s*\.\s*)?(`(?:[^`]|``)+`|\w+)",
    re.IGNORECASE,
)
# Rendered statements hold :name placeholders for the values bound when they run.
_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=1024)
def written(sql: str, dialect: str) -> tuple[Written, ...]:
    """Each table a statement deletes from, updates or inserts into (a data-modifying
    CTE's too), by event; nothing for a statement the parser cannot read (the guard
    counts that as a write of its own, and the tool's risk says so)."""
    if not _WRITES_ROWS.search(sql):
        return ()
    try:
        tree = sqlglot.parse_one(_PLACEHOLDER.sub("NULL", sql), read=SQLGLOT_DIALECT[dialect])
    except sqlglot.errors.ParseError:
        return ()
    if isinstance(tree, exp.Command):
        return _replaced(sql)
    found: list[Written] = []
    for node in tree.find_all(*_NODES):
        target = node.this
        if isinstance(target, exp.Schema):  # INSERT INTO t (columns)
            target = target.this
        name = _folded(target.this, dialect) if isinstance(target, exp.Table) else None
        if not name:
            continue
        events = _NODES[type(node)]
        conflict = node.args.get("conflict") if isinstance(node, exp.Insert) else None
        if conflict is not None and "UPDATE" in str(conflict.args.get("action") or ""):
            events = (*events, "UPDATE")
        schema = _folded(target.args.get("db"), dialect)
        found.extend((event, schema, name) for event in events)
    return tuple(dict.fromkeys(found))


def _folded(identifier: exp.Expression | None, dialect: str) -> str | None:
    """A name as the catalog holds it: PostgreSQL folds an unquoted one to lower case
    (MariaDB's and SQLite's catalogs are asked without regard to case)."""
    if not isinstance(identifier, exp.Identifier):
        return None
    name = identifier.name
    return name.lower() if dialect == "postgresql" and not identifier.quoted else name


def _replaced(sql: str) -> tuple[Written, ...]:
    """MySQL's REPLACE, which the parser reads as a command: it inserts, and deletes the
    row it replaces."""
    match = _REPLACE.match(sql)
    if match is None:
        return ()
    schema, table = (
        name[1:-1].replace("``", "`") if name and name.startswith("`") else name
        for name in match.groups()
    )
    assert table is not None
    return (("INSERT", schema, table), ("DELETE", schema, table))


def write_reach(conn: Connection, statements: Iterable[str]) -> Reach | None:
    """What the statements' writes also do; None when none of them writes rows."""
    targets = dict.fromkeys(w for sql in statements for w in written(sql, conn.dialect.name))
    if not targets:
        return None
    reach = Reach()
    for event, schema, table in targets:
        doing = f"{_DOING[event]} {table}"
        if event == "DELETE":
            reach.cascades.extend(
                f"{doing} also acts on {c}" for c in _cascades(conn, schema, table)
            )
        reach.fires.extend(f"{doing} fires {f}" for f in _fires(conn, schema, table, event))
    return reach


_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

_PG_TABLE = (
    "(SELECT c.oid FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :t AND n.nspname = coalesce(:s, current_schema()))"
)
_PG_CASCADES = (
    "SELECT DISTINCT c.conrelid::regclass::text AS child, c.conname, c.confdeltype, "
    "(SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a "
    " WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)) AS columns "
    f"FROM pg_catalog.pg_constraint c WHERE c.contype = 'f' AND c.confrelid = {_PG_TABLE} "
    "AND c.confdeltype IN ('c', 'n', 'd') ORDER BY 1, 2"
)
# A trigger's tgtype bit and a rule's ev_type, per event.
_PG_EVENTS = {"INSERT": (4, "3"), "DELETE": (8, "4"), "UPDATE": (16, "2")}
_PG_FIRES = (
    "SELECT 'trigger ' || t.tgname || ' (runs ' || t.tgfoid::regproc::text || ')' "
    f"FROM pg_catalog.pg_trigger t WHERE t.tgrelid = {_PG_TABLE} AND NOT t.tgisinternal "
    "AND t.tgenabled <> 'D' AND t.tgtype::int & :bit <> 0 "
    "UNION ALL SELECT 'rule ' || r.rulename || CASE WHEN r.is_instead "
    "THEN ' (DO INSTEAD: the statement does what the rule says)' ELSE ' (DO ALSO)' END "
    f"FROM pg_catalog.pg_rewrite r WHERE r.ev_class = {_PG_TABLE} AND r.ev_type = :ev "
    "AND r.ev_enabled <> 'D' ORDER BY 1"
)
_MYSQL_CASCADES = (
    "SELECT r.CONSTRAINT_SCHEMA, r.TABLE_NAME, r.CONSTRAINT_NAME, r.DELETE_RULE, "
    "(SELECT GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ', ') "
    " FROM information_schema.KEY_COLUMN_USAGE k WHERE k.CONSTRAINT_SCHEMA = "
    " r.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME "
    " AND k.TABLE_NAME = r.TABLE_NAME) "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS r "
    "WHERE r.UNIQUE_CONSTRAINT_SCHEMA = coalesce(:s, DATABASE()) "
    "AND r.REFERENCED_TABLE_NAME = :t "
    "AND r.DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') ORDER BY 2, 3"
)
_MYSQL_FIRES = (
    "SELECT TRIGGER_NAME, ACTION_TIMING FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = coalesce(:s, DATABASE()) AND EVENT_OBJECT_TABLE = :t "
    "AND EVENT_MANIPULATION = :event ORDER BY 1"
)
# SQLite acts on foreign keys only where the connection turned them on.
_SQLITE_CASCADES = (
    'SELECT m.name, f."from", f.on_delete FROM sqlite_master m '
    "JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND f.\"table\" = :t COLLATE NOCASE "
    "AND f.on_delete IN ('CASCADE', 'SET NULL', 'SET DEFAULT') ORDER BY 1, 2"
)
_SQLITE_FIRES = (
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t "
    "COLLATE NOCASE ORDER BY 1"
)
# A trigger's header (before its body) names its event: "... DELETE ON table", "UPDATE OF
# columns ON table".
_SQLITE_EVENTS = {
    event: re.compile(rf"\b{event}\s+(?:OF\s+[^;]*?\s+)?ON\b", re.IGNORECASE)
    for event in _PG_EVENTS
}
_BODY = re.compile(r"\bBEGIN\b", re.IGNORECASE)


def _cascades(conn: Connection, schema: str | None, table: str) -> list[str]:
    """The other tables' foreign keys that act when rows of `table` are deleted."""
    dialect, names = conn.dialect.name, {"t": table, "s": schema}
    if dialect == "postgresql":
        rows = conn.execute(text(_PG_CASCADES), names)
        return [
            f"{child}.{cols} (ON DELETE {_ACTIONS[act]}, {name})" for child, name, act, cols in rows
        ]
    if dialect in ("mysql", "mariadb"):
        rows = conn.execute(text(_MYSQL_CASCADES), names)
        return [
            f"{db}.{child}.{cols} (ON DELETE {act}, {name})" for db, child, name, act, cols in rows
        ]
    if not conn.execute(text("SELECT foreign_keys FROM pragma_foreign_keys")).scalar():
        return []
    rows = conn.execute(text(_SQLITE_CASCADES), {"t": table})
    return [f"{child}.{column} (ON DELETE {action})" for child, column, action in rows]


def _fires(conn: Connection, schema: str | None, table: str, event: str) -> list[str]:
    """The triggers (and PostgreSQL rules) that run on `event` of `table`."""
    dialect, names = conn.dialect.name, {"t": table, "s": schema}
    if dialect == "postgresql":
        bit, ev = _PG_EVENTS[event]
        return [str(r[0]) for r in conn.execute(text(_PG_FIRES), {**names, "bit": bit, "ev": ev})]
    if dialect in ("mysql", "mariadb"):
        rows = conn.execute(text(_MYSQL_FIRES), {**names, "event": event})
        return [f"trigger {name} ({timing} {event})" for name, timing in rows]
    return [
        f"trigger {name}"
        for name, sql in conn.execute(text(_SQLITE_FIRES), {"t": table})
        if _SQLITE_EVENTS[event].search(_BODY.split(sql or "", maxsplit=1)[0])
    ]
