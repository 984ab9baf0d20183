"""What makes a read write without the statement naming a function that writes.

PostgreSQL runs functions a statement does not name: a view's (and a view's over it),
a row-security policy's when the table is read, an operator's (and its selectivity
estimators, while planning), a cast's, a type's input and output, a domain's check.
MariaDB runs a view's stored functions and loadable functions. A read through any of
them may write, and in a read-write session nothing but the guard stands in the way.

So once per run, the first time a read is sent on a read-write session, the guard asks
the server's catalog what could: views and tables whose reading may write are found by
their names in a statement (and the statement counts as a write); operators, casts,
types and domains may act in any statement (a column of that type, a literal compared
with it), so while the database has any, such reads are sent read-only: in a read-only
session, or inside a transaction in a savepoint made read-only (guard.py). A database
with none of them (the usual case) costs that one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlglot

from aishell.guard.calls import (
    PG_MAY_WRITE,
    PG_TRUSTED,
    READ_ONLY_EXTENSIONS,
    READ_ONLY_VOLATILE,
    called_functions,
    folded,
    may_name,
    mysql_stored,
    mysql_udfs,
    trust_parameters,
    vouched_for,
)
from aishell.guard.lex import code_only, without_comments
from aishell.guard.operators import exact_operators, implied_operators
from aishell.guard.pgcode import pg_catalog_relation, pg_stored_calls
from aishell.guard.sidefunctions import REACHING_FUNCTIONS
from aishell.guard.sqlcheck import SQLGLOT_DIALECT

# pg_catalog's relation, as pg_depend's classid holds it: short, for the queries below.
_rel = pg_catalog_relation


@dataclass(frozen=True)
class HiddenWriters:
    """relations: {name: why} of the views and tables whose reading may write (names
    folded as the dialect compares them; MariaDB's as schema.name, see `schemas`);
    anywhere: what may act in any statement."""

    relations: dict[str, str] = field(default_factory=dict)
    anywhere: tuple[str, ...] = ()
    # {symbol: why} of the operators among them: a statement that writes the symbol may
    # call the function, even where the session is read-only (which stops a write, not
    # a function that ends another session or switches this one back).
    operators: dict[str, str] = field(default_factory=dict)
    # {type name: why} of the types a cast to which (or a domain check of which) may
    # write: a statement that names the type, likewise.
    types: dict[str, str] = field(default_factory=dict)
    # The extension through which a function may open a session of its own (dblink,
    # postgres_fdw), when the database has one and anything may act in any statement:
    # what such a function writes there, no read-only session of ours stops.
    elsewhere: str = ""
    # MariaDB: {name: the schemas holding a relation of that name}. A statement reads
    # one where it names the schema too, or names it alone in the session's database:
    # a view of the same name in another database of the server is not read.
    schemas: dict[str, frozenset[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.relations or self.anywhere)

    def type_in(self, sql: str, dialect: str) -> str | None:
        """The first of these types the statement names, if any."""
        if not self.types:
            return None
        return next((name for name in names_in(sql, dialect) if name in self.types), None)

    def operator_in(self, sql: str, dialect: str) -> str | None:
        """The first of these operators whose symbol the statement's code holds, or that
        a word of it stands for (LIKE is ~~: operators.implied_operators)."""
        if not self.operators:
            return None
        code = without_comments(sql, dialect)
        # Words in code alone: a string's or a quoted name's (NOT LIKE 'pg\_%') are none.
        implied = implied_operators(code_only(sql, dialect) or code)
        return next(
            (symbol for symbol in sorted(self.operators) if symbol in code or symbol in implied),
            None,
        )

    def named_in(
        self, sql: str, dialect: str, home: Callable[[], str | None] = lambda: None
    ) -> str | None:
        """The first relation of these that the statement names, if any (its key in
        `relations`). `home`: the session's database now, asked only when needed."""
        if not self.relations:
            return None
        words = names_in(sql, dialect)
        if not self.schemas:
            return next((name for name in words if name in self.relations), None)
        return _in_schemas(self.schemas, words, home)


def _in_schemas(
    schemas: dict[str, frozenset[str]], words: Sequence[str], home: Callable[[], str | None]
) -> str | None:
    """schema.name of the first relation the words may name: its schema among them too
    (a wrong match refuses, never lets by), or the home schema's."""
    said = set(words)
    session: list[str | None] = []
    for name in words:
        for schema in sorted(schemas.get(name, ())):
            if schema not in said and not session:
                here = home()
                session.append(here.lower() if here else None)
            if schema in said or schema == session[0]:
                return f"{schema}.{name}"
    return None


@lru_cache(maxsize=4096)
def names_in(sql: str, dialect: str) -> tuple[str, ...]:
    """Every word of the statement that could name a relation, folded (unquoted
    PostgreSQL names to lower case, MariaDB names always, as table names may be)."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(SQLGLOT_DIALECT[dialect]).tokenize(sql)
    except sqlglot.errors.TokenError:
        return ()
    names = [folded(token, dialect) for token in tokens if may_name(token, sql, dialect)]
    return tuple(dict.fromkeys(names))


def hidden_writers(dialect: str, cursor: Any, trusted: Sequence[str] = ()) -> HiddenWriters:
    """Asked of the server's catalog on a second cursor of the statement's connection
    (so not through the guard). `trusted`: the user-defined functions the site vouches
    only read."""
    lookup = cursor.connection.cursor()
    try:
        if dialect == "postgresql":
            return _postgresql(lookup, trusted)
        if dialect == "mysql":
            return _mysql(lookup, trusted)
        return HiddenWriters()
    finally:
        lookup.close()


# Objects a user made (an oid from 16384 on, FirstNormalObjectId: what initdb made is
# below) run these functions; those that may write (guardcalls.PG_MAY_WRITE), the
# operators that run one, and the views that run either, directly or through another
# view. Only user objects are read, so the lookup stays small whatever the catalog holds.
# A table's policies count only where they apply to the session's role: not to a
# superuser or a BYPASSRLS role, nor to the owner unless the table forces them.
# Every operator is the catalog's own, written exactly (exact_operators): an operator
# the database defines with an exact signature would otherwise beat pg_catalog's where
# that one needs an implicit cast (CVE-2018-1058), pg_catalog first on the path or not.
_USER = "'16384'::pg_catalog.oid"


# What the planner may evaluate of a table's definition (an index's expressions and
# predicate, a partition key, a statistics object's expressions, a check constraint for
# constraint exclusion) as it reads it for any statement naming the table: a call whose
# arguments hold no column, which it folds to a constant however they are wrapped
# (arrays, rows, CASE, named arguments, casts, other calls), and a SQL-language function
# wherever it is called, which it may inline and then fold what its body calls. The node
# tree is reduced from its innermost nodes out: a column (VAR) and every node holding
# one become a tab (which no node's text holds: outfuncs escapes whitespace in names),
# a node without one is dropped once looked at; a call of the function looked at, met
# while no tab is inside it, counts. A call that takes columns only, of a function in
# another language (lower_unaccent(name)), runs only as rows are written (usercode.py).
_TREE_PATTERNS = {
    "escaped": r"\\.",
    "var": r"[{]VAR [^{}]*[}]",
    "tab": "\t",
    "with_var": "[{][^{}]*\t[^{}]*[}]",
    "without_var": "[{][^{}\t]*[}]",
    "call_head": "[{][A-Z]+ [^{}\t]*:(op)?funcid ",
    "call_tail": " [^{}\t]*[}]",
    "node": "[{]",
}
_CALL_OF_FN = "(%(call_head)s || x.fn::pg_catalog.text || %(call_tail)s)"

_PG_HIDDEN = f"""
WITH RECURSIVE {pg_stored_calls(_USER)}, run AS (
  SELECT pg_catalog.unnest(ARRAY[o.oprcode, o.oprrest, o.oprjoin]::pg_catalog.oid[]) AS fn
  FROM pg_catalog.pg_operator o WHERE o.oid >= {_USER}
  UNION SELECT c.castfunc FROM pg_catalog.pg_cast c WHERE c.oid >= {_USER}
  UNION SELECT pg_catalog.unnest(
    ARRAY[t.typinput, t.typoutput, t.typreceive, t.typsend]::pg_catalog.oid[])
  FROM pg_catalog.pg_type t
  WHERE t.oid >= {_USER} AND t.typtype = 'b'::pg_catalog.char
    AND t.typcategory <> 'A'::pg_catalog.char
  UNION SELECT pg_catalog.unnest(ARRAY[r.rngcanonical, r.rngsubdiff]::pg_catalog.oid[])
  FROM pg_catalog.pg_range r WHERE r.rngtypid >= {_USER}
  UNION SELECT a.amproc FROM pg_catalog.pg_amproc a WHERE a.oid >= {_USER}
  UNION SELECT t.fn FROM tree_calls t
  UNION SELECT d.refobjid FROM pg_catalog.pg_depend d
  WHERE d.classid = ANY (ARRAY[{_rel("pg_rewrite")}, {_rel("pg_policy")},
                              {_rel("pg_constraint")}, {_rel("pg_class")},
                              {_rel("pg_statistic_ext")}])
    AND d.objid >= {_USER} AND d.refclassid = {_rel("pg_proc")}
), writing AS (
  SELECT p.oid FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE p.oid = ANY (SELECT fn FROM run)
    AND {PG_MAY_WRITE}
    AND NOT (p.proname = ANY(%(read_only)s::pg_catalog.name[]) AND {PG_TRUSTED})
    -- A range type's constructors, which CREATE TYPE makes of the server's own code.
    AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = {_rel("pg_proc")}
        AND e.objid = p.oid AND e.refclassid = {_rel("pg_type")}
        AND e.deptype = 'i'::pg_catalog.char)
), operators AS (
  SELECT o.oid, o.oprnamespace, o.oprname, p.proname FROM pg_catalog.pg_operator o
  JOIN pg_catalog.pg_proc p
    ON p.oid = ANY (ARRAY[o.oprcode, o.oprrest, o.oprjoin]::pg_catalog.oid[])
  WHERE o.oid >= {_USER} AND p.oid = ANY (SELECT oid FROM writing)
), candidate(oid, what, fn, tree) AS (
  SELECT x.oid, x.what, x.fn, x.tree FROM (
    SELECT COALESCE(i.indrelid, d.objid) AS oid, d.refobjid AS fn,
      CASE WHEN i.indrelid IS NULL THEN 'its partition key' ELSE 'its index ' || k.relname END
      AS what,
      COALESCE(i.indexprs::pg_catalog.text, '')
      || COALESCE(i.indpred::pg_catalog.text, '')
      || COALESCE(pt.partexprs::pg_catalog.text, '') AS tree
    FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class k ON k.oid = d.objid
    LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = d.objid
    LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = d.objid
    WHERE d.classid = {_rel("pg_class")} AND d.objid >= {_USER}
      AND d.refclassid = {_rel("pg_proc")}
    UNION ALL SELECT s.stxrelid, d.refobjid, 'its statistics ' || s.stxname,
      s.stxexprs::pg_catalog.text
    FROM pg_catalog.pg_statistic_ext s
    JOIN pg_catalog.pg_depend d ON d.classid = {_rel("pg_statistic_ext")}
      AND d.objid = s.oid AND d.refclassid = {_rel("pg_proc")}
    UNION ALL SELECT con.conrelid, d.refobjid, 'its check ' || con.conname,
      con.conbin::pg_catalog.text
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_depend d ON d.classid = {_rel("pg_constraint")}
      AND d.objid = con.oid AND d.refclassid = {_rel("pg_proc")}
    WHERE con.conrelid <> '0'::pg_catalog.oid
  ) x
  WHERE x.fn = ANY (SELECT oid FROM writing)
), fold(oid, what, fn, t, hit, depth) AS (
  SELECT x.oid, x.what, x.fn, s.t, EXISTS (
      SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
      WHERE p.oid = x.fn AND l.lanname = 'sql'::pg_catalog.name)
    OR s.t ~ {_CALL_OF_FN}, 0
  FROM candidate x, LATERAL (SELECT pg_catalog.regexp_replace(pg_catalog.regexp_replace(
    x.tree, %(escaped)s, '_', 'g'), %(var)s, %(tab)s, 'g') AS t) s
  UNION ALL
  SELECT x.oid, x.what, x.fn, s.t, s.t ~ {_CALL_OF_FN}, x.depth + 1
  FROM fold x, LATERAL (SELECT pg_catalog.regexp_replace(pg_catalog.regexp_replace(
    x.t, %(with_var)s, %(tab)s, 'g'), %(without_var)s, '', 'g') AS t) s
  WHERE NOT x.hit AND x.t ~ %(node)s AND x.depth < 10000
), planned(oid, what) AS (
  SELECT DISTINCT oid, what FROM fold WHERE hit
), ancestors(oid, what) AS (
  SELECT oid, what FROM planned
  UNION SELECT i.inhparent,
    'its partition or child ' || i.inhrelid::pg_catalog.regclass::pg_catalog.text
  FROM ancestors a JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.oid
), remote(oid, what) AS (
  -- A foreign table, and every table a read of which reads it: its partitioned and
  -- inherited parents.
  SELECT c.oid, ''::pg_catalog.text FROM pg_catalog.pg_class c
  WHERE c.relkind = 'f'::pg_catalog.char
  UNION SELECT i.inhparent,
    ' (its partition or child ' || i.inhrelid::pg_catalog.regclass::pg_catalog.text
    || ' is a foreign table)'
  FROM remote r JOIN pg_catalog.pg_inherits i ON i.inhrelid = r.oid
), reached AS (
  SELECT {_rel("pg_proc")} AS classid, oid AS objid, false AS away FROM writing
  UNION ALL SELECT {_rel("pg_operator")}, oid, false FROM operators
  UNION ALL SELECT {_rel("pg_class")}, oid, false FROM ancestors
  UNION ALL SELECT {_rel("pg_class")}, oid, true FROM remote
), views(oid, away) AS (
  SELECT r.ev_class, x.away FROM deps d
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  JOIN reached x ON x.classid = d.refclassid AND x.objid = d.refobjid
  WHERE d.classid = {_rel("pg_rewrite")}
  UNION
  SELECT r.ev_class, v.away FROM views v
  JOIN pg_catalog.pg_depend d ON d.refclassid = {_rel("pg_class")}
    AND d.refobjid = v.oid AND d.classid = {_rel("pg_rewrite")}
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
)
SELECT DISTINCT CASE WHEN v.away THEN 'remote view' ELSE 'view' END, c.relname,
  n.nspname || '.' || c.relname FROM views v
