"""What an archive table may hold: only plain stored columns of the purged table's
types, so that copying rows into it runs no code of the database's own.

A purge inserts every row it deletes into the archive table. An INSERT runs the
table's triggers and rules, computes its generated columns, evaluates its defaults,
check and domain constraints and row-security policies: a function behind any of
them runs once per archived row, and may write to any table (it did: 50 rows of
another table went during a purge). So the archive table is refused, with one line
naming each thing that would run, unless it has none: no generated column, no default
but a plain constant, no trigger or rule, no check or domain constraint, nor index (its
expressions, predicate or operator class: an INSERT evaluates them), that calls a
user-defined function (or one of the catalog's that runs SQL it is given, reaches beyond
its session or changes server state: pg_depend records none of those), no row security,
and each column of the purged table's type (SQLite: of its type affinity; MariaDB: of
its character set and collation too, taking NULL where it does, since a server whose
sql_mode is not strict stores what a column cannot hold as something else).

And each table a batch writes keeps what it wrote only when the batch commits
(check_durable): on MariaDB a purged or archive table whose engine keeps no
transactions (MyISAM, Aria, MEMORY) is refused, and so is a system-versioned purged
table (its DELETE keeps every row as history), since a rolled-back batch's DELETE or
copy would stand there; on PostgreSQL an unlogged or temporary archive table, which a
server crash empties after the purge deleted what it held. An unlogged purged table is
purged: the rows a crash empties it of were not the purge's to keep.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import TargetError
from aishell.guard.lex import code_only
from aishell.guard.pgcode import (
    PG_OWN_CODE_PARAMETER,
    pg_catalog_relation,
    pg_extension_code,
    pg_tree_calls,
    pg_user_code,
)
from aishell.sqltext import text

_PG_REL = (
    "(SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relname = :{name} "
    "AND n.nspname = pg_catalog.current_schema())"
)


# What such a check, domain or index calls, as said.
_CODE = "a user-defined function or server code of its own"


def _pg_calls_user_code(classid: str, objid: str, tree: str) -> str:
    """SQL: whether the object (classid, objid) calls code the catalog cannot vouch for
    (pgcode.pg_user_code): by name or through an operator, as pg_depend records it, or
    one of the catalog's own, which only its node tree `tree` shows."""
    return (
        "EXISTS (SELECT 1 FROM (SELECT CASE WHEN d.refclassid = "
        f"{pg_catalog_relation('pg_proc')} THEN d.refobjid ELSE o.oprcode::pg_catalog.oid "
        "END AS fn FROM pg_catalog.pg_depend d LEFT JOIN pg_catalog.pg_operator o "
        f"ON d.refclassid = {pg_catalog_relation('pg_operator')} AND o.oid = d.refobjid "
        f"WHERE d.classid = {pg_catalog_relation(classid)} AND d.objid = {objid} "
        f"UNION ALL SELECT c.fn FROM {pg_tree_calls(tree)} c) x "
        "JOIN pg_catalog.pg_proc p ON p.oid = x.fn "
        "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace "
        f"WHERE {pg_user_code('p', 'pn')})"
    )


