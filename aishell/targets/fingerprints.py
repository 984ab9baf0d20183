"""What a step acts on, as facts an approval is given for: which table each name reaches
now, and the code the server may run on those tables' behalf.

A name is not a table: `ALTER TABLE logs RENAME TO logs_old; ALTER TABLE invoices
RENAME TO logs` keeps the name and changes what a purge of `logs` deletes. Each table's
identity is what such a swap (or a drop and create) changes: PostgreSQL's oid, InnoDB's
table id (a rebuild makes a new one too; then the step is asked about again, the safe
side), else MariaDB's creation time, SQLite's root page with its row in the schema.
PostgreSQL's lists after the table's own oid those of the partitions and inheriting
tables a statement on it reaches: one attached since is a table no one approved. Code is
fingerprinted by its definition: the triggers, rules and row policies of every table of
the database (a trigger writes to other tables, whose own triggers then run), and every
user-defined routine of the database (a trigger's function may call any of them) with,
on PostgreSQL, the aggregates, operators and casts that call routines, and on MariaDB
the routines of other databases its triggers and routines name, each as a short digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.sqltext import text
from aishell.targets.identity import _innodb_file_name, _innodb_table_ids, mysql_instant

# More routines (or triggers, rules and policies) than this are kept as one digest of
# them all: a change is still seen, though not named.
MAX_NAMED_ROUTINES = 200

# Each named table with every table a statement on it reaches: its partitions and the
# tables inheriting from it, at any depth (a DELETE on the parent deletes their rows).
_PG_TREE = (
    "WITH RECURSIVE tree(name, oid) AS (SELECT c.relname, c.oid FROM pg_catalog.pg_class c "
    "WHERE c.relname IN :names AND c.relnamespace = "
    "pg_catalog.to_regnamespace(pg_catalog.current_schema())::oid "
    "UNION SELECT tree.name, i.inhrelid FROM pg_catalog.pg_inherits i "
    "JOIN tree ON i.inhparent = tree.oid) "
)
_PG_TABLES = (
    _PG_TREE + "SELECT tree.name AS name, pg_catalog.string_agg(tree.oid::text, ' ' "
    "ORDER BY tree.oid = c.oid DESC, tree.oid) AS id FROM tree JOIN pg_catalog.pg_class c "
    "ON c.relname = tree.name AND c.relnamespace = "
    "pg_catalog.to_regnamespace(pg_catalog.current_schema())::oid GROUP BY tree.name"
)
# Each user-defined object of the schema's code outside an extension: its routines by
# their definition; its aggregates, operators and casts by the functions they call (a
# trigger's `sum_of(x)`, `a %% b` or `x::money` runs what they name now).
_PG_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
    "'pg_catalog.{catalog}'::pg_catalog.regclass::pg_catalog.oid "
    "AND d.objid = {alias}.oid AND d.deptype = 'e')"
)
_PG_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_toast%'"
)
_PG_ROUTINES = (
    "SELECT p.oid::regprocedure::text AS name, pg_catalog.md5(pg_catalog.pg_get_functiondef("
    "p.oid)) AS digest FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON "
    "n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p', 'w') AND "
    + _PG_USER_SCHEMA
    + " AND "
    + _PG_NOT_EXTENSION.format(catalog="pg_proc", alias="p")
    + " UNION ALL SELECT 'aggregate ' || p.oid::regprocedure::text, "
    "pg_catalog.md5(pg_catalog.concat_ws('/', a.aggkind, a.aggtransfn::oid::regprocedure, "
    "a.aggfinalfn::oid::regprocedure, "
    "a.aggcombinefn::oid::regprocedure, a.aggserialfn::oid::regprocedure, "
    "a.aggdeserialfn::oid::regprocedure, a.aggmtransfn::oid::regprocedure, "
    "a.aggminvtransfn::oid::regprocedure, a.aggmfinalfn::oid::regprocedure, "
    "a.aggtranstype::regtype, a.agginitval, a.aggmtranstype::regtype, a.aggminitval, "
    "a.aggfinalextra, a.aggfinalmodify, a.aggsortop::regoperator)) "
    "FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc p ON p.oid = a.aggfnoid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE "
    + _PG_USER_SCHEMA
    + " AND "
    + _PG_NOT_EXTENSION.format(catalog="pg_proc", alias="p")
    + " UNION ALL SELECT 'operator ' || o.oid::regoperator::text, "
    "pg_catalog.md5(pg_catalog.concat_ws('/', o.oprcode::oid::regprocedure, "
    "o.oprrest::oid::regprocedure, "
    "o.oprjoin::oid::regprocedure, o.oprresult::regtype)) FROM pg_catalog.pg_operator o "
    "JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace WHERE "
    + _PG_USER_SCHEMA
    + " AND "
    + _PG_NOT_EXTENSION.format(catalog="pg_operator", alias="o")
    # A cast has no schema: a user's is one made after initdb (its oid past the last
    # of the system's) outside an extension.
    + " UNION ALL SELECT 'cast ' || pg_catalog.format_type(c.castsource, NULL) || ' as ' "
    "|| pg_catalog.format_type(c.casttarget, NULL), pg_catalog.md5(pg_catalog.concat_ws('/', "
    "c.castfunc::regprocedure, c.castcontext, c.castmethod)) FROM pg_catalog.pg_cast c "
    "WHERE c.oid >= '16384'::pg_catalog.oid AND "
    + _PG_NOT_EXTENSION.format(catalog="pg_cast", alias="c")
)
# The code of every table of the database, not only of those a step names: a row deleted
# through the parent fires its partition's triggers, and a trigger's function writes to
# other tables, whose own triggers, rules and policies then run (at any depth).
_PG_USER_TABLE = (
    "{rel} IN (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE " + _PG_USER_SCHEMA + ")"
)
_PG_TABLE_CODE = (
    "SELECT 'trigger ' || t.tgname::pg_catalog.text || ' on ' "
    "|| t.tgrelid::pg_catalog.regclass::pg_catalog.text AS name, pg_catalog.md5("
    "pg_catalog.pg_get_triggerdef(t.oid) || t.tgenabled::text) AS digest FROM "
    "pg_catalog.pg_trigger t WHERE NOT t.tgisinternal AND "
    + _PG_USER_TABLE.format(rel="t.tgrelid")
    + " UNION ALL SELECT 'rule ' || w.rulename::pg_catalog.text || ' on ' "
    "|| w.ev_class::pg_catalog.regclass::pg_catalog.text, pg_catalog.md5("
    "pg_catalog.pg_get_ruledef(w.oid)) FROM pg_catalog.pg_rewrite w "
    "WHERE w.rulename <> '_RETURN'::pg_catalog.name AND "
    + _PG_USER_TABLE.format(rel="w.ev_class")
    + " UNION ALL SELECT 'policy ' || p.polname::pg_catalog.text || ' on ' "
    "|| p.polrelid::pg_catalog.regclass::pg_catalog.text, pg_catalog.md5("
    "coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') || '/' || "
    "coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '') || "
    "p.polcmd::pg_catalog.text || p.polpermissive::pg_catalog.text || "
    "p.polroles::pg_catalog.text) FROM pg_catalog.pg_policy p"
)
# MariaDB's times are read as instants (identity.mysql_instant): the session's time_zone
# changes how the server shows them, not which table or routine they tell.
_MYSQL_CREATED = (
    f"SELECT TABLE_NAME AS name, coalesce({mysql_instant('CREATE_TIME')}, '') AS id "
    "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names"
)
_MYSQL_ROUTINES = (
    "SELECT concat(ROUTINE_TYPE, ' ', ROUTINE_NAME) AS name, md5(concat_ws('/', "
    f"ROUTINE_DEFINITION, {mysql_instant('CREATED')}, {mysql_instant('LAST_ALTERED')}, "
    "SQL_MODE, SECURITY_TYPE, DEFINER)) AS digest "
    "FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
)
# A routine of another database that this database's triggers or routines name
# (`other_db.fn(...)`): replaced there, it changes what they run. Found by its two names
# in their text, loosely (a routine named in a comment counts too: the safe side).
_MYSQL_CALLED_ELSEWHERE = (
    "SELECT concat(r.ROUTINE_TYPE, ' ', r.ROUTINE_SCHEMA, '.', r.ROUTINE_NAME) AS name, "
    f"md5(concat_ws('/', r.ROUTINE_DEFINITION, {mysql_instant('r.CREATED')}, "
    f"{mysql_instant('r.LAST_ALTERED')}, r.SQL_MODE, r.SECURITY_TYPE, r.DEFINER)) AS digest "
    "FROM information_schema.ROUTINES r "
    "WHERE r.ROUTINE_SCHEMA <> DATABASE() AND (EXISTS (SELECT 1 FROM "
    "information_schema.TRIGGERS t WHERE t.TRIGGER_SCHEMA = DATABASE() AND "
    "locate(lower(r.ROUTINE_SCHEMA), lower(t.ACTION_STATEMENT)) > 0 AND "
    "locate(lower(r.ROUTINE_NAME), lower(t.ACTION_STATEMENT)) > 0) OR EXISTS (SELECT 1 "
    "FROM information_schema.ROUTINES o WHERE o.ROUTINE_SCHEMA = DATABASE() AND "
    "locate(lower(r.ROUTINE_SCHEMA), lower(o.ROUTINE_DEFINITION)) > 0 AND "
    "locate(lower(r.ROUTINE_NAME), lower(o.ROUTINE_DEFINITION)) > 0))"
)
_MYSQL_TABLE_CODE = (
    "SELECT concat('trigger ', TRIGGER_NAME, ' on ', EVENT_OBJECT_TABLE) AS name, md5(concat_ws("
    f"'/', ACTION_STATEMENT, ACTION_TIMING, EVENT_MANIPULATION, {mysql_instant('CREATED')}, "
    "SQL_MODE, DEFINER)) "
    "AS digest FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
)
# A table dropped and created again often gets the root page it had (SQLite reuses the
# freed page); its row in the schema is a new one unless the table and its indexes were
# the schema's newest rows (SQLite gives a new row the number after the largest). Both
# together tell a table from one made again in its place, short of that case.
_SQLITE_TABLES = (
    "SELECT name, 'root ' || rootpage || ' row ' || rowid AS id FROM sqlite_schema "
    "WHERE type = 'table' AND name IN :names"
)
_SQLITE_TABLE_CODE = (
    "SELECT 'trigger ' || name || ' on ' || tbl_name AS name, sql AS digest FROM sqlite_schema "
    "WHERE type = 'trigger'"
)


def table_identities(conn: Connection, tables: Iterable[str]) -> dict[str, str]:
    """Each named table's identity now; a name that reaches no table is left out."""
    names = sorted(set(tables))
    if not names:
        return {}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _rows(conn, _PG_TABLES, names)
    if family(dialect) == "mysql":
        return _mysql_identities(conn, names)
    return _rows(conn, _SQLITE_TABLES, names)


