"""What a purge's batch sets off beyond its own rows, held to what the step was judged
with. The tables it writes: the purged table, the archive table its rows are copied
into, on PostgreSQL their partitions and (but for the copy) inheriting tables, and the
tables whose foreign keys act when rows go (ON DELETE CASCADE, SET NULL, SET DEFAULT),
followed through the keys that act on those in turn, and the tables the bodies of the
triggers, rules and routines those writes run write (bodywrites.py: found when the step
is prepared, as its estimate finds them, each looked up by name again every batch), and
theirs in turn. On each, what the write runs: the triggers of its event and the
functions and routines they call (their bodies too: a function replaced keeps its name),
and on PostgreSQL the event's rules, row security and policies, and for an INSERT or
UPDATE (the archive's copy, a SET NULL) its defaults, checks, columns' types and index
expressions. InnoDB's key actions fire no trigger, and SQLite's aishell sessions act on
no key (every key that references the table is named, and what it would write is not
followed).

The step's approval (or the policy's judgement that it needs none) was given for these
as they were when the step was prepared: read then (read_reach), with the estimate the
policy weighs. Every batch reads them again in its own transaction, after its DELETE
and before its COMMIT (changed_since), one catalog query (on MySQL, for a cutoff the
session's time zone reads, with that zone as one row more: batches.py holds the batch to
it): then the answer is exact. On PostgreSQL and MariaDB the DDL that adds a trigger or
a foreign key, or replaces a routine a trigger ran, waits for the locks the batch
holds, or committed before it and is seen; on SQLite nothing changes the schema while
the batch holds the write lock, and its schema version, unchanged, answers alone. A
batch that finds them changed is rolled back (batches.py) and the step ends, resumably:
the resume judges the step again.

A function's calls are not in any catalog: a routine counts as called where its name is
a word of the caller's body (a name a body builds at run time, as dynamic SQL may, is
not seen).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.guard.bodysources import PG_EVENTS, PG_FUNCTION_TEXT, PG_NAMED_IN
from aishell.guard.sqlitetriggers import (
    EVENTS,
    SQLITE_SCHEMA_VERSION,
    SQLITE_TRIGGERS,
    trigger_events,
)
from aishell.guard.writereach import Reach, follow_writes
from aishell.guard.writtentables import Write, written
from aishell.handlers.purge.cutoff import ZONE_COLUMNS, zone_named
from aishell.sqltext import display, text
from aishell.targets.identity import mysql_instant

# A catalog read per row of the few the query found, by the catalog's index: the
# planner, which cannot know how few a recursive query finds, would otherwise read the
# whole catalog table (OFFSET 0 keeps the subquery as it is written).
_BY_KEY = "OFFSET 0"
# What a function does: its body and the settings it runs with.
_PG_BODY = (
    f"pg_catalog.md5(coalesce({PG_FUNCTION_TEXT}, '') || coalesce(CAST({{f}}.proconfig AS "
    "pg_catalog.text), '') || CAST({f}.prosecdef AS pg_catalog.text))"
)
# The tables a batch writes, each with the event it sets off there (the tgtype bit: 8
# DELETE, 4 INSERT, 16 UPDATE): the table, the archive table, their partitions and (but
# for an INSERT) inheriting tables, and the tables the keys that act on them write in
# turn (ON DELETE CASCADE deletes, SET NULL and SET DEFAULT update, and an update's
# ON UPDATE actions go on from there). Tables go in as their quoted names, bound.
_PG_WRITTEN = (
    "WITH RECURSIVE aishell_written(oid, ev) AS (SELECT CAST(CAST(:relation AS "
    "pg_catalog.regclass) AS pg_catalog.oid), 8 "
    "UNION SELECT CAST(CAST(CAST(:archive AS pg_catalog.text) AS pg_catalog.regclass) AS "
    "pg_catalog.oid), 4 WHERE CAST(:archive AS pg_catalog.text) IS NOT NULL "
    # And the tables the bodies of the code they set off write, as found when the step
    # was prepared (bodies, as JSON: schema, table, event's bit): found by name now.
    "UNION SELECT o.oid, e.ev FROM pg_catalog.json_to_recordset(CAST(:bodies AS "
    "pg_catalog.json)) AS e(s pg_catalog.text, t pg_catalog.text, ev pg_catalog.int4) "
    "CROSS JOIN LATERAL (SELECT CAST(pg_catalog.to_regclass(coalesce(pg_catalog.quote_ident("
    "e.s) || '.', '') || pg_catalog.quote_ident(e.t)) AS pg_catalog.oid)) o(oid) "
    "WHERE o.oid IS NOT NULL "
    "UNION SELECT x.oid, x.ev FROM aishell_written w CROSS JOIN LATERAL ("
    "SELECT i.inhrelid, w.ev FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class k "
    "ON k.oid = i.inhrelid WHERE i.inhparent = w.oid AND (w.ev <> 4 OR k.relispartition) "
    "UNION ALL SELECT k.conrelid, CASE WHEN w.ev = 8 AND k.confdeltype = 'c' THEN 8 "
    "ELSE 16 END FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' "
    "AND k.confrelid = w.oid AND CASE w.ev WHEN 8 THEN k.confdeltype WHEN 16 THEN "
    "k.confupdtype END IN ('c', 'n', 'd')) x(oid, ev)), "
    "aishell_trigger AS (SELECT DISTINCT t.oid, t.tgname, t.tgrelid, t.tgenabled, t.tgfoid "
    "FROM pg_catalog.pg_trigger t JOIN aishell_written w ON t.tgrelid = w.oid "
    "WHERE NOT t.tgisinternal "
    "AND CAST(t.tgtype AS pg_catalog.int4) & w.ev <> 0), "
    # The functions each trigger runs: its own, and those whose names its body (and
    # theirs, in turn) holds as a word; pg_depend records no call a body makes. Each
    # with its body, read on the way: CREATE OR REPLACE keeps a function's oid and
    # changes what it does.
    "aishell_runs(trigger, fn, src, state) AS (SELECT t.oid, t.tgfoid, f.src, f.state "
    f"FROM aishell_trigger t CROSS JOIN LATERAL (SELECT {PG_FUNCTION_TEXT.format(f='f')}, "
    f"{_PG_BODY.format(f='f')} FROM pg_catalog.pg_proc f WHERE f.oid = t.tgfoid "
    f"{_BY_KEY}) f(src, state) "
    f"UNION SELECT r.trigger, p.oid, {PG_FUNCTION_TEXT.format(f='p')}, "
    f"{_PG_BODY.format(f='p')} "
    f"FROM aishell_runs r JOIN pg_catalog.pg_proc p ON {PG_NAMED_IN.format(src='r.src', p='p')} "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname <> ALL ('{pg_catalog,information_schema}')) "
)
# What each of them sets off. Each row: what it is, its name, and its state (compared,
# not shown).
_PG_REACH = (
    f"{_PG_WRITTEN}"
    "SELECT 'table', CAST(CAST(c.oid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(c.relrowsecurity AS pg_catalog.text) || CAST(c.relforcerowsecurity AS "
    "pg_catalog.text) FROM pg_catalog.pg_class c WHERE c.oid IN (SELECT oid FROM "
    "aishell_written) "
    "UNION ALL SELECT 'trigger', CAST(t.tgname AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(t.tgrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(t.tgenabled AS pg_catalog.text) || CAST(t.tgfoid AS pg_catalog.text) "
    "FROM aishell_trigger t "
    "UNION ALL SELECT 'function', CAST(CAST(r.fn AS pg_catalog.regprocedure) AS "
    "pg_catalog.text) || ' (run by trigger ' || CAST(t.tgname AS pg_catalog.text) || "
    "' on ' || CAST(CAST(t.tgrelid AS pg_catalog.regclass) AS pg_catalog.text) || ')', "
    "r.state FROM aishell_runs r JOIN aishell_trigger t ON t.oid = r.trigger "
    "UNION ALL SELECT 'rule', CAST(r.rulename AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(r.ev_class AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(r.ev_enabled AS pg_catalog.text) || CAST(r.is_instead AS pg_catalog.text) "
    "|| pg_catalog.md5(CAST(r.ev_action AS pg_catalog.text)) "
    "FROM pg_catalog.pg_rewrite r JOIN aishell_written w ON r.ev_class = w.oid "
    "AND r.ev_type = CASE w.ev WHEN 8 THEN '4' WHEN 4 THEN '3' WHEN 16 THEN '2' END "
    "UNION ALL SELECT 'policy', CAST(p.polname AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(p.polrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(p.polcmd AS pg_catalog.text) || CAST(p.polpermissive AS pg_catalog.text) "
    "|| pg_catalog.md5(coalesce(CAST(p.polqual AS pg_catalog.text), '') || "
    "coalesce(CAST(p.polwithcheck AS pg_catalog.text), '')) "
    "FROM pg_catalog.pg_policy p WHERE p.polrelid IN (SELECT oid FROM aishell_written) "
    "UNION ALL SELECT 'foreign key', CAST(k.conname AS pg_catalog.text) || ' of ' || "
    "CAST(CAST(k.conrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "CAST(k.confdeltype AS pg_catalog.text) || CAST(k.confupdtype AS pg_catalog.text) "
    "FROM pg_catalog.pg_constraint k JOIN aishell_written w ON k.confrelid = w.oid "
    "WHERE k.contype = 'f' AND CASE w.ev WHEN 8 THEN k.confdeltype WHEN 16 THEN "
    "k.confupdtype END IN ('c', 'n', 'd') "
    # What an INSERT or UPDATE of a table evaluates: its defaults, generated columns,
    # check constraints, columns' types (a domain's checks) and indexes' expressions.
    "UNION ALL SELECT 'default', CAST(CAST(d.adrelid AS pg_catalog.regclass) AS "
    "pg_catalog.text) || '.' || CAST(a.attname AS pg_catalog.text), "
    "pg_catalog.md5(CAST(d.adbin AS pg_catalog.text)) FROM pg_catalog.pg_attrdef d "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
    "WHERE d.adrelid IN (SELECT oid FROM aishell_written WHERE ev <> 8) "
    "UNION ALL SELECT 'check', CAST(k.conname AS pg_catalog.text) || ' on ' || "
    "CAST(CAST(k.conrelid AS pg_catalog.regclass) AS pg_catalog.text), "
    "pg_catalog.md5(CAST(k.conbin AS pg_catalog.text)) FROM pg_catalog.pg_constraint k "
    "WHERE k.contype = 'c' AND k.conrelid IN (SELECT oid FROM aishell_written WHERE ev <> 8) "
    "UNION ALL SELECT 'column', CAST(CAST(w.oid AS pg_catalog.regclass) AS "
    "pg_catalog.text) || '.' || a.name, a.state FROM aishell_written w "
    "CROSS JOIN LATERAL (SELECT CAST(a.attname AS pg_catalog.text), "
    "CAST(a.atttypid AS pg_catalog.text) FROM pg_catalog.pg_attribute a "
    f"WHERE a.attrelid = w.oid AND a.attnum > 0 AND NOT a.attisdropped {_BY_KEY}) "
    "a(name, state) WHERE w.ev <> 8 "
    "UNION ALL SELECT 'index', CAST(CAST(i.oid AS pg_catalog.regclass) AS "
    "pg_catalog.text) || ' on ' || CAST(CAST(w.oid AS pg_catalog.regclass) AS "
    "pg_catalog.text), i.state FROM aishell_written w CROSS JOIN LATERAL (SELECT "
    "i.indexrelid, pg_catalog.md5(coalesce(CAST(i.indexprs AS pg_catalog.text), '') "
    "|| coalesce(CAST(i.indpred AS pg_catalog.text), '') || CAST(i.indclass AS "
    f"pg_catalog.text)) FROM pg_catalog.pg_index i WHERE i.indrelid = w.oid {_BY_KEY}) "
    "i(oid, state) WHERE w.ev <> 8 "
    "ORDER BY 1, 2, 3"
)
# MySQL: the DELETE triggers of the table and the INSERT triggers of the archive table
# (InnoDB's foreign keys fire none).
_MYSQL_TRIGGERS = (
    "SELECT TRIGGER_NAME, EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, "
    "ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() "
    "AND EVENT_OBJECT_TABLE = :{table} AND EVENT_MANIPULATION = '{event}'"
)
# And the triggers of the tables the bodies of those write (bodywrites.py), one per
# table and event, all bound.
_MYSQL_BODY_TRIGGERS = (
    "SELECT TRIGGER_NAME, EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, "
    "ACTION_STATEMENT FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = coalesce(:bs{i}, DATABASE()) "
    "AND EVENT_OBJECT_TABLE = :bt{i} AND EVENT_MANIPULATION = :be{i}"
)
# And the stored routines each runs: those whose names its body holds (of its own
# database, or of one whose name it holds too, as a call names it), and theirs in
# turn, each with what it does. Each routine source: where, its key columns (schema,
# name, type), what it does, and whether its body is hidden from the role (then it may
# call any routine the role sees). The recursion holds the keys only: a text column
# would put its work table on disk.
# A routine's times are read as the instants they name (identity.mysql_instant): shown,
# they are in the session's time_zone, and the batches' sessions may read them in
# another zone than the one that judged the step (a reconnect, a resume).
_Routines = tuple[str, tuple[str, str, str], str, str]
_MYSQL_ROUTINES: _Routines = (
    "information_schema.ROUTINES",
    ("ROUTINE_SCHEMA", "ROUTINE_NAME", "ROUTINE_TYPE"),
    f"CONCAT_WS(' ', {mysql_instant('{r}.CREATED')}, {mysql_instant('{r}.LAST_ALTERED')}, "
    "{r}.SQL_MODE, {r}.SECURITY_TYPE, {r}.ROUTINE_DEFINITION)",
    "{r}.ROUTINE_DEFINITION IS NULL",
)
# MariaDB's information_schema.ROUTINES checks each routine's privileges as it reads it
# (some 2 ms for 200 routines); mysql.proc, where the role may read it, answers in a
# fraction of that. Its body is bytes: as text, a name is found in it whatever its case.
_MARIADB_ROUTINES: _Routines = (
    "mysql.proc",
    ("db", "name", "type"),
    f"CONVERT(CONCAT_WS(' ', {mysql_instant('{r}.created')}, {mysql_instant('{r}.modified')}, "
    "{r}.sql_mode, {r}.security_type, {r}.param_list, {r}.returns, {r}.body) USING utf8mb4)",
    "FALSE",
)
# The tables the keys that act write, and theirs in turn (D: deleted, U: updated).
# Each: the recursion, and a table a body deletes from or updates, as one more start of
# it (put before its first UNION).
_MYSQL_KEYS = (
    "aishell_written(s, t, ev) AS (SELECT CAST(DATABASE() AS CHAR(64)), "
    "CAST(:t AS CHAR(64)), 'D' UNION SELECT r.CONSTRAINT_SCHEMA, r.TABLE_NAME, "
    "IF(w.ev = 'D' AND r.DELETE_RULE = 'CASCADE', 'D', 'U') FROM aishell_written w "
    "JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.UNIQUE_CONSTRAINT_SCHEMA = w.s "
    "AND r.REFERENCED_TABLE_NAME = w.t WHERE IF(w.ev = 'D', r.DELETE_RULE, r.UPDATE_RULE) "
    "IN ('CASCADE', 'SET NULL', 'SET DEFAULT'))",
    " UNION SELECT CAST(coalesce(:bs{i}, DATABASE()) AS CHAR(64)), CAST(:bt{i} AS CHAR(64)), "
    "'{ev}'",
)
_MYSQL_KEY = (
    "SELECT 'foreign key', CONCAT(r.CONSTRAINT_NAME, ' of ', r.TABLE_NAME), "
    "CONCAT(r.DELETE_RULE, ' ', r.UPDATE_RULE) FROM aishell_written w "
    "JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.UNIQUE_CONSTRAINT_SCHEMA = w.s "
    "AND r.REFERENCED_TABLE_NAME = w.t WHERE IF(w.ev = 'D', r.DELETE_RULE, r.UPDATE_RULE) "
    "IN ('CASCADE', 'SET NULL', 'SET DEFAULT')"
)
# MariaDB reads REFERENTIAL_CONSTRAINTS by opening every table on the server; InnoDB's
# own dictionary of foreign keys answers without (it needs PROCESS, and names a table as
# its file: database/table, plain names only). TYPE: 1 ON DELETE CASCADE, 2 SET NULL,
# 4 ON UPDATE CASCADE, 8 SET NULL.
_MARIADB_MATCH = (
    "IF(@@lower_case_table_names = 0, BINARY f.REF_NAME = w.name, f.REF_NAME = w.name) "
    "AND f.TYPE & IF(w.ev = 'D', 3, 12) <> 0"
)
_MARIADB_KEYS = (
    "aishell_written(name, ev) AS (SELECT CAST(IF(@@lower_case_table_names = 0, "
    "CONCAT(DATABASE(), '/', :t), LOWER(CONCAT(DATABASE(), '/', :t))) AS CHAR(400)), 'D' "
    "UNION SELECT f.FOR_NAME, IF(w.ev = 'D' AND f.TYPE & 1, 'D', 'U') "
    "FROM aishell_written w JOIN information_schema.INNODB_SYS_FOREIGN f "
    f"ON {_MARIADB_MATCH})",
    " UNION SELECT CAST(IF(@@lower_case_table_names = 0, CONCAT(coalesce(:bs{i}, DATABASE()), "
    "'/', :bt{i}), LOWER(CONCAT(coalesce(:bs{i}, DATABASE()), '/', :bt{i}))) AS CHAR(400)), "
    "'{ev}'",
)
_MARIADB_KEY = (
    "SELECT 'foreign key', CONCAT(SUBSTRING_INDEX(f.ID, '/', -1), ' of ', "
    "SUBSTRING_INDEX(f.FOR_NAME, '/', -1)), CAST(f.TYPE & 15 AS CHAR) "
    "FROM aishell_written w JOIN information_schema.INNODB_SYS_FOREIGN f "
    f"ON {_MARIADB_MATCH}"
)


_Keys = tuple[str, str, str]
_ORDER = " ORDER BY 1, 2, 3"
# A purge whose cutoff the session's time zone reads (MariaDB's TIMESTAMP) reads that
# zone after each batch's DELETE: in the reach's own statement, as one row more (set
# apart from what the reach found), so that it costs the batch no round trip.
_ZONE_ROW = "session time zone"


def _mysql_reach(
    routines: _Routines | None, keys: _Keys, archive: str | None, bodies: list[Write]
) -> str:
    """The query that reads the reach on MySQL, from `routines` (see _MYSQL_ROUTINES;
    None: no routine, where no trigger runs one), `keys` (the tables the keys write,
    the keys, another start of them) and the tables the bodies write (bound as
    bs0/bt0/be0, ...: see _bound)."""
    triggers = _MYSQL_TRIGGERS.format(table="t", event="DELETE")
    if archive is not None:  # a lookup of no table would read every table's triggers
        triggers += " UNION ALL " + _MYSQL_TRIGGERS.format(table="a", event="INSERT")
    starts = ""
    for i, write in enumerate(bodies):
        if write.event in EVENTS:
            triggers += " UNION ALL " + _MYSQL_BODY_TRIGGERS.format(i=i)
        if write.event in ("DELETE", "UPDATE"):
            starts += keys[2].format(i=i, ev=write.event[0])
    first, union, rest = keys[0].partition(" UNION SELECT ")
    keys = (first + starts + union + rest, keys[1], keys[2])
    trigger = (
        "SELECT 'trigger', CONCAT(TRIGGER_NAME, ' on ', EVENT_OBJECT_TABLE), "
        "CONCAT(ACTION_TIMING, ' ', ACTION_STATEMENT) FROM aishell_trigger"
    )
    if routines is None:
        return (
            f"WITH RECURSIVE aishell_trigger AS ({triggers}), {keys[0]} {trigger} "
            f"UNION ALL {keys[1]}{_ORDER}"
        )
    where, (s, n, k), code, hidden = routines
    runs = (
        f"aishell_runs(trig, s, n, k) AS (SELECT t.TRIGGER_NAME, r.{s}, r.{n}, r.{k} "
        f"FROM aishell_trigger t JOIN {where} r ON LOCATE(r.{n}, t.ACTION_STATEMENT) > 0 "
        f"AND (r.{s} = t.EVENT_OBJECT_SCHEMA OR LOCATE(r.{s}, t.ACTION_STATEMENT) > 0) "
        f"UNION SELECT a.trig, r.{s}, r.{n}, r.{k} FROM aishell_runs a JOIN {where} c "
        f"ON c.{s} = a.s AND c.{n} = a.n AND c.{k} = a.k "
        f"JOIN {where} r ON LOCATE(r.{n}, {code.format(r='c')}) > 0 "
        f"AND (r.{s} = c.{s} OR LOCATE(r.{s}, {code.format(r='c')}) > 0) "
        f"OR {hidden.format(r='c')})"
    )
    run = (
        f"{trigger} UNION ALL SELECT 'routine', CONCAT(LOWER(a.k), ' ', a.s, '.', a.n, "
        f"' (run by trigger ', a.trig, ')'), MD5({code.format(r='r')}) FROM aishell_runs a "
        f"JOIN {where} r ON r.{s} = a.s AND r.{n} = a.n AND r.{k} = a.k"
    )
    return (
        f"WITH RECURSIVE aishell_trigger AS ({triggers}), {runs}, {keys[0]} {run} "
        f"UNION ALL {keys[1]}{_ORDER}"
    )


_FILE_NAME = re.compile(r"[A-Za-z0-9_]+")
# The DELETE triggers of the table, the INSERT triggers of the archive table (the event
# each must run on comes fourth), and the keys that reference the table, a column of a
# key one row.
_SQLITE_TRIGGERS = (
    "SELECT 'trigger', name || ' on ' || tbl_name, sql, {event} FROM "
    + SQLITE_TRIGGERS
    + " WHERE tbl_name = {table} COLLATE NOCASE UNION ALL "
)
_SQLITE_KEYS = (
    "SELECT 'foreign key', m.name || ' (' || f.id || ')', "
    "f.\"from\" || ' ' || coalesce(f.\"to\", '') || ' ' || f.on_delete, NULL "
    "FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND f.\"table\" = :t COLLATE NOCASE ORDER BY 1, 2, 3"
)
# Any change of SQLite's schema moves it on; unchanged, the reach is as it was.
_SQLITE_VERSION = SQLITE_SCHEMA_VERSION

Found = tuple[tuple[str, str, str], ...]


def _sqlite_reach(bodies: list[Write]) -> str:
    """The query that reads the reach on SQLite: the triggers of the table, the archive
    table and the tables the bodies write (see _bound), each with its event, and the
    keys."""
    triggers = _SQLITE_TRIGGERS.format(event="'DELETE'", table=":t")
    triggers += _SQLITE_TRIGGERS.format(event="'INSERT'", table=":a")
    for i, write in enumerate(bodies):
        if write.event in EVENTS:
            triggers += _SQLITE_TRIGGERS.format(event=f":be{i}", table=f":bt{i}")
    return triggers + _SQLITE_KEYS


def _bodies(conn: Connection, table_sql: str, archive_sql: str | None) -> list[Write]:
    """The tables the bodies of the code a batch sets off write (bodywrites.py), and
    those of the code writing them sets off in turn, as the step's estimate follows
    them: read when the step is prepared; each batch reads what they set off."""
    dialect = conn.dialect.name
    writes = list(written(f"DELETE FROM {display(table_sql)}", dialect))
    if archive_sql:
        writes += written(f"INSERT INTO {display(archive_sql)} SELECT 1", dialect)
    return list(dict.fromkeys(follow_writes(conn, writes, Reach()).by_bodies))


def _bound(bodies: list[Write]) -> dict[str, str | None]:
    """The bodies' tables as the queries bind them: bs0, bt0, be0 (schema, table,
    event) and so on."""
    values: dict[str, str | None] = {}
    for i, write in enumerate(bodies):
        values.update({f"bs{i}": write.schema, f"bt{i}": write.table, f"be{i}": write.event})
    return values


@dataclass(frozen=True)
class TableReach:
    """What a batch of the purge sets off, as read (`found`: what, its name, its state),
    the query that reads it again and its values, and SQLite's schema version at the
    reading."""

    sql: str
    values: dict[str, str | None]
    found: Found
    version: int | None = None
    # The session's time zone at the reading, where it was asked for (changed_since).
    zone: str | None = None


def read_reach(
    conn: Connection,
    table_sql: str,
    table: str,
    archive_sql: str | None = None,
    archive: str | None = None,
) -> TableReach:
    """What a batch's DELETE from the table (`table_sql`: its name quoted; `table`: as
    given), and its copy into the archive table if any (likewise), set off now."""
    dialect = family(conn.dialect.name)
    bodies = _bodies(conn, table_sql, archive_sql)
    if dialect == "postgresql":
        values = {
            "relation": display(table_sql),
            "archive": display(archive_sql) if archive_sql else None,
            "bodies": json.dumps(
                [{"s": w.schema, "t": w.table, "ev": PG_EVENTS[w.event][0]} for w in bodies]
            ),
        }
        return TableReach(_PG_REACH, values, _read(conn, _PG_REACH, values))
    values = {"t": table, "a": archive, **_bound(bodies)}
    if dialect == "sqlite":
        version = int(conn.execute(text(_SQLITE_VERSION)).scalar_one())
        sql = _sqlite_reach(bodies)
        return TableReach(sql, values, _read(conn, sql, values), version)
    tried: list[tuple[_Routines, _Keys]] = [
        (_MYSQL_ROUTINES, (_MYSQL_KEYS[0], _MYSQL_KEY, _MYSQL_KEYS[1]))
    ]
    if getattr(conn.dialect, "is_mariadb", False) and _in_file_names(conn, table, bodies):
        # The first the role may read: mysql.proc, InnoDB's dictionary (PROCESS).
        innodb = (_MARIADB_KEYS[0], _MARIADB_KEY, _MARIADB_KEYS[1])
        tried[:0] = [(_MARIADB_ROUTINES, innodb), (_MYSQL_ROUTINES, innodb)]
    for routines, keys in tried[:-1]:
        try:
            return _mysql_read(conn, routines, keys, values, bodies)
        except DBAPIError:
            conn.rollback()
    return _mysql_read(conn, *tried[-1], values, bodies)


def _mysql_read(
    conn: Connection,
    routines: _Routines,
    keys: _Keys,
    values: dict[str, str | None],
    bodies: list[Write],
) -> TableReach:
    sql = _mysql_reach(routines, keys, values["a"], bodies)
    found = _read(conn, sql, values)
    if not any(kind == "routine" for kind, _, _ in found):
        # No routine a trigger runs: the batches read none (the reading costs about a
        # millisecond a batch), and a trigger added, or a body changed to call one, is
        # a change all the same.
        sql = _mysql_reach(None, keys, values["a"], bodies)
    return TableReach(sql, values, found)


def changed_since(
    conn: Connection, start: TableReach, zone: bool = False
) -> tuple[TableReach, str | None]:
    """The reach now, read in the caller's transaction, and what changed since `start`
    (None: nothing); unchanged, SQLite's reach comes back with its schema version now,
    so that the next batch's first test is that version again. With `zone` (MySQL), the
    reach now holds the session's time zone too, read in the same statement."""
    version = None
    if start.version is not None:
        version = int(conn.execute(text(_SQLITE_VERSION)).scalar_one())
        if version == start.version:
            return start, None
    rows = _read(conn, _with_zone(start.sql) if zone else start.sql, start.values)
    found = tuple(r for r in rows if r[0] != _ZONE_ROW)
    read = next((zone_named(r[1], r[2]) for r in rows if r[0] == _ZONE_ROW), None)
    now = TableReach(start.sql, start.values, found, version, read)
    return now, _difference(start.found, now.found)


