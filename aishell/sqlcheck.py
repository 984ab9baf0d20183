"""Decide from a SQL parser, not from keywords, whether a statement only reads.

Fail closed: anything the parser does not recognise as a plain query is a write.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

# Pragmas that only report; any other pragma, or any pragma with `=`, may change state.
_READ_PRAGMAS = frozenset(
    {
        "page_count",
        "page_size",
        "freelist_count",
        "integrity_check",
        "quick_check",
        "foreign_key_check",
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
        "journal_mode",
        "compile_options",
        "database_list",
        "auto_vacuum",
    }
)
_PRAGMA = re.compile(r"^\s*PRAGMA\s+(?:\"?\w+\"?\s*\.\s*)?(\w+)\s*(?P<arg>\(|=)?", re.IGNORECASE)
_WRITE_NODES: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Into,
    exp.TruncateTable,
)
_SQLGLOT_DIALECT = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}


def write_reason(sql: str, dialect: str) -> str | None:
    """None when every statement in `sql` only reads; otherwise why it may write."""
    pragma = _PRAGMA.match(sql)
    if pragma:
        name = pragma.group(1).lower()
        if name not in _READ_PRAGMAS:
            return f"PRAGMA {name} is not a known read-only pragma"
        if pragma.group("arg") == "=" or (name == "journal_mode" and pragma.group("arg")):
            return f"PRAGMA {name} with a value changes a setting"
        return None
    # Placeholders for quoted identifiers are rendered before parsing by the caller.
    try:
        statements = sqlglot.parse(sql, read=_SQLGLOT_DIALECT.get(dialect, dialect))
    except sqlglot.errors.ParseError as exc:
        return f"the SQL parser could not read it ({str(exc).splitlines()[0]})"
    for statement in statements:
        if statement is None:
            continue
        if not isinstance(statement, exp.Query):
            return f"{type(statement).__name__.upper()} is not a query"
        for node in statement.walk():
            if isinstance(node, _WRITE_NODES):
                return f"it contains a {type(node).__name__.upper()}"
    return None