def reaches_others(then: Any, now: Any) -> bool:
    """Two identities of one table whose reach differs (PostgreSQL: the table's own oid
    first, then those of the partitions and inheriting tables a statement reaches)."""
    if not isinstance(then, str) or not isinstance(now, str) or then == now:
        return False
    first = then.split()[:1]
    return bool(first) and first[0].isdigit() and first == now.split()[:1]


def identity_change(then: Any, now: Any, when: str) -> str:
    """How a table whose identity changed from `then` to `now` differs, in words that
    follow its name; `when` says since what ("it was approved", "the plan was made")."""
    if reaches_others(then, now):
        return (
            f"reaches other tables than when {when} (a partition or an inheriting table "
            "attached, detached or replaced since)"
        )
    return (
        f"is not the table {when} for (dropped and created again, rebuilt, or another "
        "renamed to its name since)"
    )


def code_digests(conn: Connection) -> dict[str, str]:
    """The code that may run when a step writes or reads tables: the triggers of every
    table of the database (and PostgreSQL's rules and row policies), not only of those
    the step names (a trigger of one writes others, whose own run for those rows), and
    the database's own routines, each by a digest of its definition (each kind as one
    digest past MAX_NAMED_ROUTINES)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        on_tables, routines = _PG_TABLE_CODE, _PG_ROUTINES
    elif family(dialect) == "mysql":
        on_tables, routines = _MYSQL_TABLE_CODE, _MYSQL_ROUTINES
    else:
        on_tables, routines = _SQLITE_TABLE_CODE, None
    found = _at_most(_digested(_rows(conn, on_tables, None)), "triggers, rules and policies")
    if routines is not None:
        found.update(_at_most(_digested(_rows(conn, routines, None)), "routines"))
    if family(dialect) == "mysql":
        found.update(_digested(_rows(conn, _MYSQL_CALLED_ELSEWHERE, None)))
    return found


def _at_most(found: dict[str, str], kind: str) -> dict[str, str]:
    """Each piece by name, or past MAX_NAMED_ROUTINES all as one digest: a change is
    still seen, though not named."""
    if len(found) <= MAX_NAMED_ROUTINES:
        return found
    joined = "\n".join(f"{k}={v}" for k, v in sorted(found.items()))
    return {f"{len(found)} {kind}": _digest(joined)}


def _mysql_identities(conn: Connection, names: list[str]) -> dict[str, str]:
    """InnoDB's table ids (a partitioned table's, of each partition) where this login may
    read them (PROCESS), else the creation time (identity.py reads both the same way)."""
    ids = _innodb_table_ids(conn) or {}
    found = {}
    for name, created in _rows(conn, _MYSQL_CREATED, names).items():
        table_ids = ids.get(_innodb_file_name(name))
        found[name] = f"innodb {table_ids}" if table_ids else f"created {created}"
    return found


def _rows(conn: Connection, sql: str, names: list[str] | None) -> dict[str, str]:
    """name -> id or digest, of a statement whose rows are (name, id) or (name, digest)."""
    statement = text(sql)
    if names is None:
        return {str(name): str(value) for name, value in conn.execute(statement)}
    expanded = statement.bindparams(bindparam("names", expanding=True))
    return {str(name): str(value) for name, value in conn.execute(expanded, {"names": names})}


def _digested(found: dict[str, str]) -> dict[str, str]:
    return {name: _digest(value) for name, value in found.items()}


def _digest(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]
