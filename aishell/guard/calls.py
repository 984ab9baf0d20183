"""The functions a read calls, and which of them may write.

A SELECT can write through a function it calls: a PostgreSQL function that is VOLATILE
(or an aggregate whose transition or final function is: the aggregate itself is marked
IMMUTABLE), a MariaDB stored function (whose SQL DATA characteristic the server does not
enforce), a package's function or a loadable function (UDF), or on MariaDB a name the
login cannot tell from one (mysqlcalls.py). A declared volatility is a promise, not a proof: a
function a user defined (in no system schema, part of no installed extension, no
constructor CREATE TYPE made of the server's code for a range) may write
whatever it declares, unless the site trusts it by name (a target's trusted_functions).
The parser cannot tell, so the guard asks the server's catalog about every name the
statement calls, as the server would resolve it, including PostgreSQL's attribute
notation: `v.zap` calls zap(v) when v has no column zap. What a read runs without naming
it (an operator's function, a view's) is guardhidden.py's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import TokenType

from aishell.guard.mysqlcalls import mysql_routines
from aishell.guard.pgcode import pg_catalog_function, pg_extension_code, pg_type_part
from aishell.guard.sidefunctions import RUNS_WHAT_IT_IS_GIVEN
from aishell.guard.sqlcheck import SQLGLOT_DIALECT
from aishell.guard.statements import plain_maintenance

# Volatile functions that only read: sizes, statistics and checks the tools use. They
# count as reads only where PostgreSQL itself or the extension that ships them defines
# them; a function of the same name in another schema is judged like any other.
READ_ONLY_VOLATILE = frozenset(
    {
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_database_size",
        "pg_tablespace_size",
        "pg_size_pretty",
        "pgstattuple",
        "pgstattuple_approx",
        "pgstatindex",
        "pgstatginindex",
        "pg_relpages",
        "bt_index_check",
        "bt_index_parent_check",
        "verify_heapam",
        "pg_current_wal_lsn",
        "pg_last_wal_replay_lsn",
        "pg_last_xact_replay_timestamp",
        "pg_wal_lsn_diff",
        "pg_is_in_recovery",
        "pg_backend_pid",
        "pg_stat_get_live_tuples",
        "pg_stat_get_dead_tuples",
        "pg_stat_get_last_analyze_time",
        "pg_stat_get_last_autoanalyze_time",
        "pg_stat_get_last_vacuum_time",
        "pg_stat_get_last_autovacuum_time",
        "clock_timestamp",
        "timeofday",
        "random",
        "pg_blocking_pids",
        # Forgets this transaction's cached statistics, so the views are read afresh.
        "pg_stat_clear_snapshot",
        "txid_current_snapshot",
        "pg_current_snapshot",
        # Whether a transaction committed, from the commit log (a purge's batch in doubt).
        "pg_xact_status",
        "txid_status",
        "pg_control_system",
        "pg_postmaster_start_time",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "pg_conf_load_time",
        # Behind the views of the same names, which a DBA's tools read.
        "pg_stat_statements",
        "pg_stat_statements_info",
        "pg_buffercache_pages",
        "pg_buffercache_summary",
        "pg_buffercache_usage_counts",
    }
)
# The extensions whose functions of those names are trusted to only read.
READ_ONLY_EXTENSIONS = ("pgstattuple", "amcheck", "pg_stat_statements", "pg_buffercache")

# Words PostgreSQL's grammar reads before "(" itself: expressions (COALESCE, GREATEST),
# or calls it names in pg_catalog whatever the search path (EXTRACT, SUBSTRING, TRIM).
# No function a database defines is reached by them.
PG_GRAMMAR = frozenset(
    {
        "coalesce",
        "greatest",
        "least",
        "nullif",
        "extract",
        "position",
        "substring",
        "overlay",
        "trim",
        "normalize",
        "treat",
        "exists",
        "any",
        "all",
        "some",
        "array",
        "row",
        "in",
        "values",
        "cast",
        "grouping",
        "filter",
        "over",
        "and",
        "or",
        "not",
        "as",
        "from",
        "using",
        "on",
        "interval",
        "xmlelement",
        "xmlforest",
        "xmlconcat",
        "xmlparse",
        "xmlpi",
        "xmlroot",
        "xmlserialize",
        "xmlexists",
    }
)

# (schema or None, name) of one call, as the server resolves names.
Call = tuple[str | None, str]
NOT_NAMES = frozenset({TokenType.STRING, TokenType.NUMBER, TokenType.PARAMETER})
# Words after which a MariaDB name before "(" is a table or index and its columns
# (`INSERT INTO t (a, b)`, `INSERT IGNORE t (a)`, `CREATE TABLE t (...)`), never a call.
_MYSQL_TABLE_WORDS = frozenset(
    {"into", "table", "insert", "replace", "ignore", "low_priority", "delayed"}
    | {"high_priority", "index", "key", "references", "view", "as"}
)
# Said of a call whose name the login cannot tell from code (mysqlcalls.py).
UNSEEN = (
    " (this login cannot see its definition: it is none of the server's own functions, "
    "nor a routine or loadable function the login can see)"
)


@lru_cache(maxsize=8192)
def called_functions(sql: str, dialect: str) -> tuple[Call, ...]:
    """Every name followed by "(" (optionally schema-qualified): a function call, or a
    word that only looks like one (IN, VALUES), which no catalog holds as a function.
    Unquoted PostgreSQL names fold to lower case; MariaDB's function names ignore case.
    A tool sends the same text for every table (the values are bound): each text is
    read once."""
    if plain_maintenance(sql, dialect):
        # `ANALYZE "s"."t"`: a command and names of tables or indexes, no expression;
        # a dotted name there is never a call in attribute notation.
        return ()
    try:
        tokens = sqlglot.Dialect.get_or_raise(SQLGLOT_DIALECT[dialect]).tokenize(sql)
    except sqlglot.errors.TokenError:
        return ((None, "(a statement aishell cannot read)"),)
    calls: list[Call] = []
    if dialect == "postgresql":
        calls += _attributes(tokens)
    for i, token in enumerate(tokens):
        if token.token_type is not TokenType.L_PAREN or i == 0:
            continue
        name = tokens[i - 1]
        if not may_name(name, sql, dialect) or not _is_word(name.text) or _punctuation(name):
            continue
        if i >= 2 and tokens[i - 2].text.upper() == "TABLESAMPLE":
            continue  # a sampling method (SYSTEM, BERNOULLI), not a call
        schema = None
        if i >= 3 and tokens[i - 2].token_type is TokenType.DOT:
            schema = folded(tokens[i - 3], dialect)
        before = i - 2 if schema is None else i - 4
        if dialect == "mysql" and (
            (before >= 0 and _table_word(tokens[before])) or _columns_of_a_cte(tokens, i)
        ):
            continue
        called = folded(name, dialect)
        if (
            dialect == "postgresql"
            and schema is None
            and name.token_type is not TokenType.IDENTIFIER
            and called in PG_GRAMMAR
        ):
            continue  # the grammar's own construct, or a call it names in pg_catalog
        calls.append((schema, called))
    return tuple(sorted(set(calls), key=lambda c: (c[0] or "", c[1])))


def _columns_of_a_cte(tokens: Sequence[Any], opening: int) -> bool:
    """Whether the "(" at `opening` lists a common table expression's columns:
    `WITH RECURSIVE r(a, b) AS (...)`, `..., s(c) AS (...)`. No call is followed by
    AS and "("."""
    depth = 0
    for j in range(opening, len(tokens)):
        kind = tokens[j].token_type
        depth += (kind is TokenType.L_PAREN) - (kind is TokenType.R_PAREN)
        if depth == 0:
            after = tokens[j + 1 : j + 3]
            return (
                len(after) == 2
                and after[0].token_type is TokenType.ALIAS
                and after[1].token_type is TokenType.L_PAREN
            )
    return False


def _table_word(token: Any) -> bool:
    return token.token_type not in (TokenType.IDENTIFIER, TokenType.STRING) and (
        token.text.lower() in _MYSQL_TABLE_WORDS
    )


# The schema of a call written in attribute notation: `x.name` calls name(x) when x has
# no column `name`, so every last name of a dotted chain may be a one-argument call.
ATTRIBUTE = "."


def _attributes(tokens: Sequence[Any]) -> list[Call]:
    found: list[Call] = []
    for i in range(1, len(tokens)):
        name = tokens[i]
        if tokens[i - 1].token_type is not TokenType.DOT or name.token_type in NOT_NAMES:
            continue
        after = tokens[i + 1].token_type if i + 1 < len(tokens) else None
        if after in (TokenType.DOT, TokenType.L_PAREN) or not _is_word(name.text):
            continue
        if name.token_type is TokenType.STAR:
            continue
        found.append((ATTRIBUTE, folded(name, "postgresql")))
    return found


def _is_word(text: str) -> bool:
    return bool(text) and not any(ch in text for ch in "()")


_UNQUOTED_NAME = re.compile(r"[\w$]+")


def _punctuation(token: Any) -> bool:
    """A comma or an operator before "(" (`x, (SELECT ...)`, `= (1)`): no name. A quoted
    name may hold any character."""
    return token.token_type not in (TokenType.IDENTIFIER, TokenType.STRING) and not (
        _UNQUOTED_NAME.fullmatch(token.text)
    )


def may_name(token: Any, sql: str, dialect: str) -> bool:
    """Whether the token may name an object: not a number or a parameter, nor a string,
    except MySQL's double-quoted one, which names what it quotes under the sql_mode
    ANSI_QUOTES (`SELECT * FROM "v"`, `db."f"()`), a mode the server may be in."""
    if token.token_type not in NOT_NAMES:
        return True
    return (
        dialect == "mysql"
        and token.token_type is TokenType.STRING
        and sql[token.start : token.start + 1] == '"'
    )


# PostgreSQL folds only the ASCII letters of an unquoted name (in UTF-8 databases): `Äw`
# names the function "Äw", which Python's lower() would have looked up as "äw".
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def folded(token: Any, dialect: str) -> str:
    if dialect == "postgresql":
        if token.token_type is TokenType.IDENTIFIER:
            return str(token.text)  # a quoted name keeps its case
        return str(token.text).translate(_ASCII_LOWER)
    return str(token.text).lower()


def writing_calls(
    calls: Sequence[Call],
    dialect: str,
    cursor: Any,
    trusted: Sequence[str] = (),
    users_only: bool = False,
) -> dict[Call, str]:
    """The calls that may write, named as in the statement, each with what is said of
    it beyond its name ("", or UNSEEN); asked of the server's catalog on a second cursor
    of the same connection (so not through the guard). `trusted`: the user-defined
    functions the site vouches only read; `users_only`: of those, only the ones a user
    defined (PostgreSQL's own volatile functions left out; MySQL's that may write are
    all a user's)."""
    if not calls:
        return {}
    lookup = cursor.connection.cursor()
    try:
        if dialect == "postgresql":
            return dict.fromkeys(_postgresql(calls, lookup, trusted, users_only), "")
        if dialect == "mysql":
            return _mysql(calls, lookup, trusted)
        return {}
    finally:
        lookup.close()


def user_written_calls(
    statements: Iterable[str],
    dialect: str,
    cursor: Any,
    trusted: Sequence[str],
    known: dict[Call, str | None] | None = None,
) -> dict[Call, str]:
    """The user-defined functions, not trusted, the statements call (each once, in the
    order first called), as writing_calls says them: code the server runs that no
    parser sees. `known` keeps each answer (None: it only reads), so a run looks a
    function up once."""
    calls = list(dict.fromkeys(c for sql in statements for c in called_functions(sql, dialect)))
    known = {} if known is None else known
    unknown = [c for c in calls if c not in known]
    if unknown:
        found = writing_calls(unknown, dialect, cursor, trusted, users_only=True)
        known.update({c: found.get(c) for c in unknown})
    return {c: said for c in calls if (said := known[c]) is not None}


def shown(call: Call) -> str:
    if call[0] == ATTRIBUTE:
        return f"{call[1]} (called as x.{call[1]})"
    return f"{call[0]}.{call[1]}" if call[0] else call[1]


def called_said(calls: dict[Call, str]) -> str:
    """The calls as a sentence names them: `fw(), db.pk.pf()`."""
    return ", ".join(f"{shown(call)}(){note}" for call, note in calls.items())


def vouched_for(schema: str | None, name: str, trusted: Iterable[str], fold: bool) -> bool:
    """Whether a target's trusted_functions names the function (`schema.name`, or `name`
    for any schema); `fold`: names compare without case (MySQL/MariaDB)."""
    names = {name, f"{schema}.{name}"} if schema else {name}
    vouched = set(trusted)
    if fold:
        names, vouched = {n.lower() for n in names}, {t.lower() for t in vouched}
    return bool(names & vouched)


def trust_parameters(trusted: Sequence[str]) -> dict[str, list[str]]:
    """PG_MAY_WRITE's parameters for a target's trusted_functions (`schema.name` or
    `name`), and the catalog's functions it counts that run what they are given."""
    qualified = [name.split(".", 1) for name in trusted if "." in name]
    return {
        "runs_given": sorted(RUNS_WHAT_IT_IS_GIVEN),
        "trusted_any": [name for name in trusted if "." not in name],
        "trusted_schemas": [schema for schema, _ in qualified],
        "trusted_names": [name for _, name in qualified],
    }


# A function that may write, as SQL over pg_proc `p` (its namespace `n`): volatile, or an
# aggregate (or window function) with a volatile support function. PG_TRUSTED says where
# PostgreSQL or a trusted extension defines it, for the READ_ONLY_VOLATILE exceptions.
# A user-defined function (see the module's docstring) counts whatever it declares,
# unless trusted (trust_parameters: bound as name arrays, compared name to name, so no
# operator a database defines is chosen over the catalog's).
PG_USER_DEFINED = (
    f"(n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT {pg_extension_code()}"
    f" AND NOT {pg_type_part()})"
)
PG_TRUSTED_BY_SITE = (
    "(p.proname = ANY(%(trusted_any)s::pg_catalog.name[]) OR EXISTS ("
    " SELECT 1 FROM ROWS FROM (pg_catalog.unnest(%(trusted_schemas)s::pg_catalog.name[]),"
    " pg_catalog.unnest(%(trusted_names)s::pg_catalog.name[])) AS t(s, f)"
    " WHERE t.s = n.nspname AND t.f = p.proname))"
)
PG_MAY_WRITE = (
    "((p.provolatile = 'v' OR EXISTS ("
    " SELECT 1 FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc s"
    " ON s.oid OPERATOR(pg_catalog.=) ANY(ARRAY["
    " a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn,"
    " a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn]::pg_catalog.oid[])"
    f" WHERE a.aggfnoid::pg_catalog.oid = p.oid AND s.provolatile = 'v') OR {PG_USER_DEFINED}"
    f" OR {pg_catalog_function('%(runs_given)s::pg_catalog.name[]')})"
    f" AND NOT ({PG_USER_DEFINED} AND {PG_TRUSTED_BY_SITE}))"
)
PG_TRUSTED = (
    "(n.nspname = 'pg_catalog' OR (EXISTS ("
    " SELECT 1 FROM pg_catalog.pg_depend d"
    " JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid"
    " WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass"
    " AND d.objid = p.oid"
    f" AND d.deptype = 'e' AND e.extname = ANY(%(extensions)s)) AND {pg_extension_code()}))"
)


def _postgresql(
    calls: Sequence[Call], lookup: Any, trusted: Sequence[str], users_only: bool = False
) -> list[Call]:
    # Every function the name could resolve to: in the schema it names, or in any schema
    # of the search path. Overloads are not told apart: one that may write is enough.
    # A call in attribute notation takes one argument.
    lookup.execute(
        f"SELECT n.nspname, p.proname, {PG_MAY_WRITE}, {PG_TRUSTED}, "
        "n.nspname = ANY(pg_catalog.current_schemas(true)), "
        "p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 "
        "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        # Handlers (of sampling methods, access methods, triggers) take or return
        # `internal` and the like: SQL cannot call them.
        "WHERE p.proname = ANY(%(names)s) AND p.prorettype::regtype::text NOT IN ("
        "'internal', 'tsm_handler', 'trigger', 'event_trigger', 'language_handler', "
        "'fdw_handler', 'index_am_handler', 'table_am_handler')",
        {
            "extensions": list(READ_ONLY_EXTENSIONS),
            "names": sorted({n for _, n in calls}),
            **trust_parameters(trusted),
        },
    )
    found = lookup.fetchall()
    writing = []
    for schema, name in calls:
        for home, proname, volatile, trusted_home, on_path, one_argument in found:
            if proname != name or not volatile or (users_only and trusted_home):
                continue
            if schema == ATTRIBUTE:
                resolves_here = on_path and one_argument
            else:
                resolves_here = (home == schema) if schema is not None else on_path
            if resolves_here and not (name in READ_ONLY_VOLATILE and trusted_home):
                writing.append((schema, name))
                break
    return writing


def _mysql(calls: Sequence[Call], lookup: Any, trusted: Sequence[str]) -> dict[Call, str]:
    # MariaDB does not hold a stored function to its READS SQL DATA: any may write, and
    # so may what the login cannot see (mysqlcalls.py). A name alone calls a function of
    # the session's database, or a loadable function, which belongs to none.
    routines = mysql_routines(lookup, calls)
    found: dict[Call, str] = {}
    for call in calls:
        runs = [
            run
            for run in routines.runs(call, routines.current)
            if not vouched_for(run.schema, run.name, trusted, fold=True)
        ]
        if runs:
            found[call] = UNSEEN if all(run.unseen for run in runs) else ""
    return found