JOIN pg_catalog.pg_class c ON c.oid = v.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT 'table', c.relname, n.nspname || '.' || c.relname || ' (policy ' || pol.polname || ')'
FROM pg_catalog.pg_policy pol
JOIN deps d ON d.classid = {_rel("pg_policy")} AND d.objid = pol.oid
JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relrowsecurity AND EXISTS (
    SELECT 1 FROM reached x WHERE x.classid = d.refclassid AND x.objid = d.refobjid)
  AND NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
           WHERE r.rolname = CURRENT_USER)
  AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(c.relowner, 'USAGE'))
UNION ALL
SELECT 'table', c.relname, n.nspname || '.' || c.relname || ' (' || a.what
  || ', which the planner may evaluate in any read of it)'
FROM ancestors a JOIN pg_catalog.pg_class c ON c.oid = a.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT 'operator class', t.typname, f.opfname || ' for '
  || t.oid::pg_catalog.regtype::pg_catalog.text
  || ' (support function ' || a.amproc::pg_catalog.regproc::pg_catalog.text || ')'
FROM pg_catalog.pg_amproc a JOIN pg_catalog.pg_opfamily f ON f.oid = a.amprocfamily
JOIN pg_catalog.pg_type t ON t.oid = a.amproclefttype
WHERE a.oid >= {_USER} AND a.amproc = ANY (SELECT oid FROM writing)
UNION ALL
SELECT 'range type', t.typname, t.oid::pg_catalog.regtype::pg_catalog.text
FROM pg_catalog.pg_range r
JOIN pg_catalog.pg_type t ON t.oid = r.rngtypid
WHERE r.rngtypid >= {_USER}
  AND ARRAY[r.rngcanonical, r.rngsubdiff]::pg_catalog.oid[] && ARRAY(SELECT oid FROM writing)
