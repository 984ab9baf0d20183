"""What a purge's DELETE sets off beyond its own rows, held to what the step was judged
with: the triggers on the purged table, on PostgreSQL its DELETE rules, row security
and policies, and its partitions and inheriting tables (and theirs), and the foreign keys
of other tables that act when its rows go (ON DELETE CASCADE, SET NULL, SET DEFAULT;
on SQLite, whose aishell sessions act on none, every key that references it).

The step's approval (or the policy's judgement that it needs none) was given for these
as they were when the step was prepared: read then (read_reach), with the estimate the
policy weighs. Every batch reads them again in its own transaction, after its DELETE
and before its COMMIT (changed_since), one small catalog query: then the answer is
exact. On PostgreSQL and MariaDB the DDL that adds a trigger or a foreign key waits
for the locks the batch's DELETE holds, or committed before it and is seen; on SQLite
nothing changes the schema while the batch holds the write lock, and its schema
version, unchanged, answers alone. A batch that finds them changed is rolled back
(batches.py) and the step ends, resumably: the resume judges the step again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.guard.sqlitetriggers import trigger_events
from aishell.sqltext import display, text

# The table and every table whose rows its DELETE reaches: its partitions and inheriting
# tables, and theirs. Each row: what it is, its name, and its state (compared, not
# shown). The table goes in as its quoted name, bound, read as a regclass.
_PG_REACH = (
    "WITH RECURSIVE aishell_family(oid) AS (SELECT CAST(CAST(:relation AS "
    "pg_catalog.regclass) AS pg_catalog.oid) UNION SELECT i.inhrelid FROM "
    "pg_catalog.pg_inherits i JOIN aishell_family f ON i.inhparent = f.oid) "
    "SELECT 'table', CAST(CAST(c.oid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(c.relrowsecurity AS pg_catalog.text) || CAST(c.relforcerowsecurity AS "
    "pg_catalog.text) FROM pg_catalog.pg_class c WHERE c.oid IN (SELECT oid FROM "
    "aishell_family) "
    "UNION ALL SELECT 'trigger', CAST(t.tgname AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(t.tgrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(t.tgenabled AS pg_catalog.text) || CAST(t.tgfoid AS pg_catalog.text) "
    # The function's body too: CREATE OR REPLACE keeps its oid and changes what it does.
    "|| pg_catalog.md5(coalesce(f.prosrc, '')) FROM pg_catalog.pg_trigger t "
    "LEFT JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid "
    "WHERE t.tgrelid IN (SELECT oid FROM aishell_family) "
    "AND NOT t.tgisinternal "
    "AND CAST(t.tgtype AS pg_catalog.int4) & CAST(8 AS pg_catalog.int4) <> 0 "
    "UNION ALL SELECT 'rule', CAST(r.rulename AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(r.ev_class AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(r.ev_enabled AS pg_catalog.text) || CAST(r.is_instead AS pg_catalog.text) "
    "FROM pg_catalog.pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM aishell_family) "
    "AND r.ev_type = '4' "
    "UNION ALL SELECT 'policy', CAST(p.polname AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(p.polrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(p.polcmd AS pg_catalog.text) || CAST(p.polpermissive AS pg_catalog.text) "
    "FROM pg_catalog.pg_policy p WHERE p.polrelid IN (SELECT oid FROM aishell_family) "
    "UNION ALL SELECT 'foreign key', CAST(k.conname AS pg_catalog.text) || ' of ' || "
    "CAST(CAST(k.conrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(k.confdeltype AS pg_catalog.text) FROM pg_catalog.pg_constraint k "
    "WHERE k.contype = 'f' AND k.confrelid IN (SELECT oid FROM aishell_family) "
    "AND k.confdeltype IN ('c', 'n', 'd') ORDER BY 1, 2, 3"
)
_MYSQL_TRIGGERS = (
    "SELECT 'trigger', TRIGGER_NAME, CONCAT(ACTION_TIMING, ' ', ACTION_STATEMENT) "
    "FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() "
    "AND EVENT_OBJECT_TABLE = :t AND EVENT_MANIPULATION = 'DELETE'"
)
_MYSQL_REACH = (
    f"{_MYSQL_TRIGGERS} UNION ALL SELECT 'foreign key', CONCAT(CONSTRAINT_NAME, ' of ', "
    "TABLE_NAME), DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS "
    "WHERE UNIQUE_CONSTRAINT_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME = :t "
    "AND DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') ORDER BY 1, 2, 3"
)
# MariaDB reads REFERENTIAL_CONSTRAINTS by opening every table on the server; InnoDB's
# own dictionary of foreign keys answers without (it needs PROCESS, and names a table as
# its file: database/table, plain names only). TYPE: 1 ON DELETE CASCADE, 2 SET NULL.
_MARIADB_REACH = (
    f"{_MYSQL_TRIGGERS} UNION ALL SELECT 'foreign key', CONCAT(SUBSTRING_INDEX(f.ID, "
    "'/', -1), ' of ', SUBSTRING_INDEX(f.FOR_NAME, '/', -1)), CAST(f.TYPE & 3 AS CHAR) "
    "FROM information_schema.INNODB_SYS_FOREIGN f "
    "WHERE IF(@@lower_case_table_names = 0, "
    "BINARY f.REF_NAME = CONCAT(DATABASE(), '/', :t), "
    "f.REF_NAME = LOWER(CONCAT(DATABASE(), '/', :t))) AND f.TYPE & 3 <> 0 "
    "ORDER BY 1, 2, 3"
)
_FILE_NAME = re.compile(r"[A-Za-z0-9_]+")
# A column of a key that references the table is one row.
_SQLITE_REACH = (
    "SELECT 'trigger', name, sql FROM sqlite_master WHERE type = 'trigger' "
    "AND tbl_name = :t COLLATE NOCASE "
    "UNION ALL SELECT 'foreign key', m.name || ' (' || f.id || ')', "
    "f.\"from\" || ' ' || coalesce(f.\"to\", '') || ' ' || f.on_delete "
    "FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND f.\"table\" = :t COLLATE NOCASE ORDER BY 1, 2, 3"
)
# Any change of SQLite's schema moves it on; unchanged, the reach is as it was.
_SQLITE_VERSION = "SELECT schema_version FROM pragma_schema_version"

Found = tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class TableReach:
    """What a DELETE from the table sets off, as read (`found`: what, its name, its
    state), the query that reads it again and its values, and SQLite's schema version
    at the reading."""

    sql: str
    values: dict[str, str]
    found: Found
    version: int | None = None


def read_reach(conn: Connection, table_sql: str, table: str) -> TableReach:
    """What a DELETE from the table (`table_sql`: its name quoted; `table`: as given)
    sets off now."""
    dialect = family(conn.dialect.name)
    if dialect == "postgresql":
        values = {"relation": display(table_sql)}
        return TableReach(_PG_REACH, values, _read(conn, _PG_REACH, values))
    values = {"t": table}
    if dialect == "sqlite":
        version = int(conn.execute(text(_SQLITE_VERSION)).scalar_one())
        return TableReach(_SQLITE_REACH, values, _read(conn, _SQLITE_REACH, values), version)
    if getattr(conn.dialect, "is_mariadb", False) and _in_file_names(conn, table):
        try:
            return TableReach(_MARIADB_REACH, values, _read(conn, _MARIADB_REACH, values))
        except DBAPIError:
            conn.rollback()  # no PROCESS privilege: the catalog's view
    return TableReach(_MYSQL_REACH, values, _read(conn, _MYSQL_REACH, values))


def changed_since(conn: Connection, start: TableReach) -> tuple[TableReach, str | None]:
    """The reach now, read in the caller's transaction, and what changed since `start`
    (None: nothing); unchanged, SQLite's reach comes back with its schema version now,
    so that the next batch's first test is that version again."""
    version = None
    if start.version is not None:
        version = int(conn.execute(text(_SQLITE_VERSION)).scalar_one())
        if version == start.version:
            return start, None
    now = TableReach(start.sql, start.values, _read(conn, start.sql, start.values), version)
    return now, _difference(start.found, now.found)