_PG_PROBLEMS = (
    f"WITH RECURSIVE arc AS (SELECT {_PG_REL.format(name='a')} AS oid), "
    f"src AS (SELECT {_PG_REL.format(name='t')} AS oid), "
    "cols AS (SELECT a.* FROM pg_catalog.pg_attribute a JOIN arc ON a.attrelid = arc.oid "
    "WHERE a.attnum > 0 AND NOT a.attisdropped), "
    "domains(col, typ) AS (SELECT c.attname, c.atttypid FROM cols c "
    "JOIN pg_catalog.pg_type t ON t.oid = c.atttypid WHERE t.typtype = 'd' "
    "UNION SELECT d.col, t.typbasetype FROM domains d JOIN pg_catalog.pg_type t "
    "ON t.oid = d.typ WHERE t.typtype = 'd') "
    "SELECT 'kind', NULL, k.relkind::text FROM arc JOIN pg_catalog.pg_class k "
    "ON k.oid = arc.oid WHERE k.relkind <> 'r' "
    "UNION ALL SELECT 'row security', NULL, NULL FROM arc JOIN pg_catalog.pg_class k "
    "ON k.oid = arc.oid WHERE k.relrowsecurity "
    "UNION ALL SELECT CASE WHEN c.attgenerated <> '' THEN 'generated' ELSE 'default' END, "
    "c.attname::text, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) FROM cols c "
    "JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = c.attrelid AND ad.adnum = c.attnum "
    "WHERE c.attgenerated <> '' OR (ad.adbin::text NOT LIKE '{CONST %' "
    "AND ad.adbin::text NOT LIKE '{SQLVALUEFUNCTION %') "
    "UNION ALL SELECT 'trigger', t.tgname::text, t.tgfoid::pg_catalog.regproc::text "
    "FROM pg_catalog.pg_trigger t JOIN arc ON t.tgrelid = arc.oid WHERE NOT t.tgisinternal "
    "UNION ALL SELECT 'rule', r.rulename::text, NULL FROM pg_catalog.pg_rewrite r "
    "JOIN arc ON r.ev_class = arc.oid WHERE r.rulename <> '_RETURN' "
    "UNION ALL SELECT 'check', k.conname::text, pg_catalog.pg_get_constraintdef(k.oid) "
    "FROM pg_catalog.pg_constraint k JOIN arc ON k.conrelid = arc.oid WHERE k.contype = 'c' "
    "AND " + _pg_calls_user_code("pg_constraint", "k.oid", "k.conbin::text") + " "
    "UNION ALL SELECT DISTINCT 'domain', d.col::text, d.typ::pg_catalog.regtype::text "
    "FROM domains d JOIN pg_catalog.pg_constraint k ON k.contypid = d.typ WHERE "
    + _pg_calls_user_code("pg_constraint", "k.oid", "k.conbin::text")
    + " UNION ALL SELECT 'index', i.indexrelid::pg_catalog.regclass::text, "
    "pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i JOIN arc "
    "ON i.indrelid = arc.oid WHERE "
    + _pg_calls_user_code(
        "pg_class",
        "i.indexrelid",
        "COALESCE(i.indexprs::text, '') || COALESCE(i.indpred::text, '')",
    )
    + " OR EXISTS (SELECT 1 FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_namespace "
    "ocn ON ocn.oid = oc.opcnamespace WHERE oc.oid = ANY (i.indclass::pg_catalog.oid[]) "
    "AND ocn.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT "
    + pg_extension_code("oc", "opcowner", "pg_opclass")
    + ")"
    " UNION ALL SELECT 'type', c.attname::text, pg_catalog.format_type(c.atttypid, "
    "c.atttypmod) || ', not ' || pg_catalog.format_type(s.atttypid, s.atttypmod) FROM ("
    "SELECT c.*, pg_catalog.row_number() OVER (ORDER BY c.attnum) AS i FROM cols c) c JOIN ("
    "SELECT a.*, pg_catalog.row_number() OVER (ORDER BY a.attnum) AS i "
    "FROM pg_catalog.pg_attribute a "
    "JOIN src ON a.attrelid = src.oid WHERE a.attnum > 0 AND NOT a.attisdropped) s "
    "ON s.i = c.i WHERE (c.atttypid, c.atttypmod) <> (s.atttypid, s.atttypmod) ORDER BY 1, 2"
)
# Separate plain queries: MariaDB 10.11 crashed (signal 11, in the temporary table of
# a UNION) on one UNION ALL of these information_schema tables.
_MYSQL_KIND = (
    "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME = :a"
)
# With each column's character set, collation and nullability: a server whose sql_mode
# is not strict stores what an archive column cannot hold as something else ('漢字' into
# latin1 as '??', NULL into NOT NULL as ''), where COLUMN_TYPE is the same.
_MYSQL_COLUMNS = (
    "SELECT TABLE_NAME = :a, COLUMN_NAME, IS_GENERATED, GENERATION_EXPRESSION, "
    "COLUMN_DEFAULT, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, IS_NULLABLE "
    "FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (:a, :t) ORDER BY ORDINAL_POSITION"
)
_MYSQL_TRIGGERS = (
    "SELECT TRIGGER_NAME, CONCAT(ACTION_TIMING, ' ', EVENT_MANIPULATION) "
    "FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() "
    "AND EVENT_OBJECT_TABLE = :a ORDER BY 1"
)
_MYSQL_CHECKS = (
    "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = :a ORDER BY 1"
)
_MYSQL_UDFS = "SELECT name FROM mysql.func"
# A default MariaDB shows as a literal: a quoted string, a number, NULL.
_CONSTANT = re.compile(r"'(?:[^']|'')*'|[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?|NULL", re.IGNORECASE)
_CALLED = re.compile(r"`?(\w+)`?\s*\(")
_CLOCK = re.compile(
    r"(?:CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME|LOCALTIMESTAMP|LOCALTIME|NOW)"
    r"(?:\(\d*\))?",
    re.IGNORECASE,
)
_SQLITE_PROBLEMS = (
    "SELECT 'kind', NULL, type FROM sqlite_master WHERE name = :a COLLATE NOCASE "
    "AND type NOT IN ('table', 'index', 'trigger') "
    "UNION ALL SELECT 'generated', name, NULL FROM pragma_table_xinfo(:a) WHERE hidden IN (2, 3) "
    "UNION ALL SELECT 'default', name, dflt_value FROM pragma_table_info(:a) "
    "WHERE dflt_value IS NOT NULL "
    "UNION ALL SELECT 'trigger', name, NULL FROM sqlite_master WHERE type = 'trigger' "
    "AND tbl_name = :a COLLATE NOCASE ORDER BY 1, 2"
)
_SQLITE_DEFINITION = (
    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :a COLLATE NOCASE"
)
# A conflict clause that does not fail the statement (SQLite's default, ABORT, does).
_CONFLICT = re.compile(r"\bON\s+CONFLICT\s+(REPLACE|IGNORE)\b", re.IGNORECASE)
# The purged and archive tables whose engine keeps no transactions (the engine a view
# or a table of no engine has none).
_MYSQL_NOT_TRANSACTIONAL = (
    "SELECT t.TABLE_NAME = :a, t.ENGINE FROM information_schema.TABLES t "
    "LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
    "WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME IN (:t, :a) "
    "AND t.ENGINE IS NOT NULL AND COALESCE(e.TRANSACTIONS, 'NO') <> 'YES' ORDER BY 1"
)
# A system-versioned table keeps every row a DELETE removes, as history.
_MYSQL_VERSIONED = (
    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME = :t AND TABLE_TYPE = 'SYSTEM VERSIONED'"
)
_PG_PERSISTENCE = (
    f"SELECT k.relpersistence FROM pg_catalog.pg_class k WHERE k.oid = {_PG_REL.format(name='a')}"
)
_PERSISTENCE = {
    "u": "is unlogged: a server crash empties it",
    "t": "is temporary: it goes with the session that made it",
}
_BOOLS = ("TRUE", "FALSE")
_SQLITE_TYPES = "SELECT name, type FROM pragma_table_info(:t) ORDER BY cid"


