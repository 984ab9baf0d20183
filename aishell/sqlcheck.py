"""Decide from a SQL parser, not from keywords, whether a statement only reads.

Fail closed: anything the parser does not recognise as a plain query is a write.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import sqlglot
from sqlglot import exp

# The parser reads statements it has no grammar for as commands, which this module
# classifies itself; its warning about that is not for the person running aishell.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

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
SQLGLOT_DIALECT = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}
# Statements that are not queries but only read, per dialect.
_READ_COMMANDS = {
    "mysql": re.compile(r"^\s*(CHECK\s+TABLE|SHOW)\b", re.IGNORECASE),
    "postgresql": re.compile(r"^\s*SHOW\s+\w+\s*;?\s*$", re.IGNORECASE),
}
# Functions a SELECT can call that change something: a query that calls one writes.
_WRITING_FUNCTIONS = frozenset(
    {
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_advisory_lock",
        "pg_try_advisory_lock",
        "pg_advisory_xact_lock",
        "set_config",
        "nextval",
        "setval",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "dblink_exec",
        "pg_stat_reset",
        "get_lock",
        "release_lock",
        "load_file",
    }
)


@lru_cache(maxsize=4096)
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
    command = _READ_COMMANDS.get(dialect)
    if command is not None and command.match(sql) and ";" not in sql.strip().rstrip(";"):
        return None
    # Placeholders for quoted identifiers are rendered before parsing by the caller.
    try:
        statements = sqlglot.parse(sql, read=SQLGLOT_DIALECT.get(dialect, dialect))
    except sqlglot.errors.SqlglotError as exc:  # a statement it cannot even tokenize too
        return f"the SQL parser could not read it ({str(exc).splitlines()[0]})"
    for statement in statements:
        if statement is None:
            continue
        if not isinstance(statement, exp.Query):
            if isinstance(statement, exp.Command):
                what = str(statement.this).upper()
            elif isinstance(statement, exp.Alias | exp.Column):
                what = sql.split(None, 1)[0].upper()  # a command the parser does not know
            else:
                what = type(statement).__name__.upper()
            return f"{what} is not a query"
        for node in statement.walk():
            if isinstance(node, _WRITE_NODES):
                return f"it contains a {type(node).__name__.upper()}"
            if isinstance(node, exp.Func):
                name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
                if name in _WRITING_FUNCTIONS:
                    return f"it calls {name}(), which changes server state"
    return None
