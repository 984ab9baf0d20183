"""Which statements only read the server's catalog (sizes, statistics, settings, grants):
a preview sums those up, and names every statement that touches a table (CHECK TABLE,
ANALYZE, VACUUM, OPTIMIZE, REINDEX, a count or a full read), which a DBA looks for."""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp

from aishell.guard.sqlcheck import SQLGLOT_DIALECT

# Schemas that hold the catalog, on every engine.
_CATALOG_SCHEMAS = frozenset(
    {"information_schema", "pg_catalog", "performance_schema", "mysql", "sys"}
)
# Relations read without a schema that are the catalog: PostgreSQL's pg_* views and
# tables, SQLite's schema table, statistics and dbstat, and its pragma functions.
_CATALOG_NAME = re.compile(
    r"^(pg_\w+|sqlite_(schema|master|stat\d)|dbstat|pragma_\w+)$", re.IGNORECASE
)
# Functions that read a table's pages, not the catalog: their statement is shown.
_TABLE_READERS = frozenset(
    {
        "pgstattuple",
        "pgstattuple_approx",
        "pgstatindex",
        "pgstatginindex",
        "pgstathashindex",
        "verify_heapam",
        "bt_index_check",
        "bt_index_parent_check",
    }
)
# PRAGMAs that read the file's header or schema only (integrity_check and
# foreign_key_check read the table, and are shown).
_CATALOG_PRAGMAS = re.compile(
    r"^\s*PRAGMA\s+(page_size|page_count|freelist_count|journal_mode|table_info|"
    r"table_xinfo|index_list|index_info|index_xinfo|foreign_key_list|compile_options|"
    r"auto_vacuum|user_version|schema_version|encoding)\b(?!\s*=)",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)")
# Commands no catalog read begins with (only a query, SHOW and a PRAGMA may be one): a
# plan of 10,000 tables renders 10,000 of each, known without finding their shape.
_MAINTENANCE = re.compile(
    r"\s*(VACUUM|ANALYZE|ANALYSE|REINDEX|CLUSTER|OPTIMIZE|ALTER|CHECK|REPAIR)\b", re.IGNORECASE
)


# A string literal (kept) or a quoted identifier (", `): what _shape reads.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`")


def is_catalog_read(sql: str, dialect: str) -> bool:
    """True when the statement reads only the catalog; anything the parser cannot read,
    and every comment a tool renders (what it decided), counts as worth showing. A plan
    of 10,000 tables shows 10,000 statements alike but for the table they name: each
    shape is parsed once."""
    if _MAINTENANCE.match(sql):
        return False  # a maintenance command touches its tables, whatever it names
    if all(line.lstrip().startswith("--") for line in sql.strip().splitlines()):
        return False  # a comment, or nothing: no shape to find
    return _shape_is_catalog_read(_shape(sql), dialect)


def _shape(sql: str) -> str:
    """The statement with each quoted identifier that can tell nothing (not a catalog
    name, and not also written unquoted) replaced by one that no statement has, the same
    identifier by the same one: a table's name does not change what is read."""
    bare = set(re.findall(r"\w+", _QUOTED.sub(" ", sql).lower()))
    names: dict[str, str] = {}

    def neutral(match: re.Match[str]) -> str:
        token = match.group(0)
        if token[0] == "'":
            return token
        name = token[1:-1].lower()
        if name in bare or name in _CATALOG_SCHEMAS or name in _TABLE_READERS:
            return token
        if _CATALOG_NAME.match(name):
            return token
        if name not in names:
            names[name] = f"aishell shape {len(names)}"
        return f"{token[0]}{names[name]}{token[-1]}"

    return _QUOTED.sub(neutral, sql)


@lru_cache(maxsize=4096)
def _shape_is_catalog_read(sql: str, dialect: str) -> bool:
    stripped = sql.strip()
    if not stripped or stripped.startswith("--"):
        return False
    if re.match(r"^SHOW\s", stripped, re.IGNORECASE):
        return True
    if stripped.upper().startswith("PRAGMA"):
        return bool(_CATALOG_PRAGMAS.match(stripped))
    try:
        tree = sqlglot.parse_one(_PLACEHOLDER.sub("NULL", stripped), read=SQLGLOT_DIALECT[dialect])
    except sqlglot.errors.SqlglotError:
        return False
    if not isinstance(tree, exp.Select | exp.Union | exp.With):
        return False
    named = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for func in tree.find_all(exp.Func):
        name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
        if name in _TABLE_READERS:
            return False
    return all(_catalog_relation(table, named) for table in tree.find_all(exp.Table))


def _catalog_relation(table: exp.Table, ctes: set[str]) -> bool:
    name = table.name.lower()
    if not name:  # a function in FROM (pragma_index_list(...)): judged by its name
        function = table.this
        name = function.name.lower() if isinstance(function, exp.Func) else ""
    if table.db.lower() in _CATALOG_SCHEMAS:
        return True
    return not table.db and (name in ctes or bool(_CATALOG_NAME.match(name)))