def check_plain_archive(conn: Connection, table: str, archive: str) -> None:
    """Refuse an archive table that runs code on insert, or whose columns are not of the
    purged table's types, with one line naming each column or object."""
    dialect = conn.dialect.name
    names = {"t": table, "a": archive}
    if dialect == "postgresql":
        bound = {**names, **PG_OWN_CODE_PARAMETER}
        problems = [_said(*row) for row in conn.execute(text(_PG_PROBLEMS), bound)]
    elif family(dialect) == "mysql":
        problems = _mysql(conn, names)
    else:
        problems = _sqlite(conn, table, archive)
    if problems:
        raise TargetError(
            f"archive table {archive} runs code or changes values when rows are copied into "
            f"it: {'; '.join(dict.fromkeys(problems))}. An archive table holds only plain "
            f"stored columns of {table}'s types: create it so, or archive to a file"
        )


def check_durable(conn: Connection, table: str, archive: str | None) -> None:
    """Refuse, in one line, a purged or archive table (`archive`: None for none) that
    would keep a rolled-back batch's writes, or lose a committed batch's copies in a
    crash. One catalog query on MariaDB, one on PostgreSQL with an archive table, none
    otherwise (SQLite's tables are all transactional)."""
    names = {"t": table, "a": archive}
    problems = []
    if family(conn.dialect.name) == "mysql":
        for is_archive, engine in conn.execute(text(_MYSQL_NOT_TRANSACTIONAL), names):
            problems.append(_not_transactional(table, archive if is_archive else None, engine))
        if conn.execute(text(_MYSQL_VERSIONED), names).first() is not None:
            problems.append(
                f"table {table} cannot be purged: it is system-versioned, so a DELETE keeps "
                "each row it removes as history and frees nothing (DELETE HISTORY FROM "
                f"{table} BEFORE SYSTEM_TIME ... removes history; or ALTER TABLE {table} "
                "DROP SYSTEM VERSIONING)"
            )
    elif conn.dialect.name == "postgresql" and archive is not None:
        kept = conn.execute(text(_PG_PERSISTENCE), names).scalar()
        if kept in _PERSISTENCE:
            problems.append(
                f"archive table {archive} {_PERSISTENCE[kept]}, and with it rows the purge "
                f"deleted from {table}; archive into a logged table (ALTER TABLE {archive} "
                "SET LOGGED), or to a file"
            )
    if problems:
        raise TargetError("; ".join(problems))


