"""PostgreSQL's event triggers that a step's DDL fires.

An event trigger runs a function of the database's on CREATE, ALTER, DROP, COMMENT,
GRANT, REVOKE, SECURITY LABEL, IMPORT FOREIGN SCHEMA and REFRESH MATERIALIZED VIEW (and
REINDEX from PostgreSQL 17): whatever its code writes runs with the statement, though no
statement of the step names it. VACUUM, ANALYZE, CLUSTER, TRUNCATE and the statements
that change rows fire none. The step's estimate names each one that applies among
its `fires` (writereach.py), a reason for approval like a trigger; and, its function
being the database's own, in its `user_code` (executor/estimates.py), which makes the
step at least high risk unless the target trusts that function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy.engine import Connection

from aishell.guard.lex import without_comments
from aishell.guard.pgcode import pg_extension_code
from aishell.sqltext import text

_DDL = re.compile(
    r"^\s*(?:CREATE|ALTER|DROP|COMMENT|GRANT|REVOKE|SECURITY\s+LABEL|IMPORT\s+FOREIGN"
    r"|REFRESH\s+MATERIALIZED|(?P<reindex>REINDEX))\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(r'"(?:[^"]|"")*"|\w+|\S')
# Words between a command's verb and its object's kind that its tag leaves out.
_MODIFIERS = frozenset(
    [
        "OR",
        "REPLACE",
        "UNIQUE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "RECURSIVE",
        "TRUSTED",
        "PROCEDURAL",
        "CONCURRENTLY",
        "IF",
        "NOT",
        "EXISTS",
    ]
)
# Events that only some commands raise; the rest (ddl_command_start, ddl_command_end)
# every command above.
_ONLY_ON = {"sql_drop": ("DROP", "ALTER"), "table_rewrite": ("ALTER",)}
# With the function's schema and name, and whether it is the database's own (not the
# catalog's, not an installed extension's).
_ENABLED = (
    "SELECT e.evtname, e.evtevent, e.evtfoid::pg_catalog.regproc::text, e.evttags, n.nspname, "
    "p.proname, n.nspname NOT IN ('pg_catalog', 'information_schema') "
    f"AND NOT {pg_extension_code()} "
    "FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE e.evtenabled IN ('O', 'A') ORDER BY 1"
)


class Fired(NamedTuple):
    """An event trigger a statement fires: what the estimate says of it, and its
    function, (schema, name), when that is user-defined code (None: the catalog's or an
    extension's)."""

    said: str
    function: tuple[str, str] | None


def fired_event_triggers(conn: Connection, statements: Iterable[str]) -> list[Fired]:
    """The enabled event triggers the statements' commands fire, each once, with their
    functions; one catalog read, and only for DDL."""
    if conn.dialect.name != "postgresql":
        return []
    reindex_fires = (getattr(conn.dialect, "server_version_info", None) or (0,)) >= (17,)
    commands = []
    for sql in statements:
        # Comments as PostgreSQL ends them (nested ones whole), wherever they stand.
        sql = without_comments(sql, "postgresql")
        match = _DDL.match(sql)
        if match and (reindex_fires or not match["reindex"]):
            commands.append(_header(sql))
    if not commands:
        return []
    triggers = conn.execute(text(_ENABLED)).all()
    fired: dict[str, Fired] = {}
    for words in dict.fromkeys(commands):
        for name, event, function, tags, schema, proname, own in triggers:
            if event in _ONLY_ON and words[0] not in _ONLY_ON[event]:
                continue
            matched = [t for t in tags or [] if _in_order(t.upper().split(), words)]
            if tags and not matched:
                continue
            command = matched[0].upper() if matched else " ".join(words[:2])
            said = f"{command} fires event trigger {name} ({event}, runs {function})"
            fired.setdefault(said, Fired(said, (schema, proname) if own else None))
    return list(fired.values())


def _header(sql: str) -> tuple[str, ...]:
    """The statement's first words, in upper case, without the modifiers a command tag
    leaves out: ("CREATE", "INDEX", "T_V", "ON", ...)."""
    words = [t.upper() for t in _TOKEN.findall(sql)[:12]]
    return tuple(w for w in words if w not in _MODIFIERS)


def _in_order(tag: list[str], words: tuple[str, ...]) -> bool:
    """Whether the tag's words come in the statement's, in order: CREATE TABLE AS in
    CREATE TABLE x AS SELECT (a tag of CREATE TABLE counts it as well)."""
    rest = iter(words)
    return all(any(w == word for w in rest) for word in tag)
