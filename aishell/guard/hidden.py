"""What makes a read write without the statement naming a function that writes.

PostgreSQL runs functions a statement does not name: a view's (and a view's over it),
a row-security policy's when the table is read (through a view too, as the view's owner
or its reader), an operator's (and its selectivity estimators, while planning), a
cast's, a type's input and output, a domain's check.
MariaDB runs a view's stored, package and loadable functions, and a view of SQL
SECURITY DEFINER its definer's, which the login may not see. A read through any of
them may write, and in a read-write session nothing but the guard stands in the way.

So once per run, the first time a read is sent on a read-write session, the guard asks
the server's catalog what could: views and tables whose reading may write are found by
their names in a statement (and the statement counts as a write; a write that names
one runs its code too, and is high risk: Guard.verdict); operators, casts,
types and domains may act in any statement (a column of that type, a literal compared
with it), so while the database has any, such reads are sent read-only: in a read-only
session, or inside a transaction in a savepoint made read-only (guard.py). A database
with none of them (the usual case) costs that one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

import sqlglot
from sqlglot import TokenType, exp

from aishell.guard.calls import (
    UNSEEN,
    Call,
    called_functions,
    called_said,
    folded,
    may_name,
    vouched_for,
)
from aishell.guard.lex import code_only, without_comments
from aishell.guard.mysqlcalls import MysqlRoutines, mysql_routines
from aishell.guard.operators import implied_operators
from aishell.guard.pghidden import PG_HIDDEN, pg_hidden_parameters
from aishell.guard.sidefunctions import REACHING_FUNCTIONS
from aishell.guard.sqlcheck import SQLGLOT_DIALECT
from aishell.guard.writtentables import table_name


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
    # The keys of `relations` that are there only as read from another server (a foreign
    # table, a view over one): no code of the database's runs as they are read.
    remote: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.relations or self.anywhere)

    @cached_property
    def running_code(self) -> HiddenWriters:
        """These relations less the remote ones: those whose reading runs code that may
        write, which a write naming one runs too (Guard.verdict)."""
        relations = {k: why for k, why in self.relations.items() if k not in self.remote}
        return HiddenWriters(relations, schemas=_schemas_of(relations) if self.schemas else {})

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


def _postgresql(lookup: Any, trusted: Sequence[str]) -> HiddenWriters:
    lookup.execute(PG_HIDDEN, pg_hidden_parameters(trusted))
    relations: dict[str, str] = {}
    operators: dict[str, str] = {}
    types: dict[str, str] = {}
    anywhere: list[str] = []
    running: set[str] = set()
    for kind, name, shown, via in lookup.fetchall():
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
            # Code, said before being read from another server where a view is both.
            if name not in running:
                relations[name] = (
                    f"{kind} {shown} runs a function that may write{f', {via}' if via else ''} "
                    "(volatile or user-defined; one the site knows only reads can be listed "
                    "in the target's trusted_functions)"
                )
            running.add(name)
        else:
            anywhere.append(f"{kind} {shown}")
    elsewhere = _session_opener(lookup) if anywhere else ""
    remote = frozenset(relations) - running
    found = HiddenWriters(relations, tuple(sorted(set(anywhere))), operators, types, elsewhere)
    return replace(found, remote=remote)


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
    """Views that call a stored, package or loadable function, or a built-in one that
    reaches outside the session (LOAD_FILE, GET_LOCK) or advances a sequence, or a name
    the login cannot tell from such code (mysqlcalls.py); views that read a relation the
    login cannot see, or such a view; a view whose definition the account cannot read
    counts as one. And tables another server holds, and views over them (`remote`)."""
    lookup.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES "
        f"WHERE ENGINE IN ({', '.join(['%s'] * len(_MYSQL_REMOTE_ENGINES))})",
        _MYSQL_REMOTE_ENGINES,
    )
    remote = {
        f"{schema}.{name}".lower(): f"{engine} table {schema}.{name} is read from another server"
        for schema, name, engine in lookup.fetchall()
    }
    lookup.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
        f"WHERE TABLE_SCHEMA NOT IN ({', '.join(['%s'] * len(_SYSTEM_SCHEMAS))})",
        _SYSTEM_SCHEMAS,
    )
    # {schema.name: (as shown, its definition, its schema)}
    views = {
        f"{schema}.{name}".lower(): (f"{schema}.{name}", str(body or ""), str(schema))
        for schema, name, body in lookup.fetchall()
    }
    called = {key: _view_calls(body, schema) for key, (_, body, schema) in views.items()}
    routines = mysql_routines(lookup, {c for calls in called.values() for c in calls})
    unseen = _unseen_relations(lookup, views, routines.every_routine)
    code: dict[str, str] = {}
    for key, (shown, body, _) in views.items():
        writer = _first_writer(called[key], routines, trusted)
        if not body:
            code[key] = f"view {shown}, whose definition this account cannot read"
        elif writer is not None:
            code[key] = f"view {shown} calls {writer}, which may write"
        elif key in unseen:
            code[key] = f"view {shown} reads {unseen[key]}"
    code = _views_over(views, code)
    relations = _views_over(views, {**remote, **code})
    return HiddenWriters(
        relations, schemas=_schemas_of(relations), remote=frozenset(relations) - set(code)
    )


def _views_over(views: dict[str, tuple[str, str, str]], found: dict[str, str]) -> dict[str, str]:
    """`found` and the views over them, until no more are found. A name alone in a
    view's definition is of the view's own database (the server writes them qualified)."""
    found = dict(found)
    while True:
        schemas = _schemas_of(found)
        more = {}
        for key, (shown, body, schema) in views.items():
            if key in found:
                continue
            over = _in_schemas(schemas, names_in(body, "mysql"), _always(schema.lower()))
            if over is not None:
                more[key] = f"view {shown} reads {over}: {found[over]}"
        if not more:
            return found
        found.update(more)


def _view_calls(body: str, schema: str) -> list[Call]:
    """The calls of a view's definition as the server wrote it: a stored function's
    name quoted (`fw`()), of the view's database where it stands alone; the server's
    own functions and loadable ones bare (concat(), sphinx_snippets())."""
    calls = list(called_functions(body, "mysql"))
    try:
        tokens = sqlglot.Dialect.get_or_raise("mysql").tokenize(body)
    except sqlglot.errors.TokenError:
        return calls
    for i in range(1, len(tokens)):
        name, before = tokens[i - 1], tokens[i - 2] if i >= 2 else None
        if tokens[i].token_type is not TokenType.L_PAREN:
            continue
        if name.token_type is TokenType.IDENTIFIER and (
            before is None or before.token_type is not TokenType.DOT
        ):
            calls.append((schema.lower(), folded(name, "mysql")))
    return list(dict.fromkeys(calls))


# What a view may call that writes without being a stored or loadable function: a
# sequence's next value (NEXT VALUE FOR s is stored as nextval(s)), or a value set.
_MYSQL_SEQUENCE_WRITERS = frozenset({"nextval", "setval"})


def _first_writer(calls: list[Call], routines: MysqlRoutines, trusted: Sequence[str]) -> str | None:
    """The first call that may write, as a sentence names it: a stored, package or
    loadable function the site does not trust (a name alone matched in any database),
    a name the login cannot tell, or a built-in function that reaches beyond the
    session or writes."""
    for call in sorted(calls, key=lambda c: (c[1], c[0] or "")):
        schema, name = call
        if schema is None and name in REACHING_FUNCTIONS | _MYSQL_SEQUENCE_WRITERS:
            return f"{name}()"
        runs = [
            run
            for run in routines.runs(call, None)
            if not vouched_for(run.schema, run.name, trusted, fold=True)
        ]
        if runs:
            return called_said({call: UNSEEN if all(r.unseen for r in runs) else ""})
    return None


# The server's own schemas: no relation there runs code of a user's.
_SERVER_SCHEMAS = ("mysql", "information_schema", "performance_schema")


def _unseen_relations(
    lookup: Any, views: dict[str, tuple[str, str, str]], every_routine: bool
) -> dict[str, str]:
    """{view: what it reads that the login cannot see}: a relation of its definition
    not among those information_schema shows the login (it may be a view of any code),
    or, where the login does not see every routine, a definition the parser cannot
    read."""
    bases: dict[str, list[tuple[str, str]]] = {}
    found: dict[str, str] = {}
    for key, (_, body, schema) in views.items():
        read = _bases(body, schema) if body else []
        if read is None and not every_routine:
            found[key] = "what the parser cannot tell from its definition, which may write"
        bases[key] = [b for b in read or [] if b[0].lower() not in _SERVER_SCHEMAS]
    schemas = sorted({s for read in bases.values() for s, _ in read})
    if not schemas:
        return found
    lookup.execute(
        "SELECT LOWER(TABLE_SCHEMA), LOWER(TABLE_NAME) FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA IN ({', '.join(['%s'] * len(schemas))})",
        schemas,
    )
    seen = {(str(s), str(n)) for s, n in lookup.fetchall()}
    for key, read in bases.items():
        hidden = [f"{s}.{n}" for s, n in read if (s.lower(), n.lower()) not in seen]
        if hidden and key not in found:
            found[key] = f"{hidden[0]}, which this login cannot see (it may run any code)"
    return found


def _bases(body: str, schema: str) -> list[tuple[str, str]] | None:
    """The relations a view's definition reads (its common table expressions left
    out), each (schema, name); None where the parser cannot read it."""
    try:
        tree = sqlglot.parse_one(body, read="mysql")
    except sqlglot.errors.SqlglotError:
        return None
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    named = (table_name(t, "mysql") for t in tree.find_all(exp.Table))
    return list(
        dict.fromkeys((s or schema, n) for s, n in filter(None, named) if s or n not in ctes)
    )


def _always(schema: str) -> Callable[[], str | None]:
    return lambda: schema


def _schemas_of(relations: dict[str, str]) -> dict[str, frozenset[str]]:
    """{name: its schemas} of relations keyed schema.name (MariaDB's names hold no dot)."""
    schemas: dict[str, set[str]] = {}
    for key in relations:
        schema, _, name = key.partition(".")
        schemas.setdefault(name, set()).add(schema)
    return {name: frozenset(found) for name, found in schemas.items()}