def _with_zone(sql: str) -> str:
    """MySQL's reach query with the session's time zone as one row more."""
    if not sql.endswith(_ORDER):
        raise ValueError("the session's time zone is read with MySQL's reach only")
    zone = f"SELECT '{_ZONE_ROW}', {ZONE_COLUMNS}"
    return f"{sql.removesuffix(_ORDER)} UNION ALL {zone}{_ORDER}"


def _in_file_names(conn: Connection, table: str, bodies: list[Write]) -> bool:
    """Whether InnoDB's dictionary names the table, and those the bodies write, as they
    are (no @-encoded characters)."""
    database = conn.execute(text("SELECT DATABASE()")).scalar()
    named = [w.table for w in bodies] + [w.schema for w in bodies if w.schema]
    return all(_FILE_NAME.fullmatch(name or "") for name in (table, database, *named))


def _read(conn: Connection, sql: str, values: dict[str, str | None]) -> Found:
    rows = list(conn.execute(text(sql), values))
    if conn.dialect.name == "sqlite":
        # A trigger on another event than the one the batch sets off there is no part
        # of what it sets off.
        rows = [r for r in rows if r[0] != "trigger" or r[3] in trigger_events(r[2])]
    return tuple((str(r[0]), str(r[1]), str(r[2])) for r in rows)


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