def _not_transactional(table: str, archive: str | None, engine: str) -> str:
    if archive is None:
        return (
            f"table {table} cannot be purged: its engine {engine} keeps no transactions, so "
            "a batch's DELETE stands even where the batch rolls back (a crash, a lost "
            "connection, the max_share limit) and its rows go uncounted and unarchived; "
            f"convert it first (ALTER TABLE {table} ENGINE=InnoDB)"
        )
    return (
        f"archive table {archive} cannot hold a purge's copies: its engine {engine} keeps "
        "no transactions, so rows a batch copied stay there when the batch rolls back, "
        f"and are copied again when it is redone; convert it (ALTER TABLE {archive} "
        "ENGINE=InnoDB), or archive to a file"
    )


# PostgreSQL's relkind, as said.
_KINDS = {"v": "view", "m": "materialized view", "f": "foreign table", "p": "partitioned table"}


def _said(kind: str, name: str | None, what: str | None) -> str:
    return {
        "kind": f"it is a {_KINDS.get(str(what), str(what))}, not a plain table",
        "row security": "it has row-level security",
        "generated": f"column {name} is generated ({what})",
        "default": f"column {name} defaults to {what}, not a plain constant",
        "trigger": f"trigger {name}" + (f" ({what})" if what else ""),
        "rule": f"rule {name}",
        "check": f"check constraint {name} calls {_CODE} ({what})",
        "domain": f"column {name} is of domain {what}, whose check calls {_CODE}",
        "index": (
            f"index {name} calls a user-defined function or operator class, or server code "
            f"of its own ({what})"
        ),
        "type": f"column {name} is {what} as in the purged table",
    }[kind]


def _mysql(conn: Connection, names: dict[str, str]) -> list[str]:
    problems = []
    kind = conn.execute(text(_MYSQL_KIND), names).scalar()
    if kind not in (None, "BASE TABLE"):
        problems.append(_said("kind", None, str(kind).lower()))
    archive: list[tuple[str, _MySqlColumn]] = []
    source: list[_MySqlColumn] = []
    for is_archive, name, generated, expression, default, *column in conn.execute(
        text(_MYSQL_COLUMNS), names
    ):
        if not is_archive:
            source.append(_MySqlColumn(*column))
            continue
        archive.append((name, _MySqlColumn(*column)))
        if generated == "ALWAYS":
            problems.append(_said("generated", name, expression))
        elif default is not None and not _plain_default(str(default)):
            problems.append(_said("default", name, default))
    for (name, found), wanted in zip(archive, source, strict=False):
        if not found.holds(wanted):
            problems.append(_said("type", name, found.against(wanted)))
    for name, event in conn.execute(text(_MYSQL_TRIGGERS), names):
        problems.append(_said("trigger", name, event))
    checks = list(conn.execute(text(_MYSQL_CHECKS), names))
    udfs = _udfs(conn) if checks else set()
    for name, clause in checks:
        called = {c.lower() for c in _CALLED.findall(str(clause))}
        # Unreadable UDFs ("*"): any function a check calls may be one.
        if called & udfs or (called and "*" in udfs):
            problems.append(_said("check", name, clause))
    return problems