UNION ALL
SELECT 'operator', o.oprname, n.nspname || '.' || o.oprname || ' (' || o.proname || ')'
FROM operators o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
UNION ALL
SELECT 'cast', (SELECT ct.typname FROM pg_catalog.pg_type ct WHERE ct.oid = c.casttarget),
  c.castsource::pg_catalog.regtype::pg_catalog.text || ' to '
  || c.casttarget::pg_catalog.regtype::pg_catalog.text
FROM pg_catalog.pg_cast c WHERE c.oid >= {_USER} AND c.castfunc = ANY (SELECT oid FROM writing)
UNION ALL
SELECT 'type', NULL, t.oid::pg_catalog.regtype::pg_catalog.text FROM pg_catalog.pg_type t
WHERE t.oid >= {_USER} AND t.typtype = 'b'::pg_catalog.char
  AND ARRAY[t.typinput, t.typoutput, t.typreceive, t.typsend]::pg_catalog.oid[]
      && ARRAY(SELECT oid FROM writing)
UNION ALL
SELECT 'domain', t.typname, t.oid::pg_catalog.regtype::pg_catalog.text
  || ' (check ' || con.conname || ')'
FROM pg_catalog.pg_constraint con
JOIN deps d ON d.classid = {_rel("pg_constraint")} AND d.objid = con.oid
JOIN pg_catalog.pg_type t ON t.oid = con.contypid
WHERE con.oid >= {_USER} AND EXISTS (
    SELECT 1 FROM reached x WHERE x.classid = d.refclassid AND x.objid = d.refobjid)