def _in_file_names(conn: Connection, table: str) -> bool:
    """Whether InnoDB's dictionary names the table as it is (no @-encoded characters)."""
    database = conn.execute(text("SELECT DATABASE()")).scalar()
    return all(_FILE_NAME.fullmatch(name or "") for name in (table, database))


def _read(conn: Connection, sql: str, values: dict[str, str]) -> Found:
    rows = [
        (str(kind), str(name), str(state)) for kind, name, state in conn.execute(text(sql), values)
    ]
    if conn.dialect.name == "sqlite":
        # A trigger on another event is no part of what the DELETE sets off.
        rows = [r for r in rows if r[0] != "trigger" or "DELETE" in trigger_events(r[2])]
    return tuple(rows)


def _difference(then: Found, now: Found) -> str | None:
    """What changed, as a person reads it: added, removed, changed (at most a few named)."""
    before = {(kind, name): state for kind, name, state in then}
    after = {(kind, name): state for kind, name, state in now}
    said = [f"added {k} {n}" for k, n in after if (k, n) not in before]
    said += [f"removed {k} {n}" for k, n in before if (k, n) not in after]
    said += [f"changed {k} {n}" for (k, n), s in after.items() if before.get((k, n), s) != s]
    if not said:
        return None
    return ", ".join(said[:3]) + (f" and {len(said) - 3} more" if len(said) > 3 else "")
