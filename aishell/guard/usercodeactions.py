"""What a step's statements do to their tables, as the code of a table they run
(usercode.py) is keyed: ANALYZE, a rebuild (REINDEX, VACUUM FULL, CLUSTER, OPTIMIZE,
REPAIR), a VACUUM's cleanup of the indexes, ALTER TABLE, and the row writes' events
(writtentables.py), with which kinds of a table's code each action runs on each engine.
Read from the statement's words: maintenance statements are not parsed by sqlglot, as a
step per table sends thousands of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from aishell.dialects import family
from aishell.guard.lex import without_comments


class Action(NamedTuple):
    """What a statement does to one table: table None for every table (a bare
    ANALYZE); only_index: a REINDEX of that index only."""

    action: str
    schema: str | None
    table: str | None
    only_index: str | None = None


# Which kinds of code each action runs, per engine; an action is a row write's event or
# what a maintenance statement does to the table.
RUNS: dict[str, dict[str, frozenset[str]]] = {
    "postgresql": {
        "ANALYZE": frozenset({"index", "statistics", "column type"}),
        "REBUILD": frozenset({"index"}),
        # VACUUM without FULL: its cleanup of each index (METHODS says which run code).
        "VACUUM": frozenset({"index"}),
        # amcheck's heapallindexed: every row's index entry, expressions and predicate.
        "CHECK": frozenset({"index"}),
        "ALTER": frozenset({"index", "check", "default", "generated", "domain"}),
        # A partition key routes each row written, and prunes the partitions a
        # statement's conditions rule out (a DELETE's too).
        "INSERT": frozenset(
            {
                "trigger",
                "rule",
                "index",
                "default",
                "generated",
                "check",
                "domain",
                "policy",
                "partition key",
            }
        ),
        "UPDATE": frozenset(
            {"trigger", "rule", "index", "generated", "check", "domain", "policy", "partition key"}
        ),
        "DELETE": frozenset({"trigger", "rule", "policy", "partition key"}),
        "TRUNCATE": frozenset({"trigger"}),
        # A foreign key's ON DELETE / ON UPDATE SET DEFAULT sets its columns to their
        # defaults: the child's defaults are evaluated (MariaDB's InnoDB has no such
        # action; SQLite's defaults call no function of the file's).
        "SET DEFAULT": frozenset({"default"}),
    },
    "mysql": {
        "ANALYZE": frozenset({"generated"}),
        "REBUILD": frozenset({"generated", "check"}),
        "ALTER": frozenset({"generated", "check", "default"}),
        "INSERT": frozenset({"trigger", "generated", "default", "check"}),
        "UPDATE": frozenset({"trigger", "generated", "check"}),
        "DELETE": frozenset({"trigger"}),
    },
    "sqlite": {
        "INSERT": frozenset({"trigger"}),
        "UPDATE": frozenset({"trigger"}),
        "DELETE": frozenset({"trigger"}),
    },
}


# The index access methods whose code an action runs, where it is not every method's
# (usercode.Code.method): a VACUUM's cleanup summarizes each BRIN index's page ranges
# that rows filled since, evaluating its expressions and predicate and its operator
# class's functions for every row there, and merges a GIN index's pending entries
# into it, comparing them with its operator class's functions (extracted as the rows
# were written: its expressions are not evaluated again); the others' cleanup runs none.
METHODS: dict[str, frozenset[str]] = {
    "VACUUM": frozenset({"brin", "brin operator class", "gin operator class"})
}


# How an action is named in a sentence of user_code (others by their own word).
VERBS = {
    "REBUILD": "a rebuild",
    "ALTER": "ALTER TABLE",
    "CHECK": "amcheck's heapallindexed",
    "SET DEFAULT": "a foreign key's SET DEFAULT",
}


_TOKEN = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|\w+|\S')
_VERB = re.compile(
    r"^\s*(ANALYZE|ANALYSE|VACUUM|REINDEX|CLUSTER|OPTIMIZE|REPAIR|ALTER\s+TABLE)\b", re.IGNORECASE
)
# Words between the verb and the first name that say how, not what.
_OPTIONS = frozenset(
    [
        "VERBOSE",
        "FULL",
        "FREEZE",
        "ANALYZE",
        "ANALYSE",
        "TABLE",
        "TABLES",
        "CONCURRENTLY",
        "NO_WRITE_TO_BINLOG",
        "LOCAL",
        "ONLY",
        "IF",
        "EXISTS",
        "SKIP_LOCKED",
    ]
)


def maintenance_actions(statements: Iterable[str], dialect: str) -> Iterator[Action]:
    """What each maintenance statement does to its tables: ANALYZE (ANALYZE, VACUUM's
    ANALYZE option, MySQL's OPTIMIZE), REBUILD (REINDEX, VACUUM FULL, CLUSTER,
    OPTIMIZE, REPAIR), VACUUM (PostgreSQL's without FULL), ALTER (ALTER TABLE); table
    None for every table."""
    engine = family(dialect)
    for sql in statements:
        # Its comments where the server ends them (MariaDB's `#` too), wherever they
        # stand: none hides a verb or a name from the words read below.
        sql = without_comments(sql, engine)
        match = _VERB.match(sql)
        if match is None:
            continue
        verb = " ".join(match[1].upper().split())
        tokens = _TOKEN.findall(sql[match.end() :])
        options = _options(tokens)
        upper = {o.upper() for o in options}
        does = _does(verb, upper, dialect)
        if not does:
            continue
        index_only = verb == "REINDEX" and "INDEX" in upper
        names = list(_names(tokens[len(options) :], dialect))
        if verb == "REINDEX" and upper & {"SCHEMA", "DATABASE", "SYSTEM"}:
            names = []
        for action in does:
            if not names:
                yield Action(action, None, None)
            for schema, name in names:
                if index_only:
                    yield Action(action, None, None, name)
                else:
                    yield Action(action, schema, name)


def _does(verb: str, options: set[str], dialect: str) -> tuple[str, ...]:
    if verb in ("ANALYZE", "ANALYSE"):
        return ("ANALYZE",)
    if verb == "VACUUM":
        if dialect == "sqlite":
            return ("REBUILD",)
        # FULL rebuilds the table and its indexes; without it, VACUUM cleans them up.
        vacuums = "REBUILD" if "FULL" in options else "VACUUM"
        return (vacuums,) + (("ANALYZE",) if options & {"ANALYZE", "ANALYSE"} else ())
    if verb == "OPTIMIZE":
        return ("REBUILD", "ANALYZE")
    if verb == "ALTER TABLE":
        return ("ALTER",)
    return ("REBUILD",)


# The words _options takes: _OPTIONS and REINDEX's kinds (made once, not per token).
_LEADING_WORDS = _OPTIONS | {"INDEX", "SCHEMA", "DATABASE", "SYSTEM"}


def _options(tokens: list[str]) -> list[str]:
    """The leading tokens that are options: a parenthesised list, and the words of
    _OPTIONS (and REINDEX's INDEX/TABLE/SCHEMA/DATABASE/SYSTEM)."""
    taken: list[str] = []
    depth = 0
    for token in tokens:
        if (token == "(" and not taken) or depth:
            depth += {"(": 1, ")": -1}.get(token, 0)
            taken.append(token)
            continue
        if token.upper() in _LEADING_WORDS:
            taken.append(token)
            continue
        break
    return taken


# Words after a statement's names: what it does to them.
_AFTER_NAMES = frozenset({"USING", "FORCE", "ADD", "ALTER", "SET", "DROP", "RENAME", "ENGINE"})


def _names(tokens: list[str], dialect: str) -> Iterator[tuple[str | None, str]]:
    """(schema, name) of a list such as "s"."t" (a, b), u; a column list is skipped."""
    parts: list[str] = []
    depth = 0
    for token in tokens:
        if depth or token == "(":
            depth += {"(": 1, ")": -1}.get(token, 0)
            continue
        if token == ".":
            continue
        ends = token == ";" or token.upper() in _AFTER_NAMES
        if token == "," or ends:
            if parts:
                yield _named(parts, dialect)
            parts = []
            if ends:
                return
            continue
        parts.append(token)
    if parts:
        yield _named(parts, dialect)


def _named(parts: list[str], dialect: str) -> tuple[str | None, str]:
    names = [_unquoted(p, dialect) for p in parts[-2:]]
    return (names[0], names[1]) if len(names) == 2 else (None, names[0])


def _unquoted(token: str, dialect: str) -> str:
    if token[:1] in ('"', "`"):
        quote = token[0]
        return token[1:-1].replace(quote * 2, quote)
    if token[:1] == "[":
        return token[1:-1]
    return token.lower() if dialect == "postgresql" else token


def write_actions(writes: Iterable[Any]) -> Iterator[Action]:
    """The row writes (writtentables.Write) as actions; a foreign key's SET DEFAULT is
    also one that evaluates the columns' defaults."""
    for write in writes:
        yield Action(write.event, write.schema, write.table)
        if getattr(write, "defaults", False):
            yield Action("SET DEFAULT", write.schema, write.table)