UNION ALL
SELECT CASE WHEN r.what = '' THEN 'foreign table' ELSE 'foreign partition' END, c.relname,
  n.nspname || '.' || c.relname || r.what FROM remote r
JOIN pg_catalog.pg_class c ON c.oid = r.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"""
_PG_HIDDEN = exact_operators(_PG_HIDDEN)


def _postgresql(lookup: Any, trusted: Sequence[str]) -> HiddenWriters:
    lookup.execute(
        _PG_HIDDEN,
        {
            "read_only": sorted(READ_ONLY_VOLATILE),
            "extensions": list(READ_ONLY_EXTENSIONS),
            **trust_parameters(trusted),
            **_TREE_PATTERNS,
        },
    )
    relations: dict[str, str] = {}
    operators: dict[str, str] = {}
    types: dict[str, str] = {}
    anywhere: list[str] = []
    for kind, name, shown in lookup.fetchall():
        if kind == "operator":
            operators[name] = f"operator {shown} runs a function that may write"
            anywhere.append(f"{kind} {shown}")
        elif kind in ("cast", "domain", "operator class", "range type"):
            # Named where a statement casts to the type, and may act where it does not.
            types.setdefault(name, f"{kind} {shown} runs a function that may write")
            anywhere.append(f"{kind} {shown}")
        elif kind in ("foreign table", "foreign partition", "remote view"):
            word = {"foreign partition": "table", "remote view": "view"}.get(kind, kind)
            relations.setdefault(name, f"{word} {shown} is read from another server")
        elif name is not None:
            relations.setdefault(
                name,
                f"{kind} {shown} runs a function that may write (volatile or user-defined; "
                "one the site knows only reads can be listed in the target's "
                "trusted_functions)",
            )
        else:
            anywhere.append(f"{kind} {shown}")
    elsewhere = _session_opener(lookup) if anywhere else ""
    return HiddenWriters(relations, tuple(sorted(set(anywhere))), operators, types, elsewhere)


# The extensions whose functions open a session of their own, on this server or another.
_SESSION_OPENERS = ("dblink", "postgres_fdw")


def _session_opener(lookup: Any) -> str:
    """The first such extension the database has, or ""."""
    lookup.execute(
        "SELECT extname FROM pg_catalog.pg_extension "
        "WHERE extname OPERATOR(pg_catalog.=) ANY(%(names)s::pg_catalog.name[]) ORDER BY extname",
        {"names": list(_SESSION_OPENERS)},
    )
    found = lookup.fetchone()
    return str(found[0]) if found else ""


_SYSTEM_SCHEMAS = ("mysql", "sys", "information_schema", "performance_schema")


# Tables whose rows another server holds: reading one opens a session there.
_MYSQL_REMOTE_ENGINES = ("FEDERATED", "CONNECT", "SPIDER")


def _mysql(lookup: Any, trusted: Sequence[str]) -> HiddenWriters:
    """Views that call a stored or loadable function, or a built-in one that reaches
    outside the session (LOAD_FILE, GET_LOCK) or advances a sequence, or read such a
    view; a view whose definition the account cannot read counts as one; tables another
    server holds."""
    relations: dict[str, str] = {}
    lookup.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES "
        f"WHERE ENGINE IN ({', '.join(['%s'] * len(_MYSQL_REMOTE_ENGINES))})",
        _MYSQL_REMOTE_ENGINES,
    )
    for schema, name, engine in lookup.fetchall():
        relations[f"{schema}.{name}".lower()] = (
            f"{engine} table {schema}.{name} is read from another server"
        )
    lookup.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
        f"WHERE TABLE_SCHEMA NOT IN ({', '.join(['%s'] * len(_SYSTEM_SCHEMAS))})",
        _SYSTEM_SCHEMAS,
    )
    # {schema.name: (as shown, its definition, its schema)}
    views = {
        f"{schema}.{name}".lower(): (f"{schema}.{name}", str(body or ""), str(schema).lower())
        for schema, name, body in lookup.fetchall()
    }
    called = {
        key: [c for _, c in called_functions(body, "mysql")] for key, (_, body, _) in views.items()
    }
    functions = _mysql_writers(lookup, {c for calls in called.values() for c in calls}, trusted)
    for key, (shown, body, _) in views.items():
        if not body:
            relations[key] = f"view {shown}, whose definition this account cannot read"
            continue
        calls = sorted(c for c in called[key] if c in functions)
        if calls:
            relations[key] = f"view {shown} calls {calls[0]}(), which may write"
    # Views over those, until no more are found. A name alone in a view's definition
    # is of the view's own database (the server writes them qualified).
    while True:
        schemas = _schemas_of(relations)
        found = {}
        for key, (shown, body, schema) in views.items():
            if key in relations:
                continue
            over = _in_schemas(schemas, names_in(body, "mysql"), _always(schema))
            if over is not None:
                found[key] = f"view {shown} reads {over}, which may write"
        if not found:
            return HiddenWriters(relations, schemas=schemas)
        relations.update(found)


def _always(schema: str) -> Callable[[], str | None]:
    return lambda: schema


def _schemas_of(relations: dict[str, str]) -> dict[str, frozenset[str]]:
    """{name: its schemas} of relations keyed schema.name (MariaDB's names hold no dot)."""
    schemas: dict[str, set[str]] = {}
    for key in relations:
        schema, _, name = key.partition(".")
        schemas.setdefault(name, set()).add(schema)
    return {name: frozenset(found) for name, found in schemas.items()}


# What a view may call that writes without being a stored or loadable function: a
# sequence's next value (NEXT VALUE FOR s is stored as nextval(s)), or a value set.
_MYSQL_SEQUENCE_WRITERS = frozenset({"nextval", "setval"})


def _mysql_writers(lookup: Any, names: set[str], trusted: Sequence[str]) -> set[str]:
    """Which of the names views call may write: a stored function the name calls as the
    server matches names (calls.mysql_stored), unless the site trusts it; a loadable
    function; a built-in function that reaches beyond the session or writes."""
    stored, _ = mysql_stored(lookup, names)
    writers = {
        name
        for name, routines in stored.items()
        if any(not vouched_for(schema, real, trusted, fold=True) for schema, real in routines)
    }
    return writers | mysql_udfs(lookup) | REACHING_FUNCTIONS | _MYSQL_SEQUENCE_WRITERS
