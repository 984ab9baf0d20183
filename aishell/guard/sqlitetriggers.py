"""The event an SQLite trigger runs on, read from its definition as SQLite reads it.

sqlite_schema keeps a trigger's text as it was written: comments, string literals and
quoted names may hold words that look like its event (`AFTER DELETE /* */ ON t WHEN 'x
INSERT ON' ...`, a trigger named "begin"). Its event is the first of INSERT, DELETE or
UPDATE in its code before its body, once comments and literals are set aside as SQLite
sets them aside; a definition that cannot be read so is taken to run on every event.

A connection's triggers are its file's and the TEMP ones a statement on it made, which
may be on the file's tables (CREATE TEMP TRIGGER ... ON main.t) and which sqlite_master
does not list: a pooled connection keeps them from one step to the next
(SQLITE_TRIGGERS).
"""

from __future__ import annotations

import re

from aishell.guard.lex import code_only

EVENTS = frozenset({"INSERT", "DELETE", "UPDATE"})
_EVENT = re.compile(r"\b(INSERT|DELETE|UPDATE)\b", re.IGNORECASE)
_TRIGGER = re.compile(r"\bTRIGGER\b", re.IGNORECASE)
_BODY = re.compile(r"\bBEGIN\b", re.IGNORECASE)

# Every trigger of the connection (name, tbl_name, sql): a subquery for a FROM clause.
SQLITE_TRIGGERS = (
    "(SELECT name, tbl_name, sql FROM main.sqlite_master WHERE type = 'trigger' "
    "UNION ALL SELECT name, tbl_name, sql FROM temp.sqlite_master WHERE type = 'trigger')"
)
# Either schema's version: a TEMP trigger made moves the second on, not the file's.
SQLITE_SCHEMA_VERSION = (
    "SELECT (SELECT schema_version FROM main.pragma_schema_version) * 4294967296 "
    "+ (SELECT schema_version FROM temp.pragma_schema_version)"
)


def trigger_events(sql: str | None) -> frozenset[str]:
    """The event the trigger defined by `sql` runs on (every event when unreadable)."""
    code = code_only(sql or "", "sqlite")
    if code is None:
        return EVENTS
    header = _BODY.split(code, maxsplit=1)[0]
    named = _TRIGGER.search(header)
    found = _EVENT.search(header, named.end()) if named is not None else None
    return frozenset({found.group(1).upper()}) if found is not None else EVENTS
