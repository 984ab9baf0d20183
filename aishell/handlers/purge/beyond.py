"""What deleting rows of a table does beyond those rows.

Another table's foreign key with ON DELETE CASCADE, SET NULL or SET DEFAULT deletes or
changes that table's rows with each batch: rows the purge neither counts nor archives.
A trigger (and on PostgreSQL a rule) that runs on DELETE writes whatever its code
writes, and so does one on INSERT into the archive table. The statements the approval
shows are the DELETE and the INSERT; these are part of what they run, so a purge's
estimate names them, its plan shows them and the policy asks for them
(policy._reaches_beyond): a cascade only by a person's yes for that very step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from aishell.sqltext import text


@dataclass(frozen=True)
class Beyond:
    """cascades: the other tables' foreign keys that act on DELETE, each shown as
    "child.column (ON DELETE CASCADE, constraint name)"; fires: the triggers and rules
    that run on DELETE of the table, or on INSERT into its archive table."""

    cascades: list[str] = field(default_factory=list)
    fires: list[str] = field(default_factory=list)


_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

_PG_TABLE = (
    "(SELECT c.oid FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :t AND n.nspname = current_schema())"
)
_PG_CASCADES = (
    "SELECT DISTINCT c.conrelid::regclass::text AS child, c.conname, c.confdeltype, "
    "(SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a "
    " WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)) AS columns "
    f"FROM pg_catalog.pg_constraint c WHERE c.contype = 'f' AND c.confrelid = {_PG_TABLE} "
    "AND c.confdeltype IN ('c', 'n', 'd') ORDER BY 1, 2"
)
# A trigger's tgtype bit (4 INSERT, 8 DELETE) and a rule's ev_type ('3', '4') per event.
_PG_EVENTS = {"INSERT": (4, "3"), "DELETE": (8, "4")}
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
    "WHERE r.UNIQUE_CONSTRAINT_SCHEMA = DATABASE() AND r.REFERENCED_TABLE_NAME = :t "
    "AND r.DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') ORDER BY 2, 3"
)
_MYSQL_FIRES = (
    "SELECT TRIGGER_NAME, ACTION_TIMING FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = :t "
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
# A trigger's header (before its body) names its event: "... DELETE ON table".
_SQLITE_EVENTS = {
    event: re.compile(rf"\b{event}\s+ON\b", re.IGNORECASE) for event in ("INSERT", "DELETE")
}
_BODY = re.compile(r"\bBEGIN\b", re.IGNORECASE)


def deletes_beyond(conn: Connection, table: str, archive_table: str | None = None) -> Beyond:
    """What a DELETE of rows of `table` (in the connection's current schema) also does,
    and the INSERT of them into `archive_table`."""
    dialect = conn.dialect.name
    found = Beyond()
    if dialect == "postgresql":
        for child, name, action, columns in conn.execute(text(_PG_CASCADES), {"t": table}):
            found.cascades.append(f"{child}.{columns} (ON DELETE {_ACTIONS[action]}, {name})")
    elif dialect in ("mysql", "mariadb"):
        for schema, child, name, action, columns in conn.execute(
            text(_MYSQL_CASCADES), {"t": table}
        ):
            found.cascades.append(f"{schema}.{child}.{columns} (ON DELETE {action}, {name})")
    elif conn.execute(text("SELECT foreign_keys FROM pragma_foreign_keys")).scalar():
        for child, column, action in conn.execute(text(_SQLITE_CASCADES), {"t": table}):
            found.cascades.append(f"{child}.{column} (ON DELETE {action})")
    found.fires.extend(_fires(conn, table, "DELETE"))
    if archive_table:
        archived = f" on {archive_table}, as rows are archived"
        found.fires.extend(
            f.replace(" (", f"{archived} (", 1) if " (" in f else f + archived
            for f in _fires(conn, archive_table, "INSERT")
        )
    return found


def _fires(conn: Connection, table: str, event: str) -> list[str]:
    """The triggers (and PostgreSQL rules) that run on `event` of `table`."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        bit, ev = _PG_EVENTS[event]
        rows = conn.execute(text(_PG_FIRES), {"t": table, "bit": bit, "ev": ev})
        return [str(r[0]) for r in rows]
    if dialect in ("mysql", "mariadb"):
        rows = conn.execute(text(_MYSQL_FIRES), {"t": table, "event": event})
        return [f"trigger {name} ({timing} {event})" for name, timing in rows]
    return [
        f"trigger {name}"
        for name, sql in conn.execute(text(_SQLITE_FIRES), {"t": table})
        if _SQLITE_EVENTS[event].search(_BODY.split(sql or "", maxsplit=1)[0])
    ]
