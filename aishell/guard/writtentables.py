"""Which tables a statement writes, as the parser reads it: the tables it deletes from,
updates (with the columns it sets), inserts into or truncates, a data-modifying CTE's
too, and each table of MySQL's multi-table DELETE and UPDATE. What those writes do
beyond the rows they name is writereach.py's part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

import sqlglot
from sqlglot import exp

from aishell.guard.sqlcheck import SQLGLOT_DIALECT


class Write(NamedTuple):
    """One table a statement (or a cascade) writes: DELETE, UPDATE, INSERT or TRUNCATE.
    columns: the columns an UPDATE sets, as the catalog names them (None: any of them,
    when the statement does not say); cascade: a TRUNCATE ... CASCADE; defaults: an
    UPDATE that sets its columns to their defaults (a foreign key's SET DEFAULT), which
    evaluates them."""

    event: str
    schema: str | None
    table: str
    columns: frozenset[str] | None = None
    cascade: bool = False
    defaults: bool = False


# Only a statement with one of these words can write rows: the others (VACUUM, ANALYZE,
# REINDEX, a SELECT) are not parsed, as a step per table sends thousands of them.
_WRITES_ROWS = re.compile(r"\b(?:DELETE|UPDATE|INSERT|MERGE|REPLACE|TRUNCATE)\b", re.IGNORECASE)
_REPLACE = re.compile(
    r"^\s*REPLACE\s+(?:(?:LOW_PRIORITY|DELAYED)\s+)?(?:INTO\s+)?"
    r"(?:(`(?:[^`]|``)+`|\w+)\s*\.\s*)?(`(?:[^`]|``)+`|\w+)",
    re.IGNORECASE,
)
# Rendered statements hold :name placeholders for the values bound when they run.
_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=1024)
def written(sql: str, dialect: str) -> tuple[Write, ...]:
    """Each table a statement deletes from, updates, inserts into or truncates (a
    data-modifying CTE's too, and every table of MySQL's multi-table DELETE and UPDATE),
    by event; nothing for a statement the parser cannot read (the guard counts that as a
    write of its own, and the tool's risk says so)."""
    if not _WRITES_ROWS.search(sql):
        return ()
    try:
        tree = sqlglot.parse_one(_PLACEHOLDER.sub("NULL", sql), read=SQLGLOT_DIALECT[dialect])
    except sqlglot.errors.SqlglotError:
        return ()
    if isinstance(tree, exp.Command):
        return _replaced(sql)
    found: list[Write] = []
    for node in tree.find_all(exp.Delete, exp.Update, exp.Insert, exp.Merge, exp.TruncateTable):
        found.extend(_writes_of(node, dialect))
    return tuple(dict.fromkeys(found))


def _writes_of(node: exp.Expression, dialect: str) -> Iterator[Write]:
    if isinstance(node, exp.TruncateTable):
        cascade = str(node.args.get("option") or "").upper() == "CASCADE"
        for table in node.expressions:
            if (named := table_name(table, dialect)) is not None:
                yield Write("TRUNCATE", *named, cascade=cascade)
        return
    target = node.this
    if isinstance(target, exp.Schema):  # INSERT INTO t (columns)
        target = target.this
    if isinstance(node, exp.Update):
        yield from _updated(node, dialect)
        return
    if isinstance(node, exp.Delete):
        yield from _deleted(node, dialect)
        return
    named = table_name(target, dialect)
    if named is None:
        return
    if isinstance(node, exp.Merge):
        # Which columns its WHEN MATCHED arms set is not read: any of them.
        yield from (Write(event, *named) for event in ("INSERT", "UPDATE", "DELETE"))
        return
    yield Write("INSERT", *named)
    conflict = node.args.get("conflict")
    if conflict is not None and "UPDATE" in str(conflict.args.get("action") or ""):
        # ON CONFLICT DO UPDATE SET, ON DUPLICATE KEY UPDATE: an update of its own table.
        yield Write("UPDATE", *named, _set_columns(conflict.expressions, dialect))


def _joined(target: exp.Expression | None) -> list[exp.Table]:
    """The table a DELETE or UPDATE names and those MySQL joins to it (its multi-table
    forms write to any of them)."""
    if not isinstance(target, exp.Table):
        return []
    joined = [j.this for j in target.args.get("joins") or [] if isinstance(j.this, exp.Table)]
    return [target, *joined]


def _by_reference(tables: list[exp.Table]) -> dict[str, exp.Table]:
    """The tables by the names a column or a DELETE's list may call them: alias or name."""
    found: dict[str, exp.Table] = {}
    for table in tables:
        found.setdefault(table.name, table)
        if table.alias:
            found[table.alias] = table
    return found


def _deleted(node: exp.Delete, dialect: str) -> Iterator[Write]:
    tables = _joined(node.this)
    listed = node.args.get("tables")  # MySQL: DELETE a, b FROM a JOIN b ...
    if not listed:
        targets = tables[:1]
    else:
        references = _by_reference(tables)
        targets = [references.get(t.name, t) for t in listed if isinstance(t, exp.Table)]
    for table in targets:
        if (named := table_name(table, dialect)) is not None:
            yield Write("DELETE", *named)


def _updated(node: exp.Update, dialect: str) -> Iterator[Write]:
    """The tables an UPDATE sets columns of, with those columns. A column a multi-table
    UPDATE does not qualify is counted for each of its tables."""
    tables = _joined(node.this)
    if not tables:
        return
    references = _by_reference(tables)
    # Per table (by id): the columns set, None once one of them cannot be told.
    columns: dict[int, set[str] | None] = {}
    for assigned in _assigned(node.expressions):
        owners = tables
        if assigned is not None and assigned.table:
            owner = references.get(assigned.table)
            owners = [owner] if owner is not None else tables
        for owner in owners:
            found = columns.setdefault(id(owner), set())
            if assigned is None or found is None:
                columns[id(owner)] = None
            else:
                found.add(_column(assigned.this, dialect))
    if not columns:  # no SET the parser could read: any column of the table named
        columns[id(tables[0])] = None
    for table in tables:
        if id(table) in columns and (named := table_name(table, dialect)) is not None:
            found = columns[id(table)]
            yield Write("UPDATE", *named, None if found is None else frozenset(found))


def _assigned(expressions: Iterable[exp.Expression]) -> Iterator[exp.Column | None]:
    """The columns of SET a = 1, (b, c) = (...); None for one it cannot tell."""
    for assignment in expressions:
        left = assignment.this if isinstance(assignment, exp.EQ) else None
        parts = left.expressions if isinstance(left, exp.Tuple) else [left]
        for part in parts:
            yield part if isinstance(part, exp.Column) else None


def _set_columns(expressions: Iterable[exp.Expression], dialect: str) -> frozenset[str] | None:
    names: set[str] = set()
    for assigned in _assigned(expressions):
        if assigned is None:
            return None
        names.add(_column(assigned.this, dialect))
    return frozenset(names) if names else None


def table_name(table: exp.Expression | None, dialect: str) -> tuple[str | None, str] | None:
    """(schema, table) as the catalog holds them; None for what is not a named table."""
    if not isinstance(table, exp.Table):
        return None
    name = _folded(table.this, dialect)
    return None if not name else (_folded(table.args.get("db"), dialect), name)


def _folded(identifier: exp.Expression | None, dialect: str) -> str | None:
    """A name as the catalog holds it: PostgreSQL folds an unquoted one to lower case
    (MariaDB's and SQLite's catalogs are asked without regard to case)."""
    if not isinstance(identifier, exp.Identifier):
        return None
    name = identifier.name
    return name.lower() if dialect == "postgresql" and not identifier.quoted else name


def _column(identifier: exp.Expression, dialect: str) -> str:
    """A column's name as compared with the catalog's: PostgreSQL's exactly, the others'
    (which ignore case) in lower case."""
    name = _folded(identifier, dialect) or ""
    return name if dialect == "postgresql" else name.lower()


def _replaced(sql: str) -> tuple[Write, ...]:
    """MySQL's REPLACE, which the parser reads as a command: it inserts, and deletes the
    row it replaces."""
    match = _REPLACE.match(sql)
    if match is None:
        return ()
    schema, table = (
        name[1:-1].replace("``", "`") if name and name.startswith("`") else name
        for name in match.groups()
    )
    assert table is not None
    return (Write("INSERT", schema, table), Write("DELETE", schema, table))


def view_bases(definition: str) -> list[tuple[str | None, str]] | None:
    """The tables a MySQL view's definition reads (the one an updatable view writes
    among them); None for a definition the parser cannot read."""
    try:
        tree = sqlglot.parse_one(definition, read="mysql")
    except sqlglot.errors.SqlglotError:
        return None
    found = (table_name(t, "mysql") for t in tree.find_all(exp.Table))
    return list(dict.fromkeys(f for f in found if f is not None))


def tables_named(sql: str, dialect: str) -> tuple[str, ...]:
    """Every table a statement names, read or written, as the catalog holds them (for
    naming who holds a lock it waited for); nothing for what the parser cannot read."""
    try:
        tree = sqlglot.parse_one(_PLACEHOLDER.sub("NULL", sql), read=SQLGLOT_DIALECT[dialect])
    except sqlglot.errors.SqlglotError:
        return ()
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    found = (table_name(t, dialect) for t in tree.find_all(exp.Table))
    return tuple(dict.fromkeys(n for _, n in filter(None, found) if n not in ctes))