class _MySqlColumn(NamedTuple):
    """A column as the archive's copy depends on it: its type, character set and
    collation, and whether it takes NULL (information_schema.COLUMNS)."""

    type: str
    charset: str | None
    collation: str | None
    nullable: str

    def holds(self, source: _MySqlColumn) -> bool:
        """Whether every value of the purged table's column is copied here unchanged: the
        same type, character set and collation, and NULL taken where the source takes it
        (a column that takes NULL where the source does not changes nothing)."""
        same = self[:3] == source[:3]
        return same and (self.nullable == "YES" or source.nullable != "YES")

    def against(self, source: _MySqlColumn) -> str:
        """This definition and the source's, as said: each with its type, and its
        character set and collation where those differ, and NULL where it refuses the
        source's."""
        encoding = self[1:3] != source[1:3]
        null = self.nullable != "YES" and source.nullable == "YES"
        return f"{self._shown(encoding, null)}, not {source._shown(encoding, null)}"

    def _shown(self, encoding: bool, null: bool) -> str:
        said = self.type
        if encoding:
            said += f" CHARACTER SET {self.charset}" if self.charset else ""
            said += f" COLLATE {self.collation}" if self.collation else ""
        if null:
            said += " NULL" if self.nullable == "YES" else " NOT NULL"
        return said


def _udfs(conn: Connection) -> set[str]:
    """The server's UDFs (the only functions of its own a check may call: MariaDB refuses
    stored functions there); {"*"} when the role may not read them."""
    try:
        return {str(name).lower() for (name,) in conn.execute(text(_MYSQL_UDFS))}
    except DBAPIError:
        return {"*"}


def _plain_default(what: str) -> bool:
    """A literal, or the statement's clock (CURRENT_TIMESTAMP and its kin: no code)."""
    return bool(_CONSTANT.fullmatch(what.strip()) or _CLOCK.fullmatch(what.strip()))


def _sqlite(conn: Connection, table: str, archive: str) -> list[str]:
    problems = []
    for kind, name, what in conn.execute(text(_SQLITE_PROBLEMS), {"a": archive}):
        if kind == "default" and (_plain_default(str(what)) or str(what).upper() in _BOOLS):
            continue
        problems.append(_said(kind, name, what))
    defined = conn.execute(text(_SQLITE_DEFINITION), {"a": archive}).scalar()
    problems += _sqlite_conflicts(str(defined or ""))
    source = list(conn.execute(text(_SQLITE_TYPES), {"t": table}))
    copy = list(conn.execute(text(_SQLITE_TYPES), {"t": archive}))
    for (_, wanted), (name, found) in zip(source, copy, strict=False):
        if _affinity(found) != _affinity(wanted):
            problems.append(
                _said("type", name, f"of {_affinity(found)} affinity, not {_affinity(wanted)}")
            )
    return problems


def _sqlite_conflicts(defined: str) -> list[str]:
    """A constraint of the archive table's that settles a conflict otherwise than by
    failing the batch: ON CONFLICT REPLACE deletes the row it already held (a copy an
    earlier purge archived) to make room, IGNORE drops the new copy."""
    code = code_only(defined, "sqlite")
    if code is None:
        return ["its definition cannot be read to its end"]
    return [
        f"a constraint of it is ON CONFLICT {found.upper()}, which "
        + (
            "deletes the copy it already holds"
            if found.upper() == "REPLACE"
            else "drops the new copy"
        )
        for found in dict.fromkeys(m.group(1).upper() for m in _CONFLICT.finditer(code))
    ]


def _affinity(declared: str | None) -> str:
    """SQLite's type affinity of a declared type (datatype3.html, 3.1)."""
    upper = (declared or "").upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"
