"""What the SQLite handlers measure of the file: its pages and free pages, and per b-tree
(from the dbstat virtual table, where the build has it) its pages, out-of-order leaves
and unused leaf space."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import TextClause

from aishell.errors import StepFailed
from aishell.handlers import read_once_in_dry_run
from aishell.sqltext import text
from aishell.targets.catalog import (
    named_rows,
    sqlite_name,
    sqlite_reads_whole_file,
    sqlite_text_as_bytes,
)
from aishell.tool.context import ToolContext


def database_pages(conn: Connection) -> dict[str, int]:
    page_size = conn.execute(text("PRAGMA page_size")).scalar_one()
    page_count = conn.execute(text("PRAGMA page_count")).scalar_one()
    freelist = conn.execute(text("PRAGMA freelist_count")).scalar_one()
    return {
        "page_size": page_size,
        "page_count": page_count,
        "freelist_count": freelist,
        "size_bytes": page_size * page_count,
        "free_bytes": page_size * freelist,
    }


def database_size(conn: Connection) -> dict[str, Any]:
    """The file's size in pages, measured the same way before a run and after it."""
    pages = database_pages(conn)
    return {
        "size_bytes": pages["size_bytes"],
        "method": "page_count x page_size",
        "freelist_count": pages["freelist_count"],
    }


def dbstat_available(conn: Connection) -> bool:
    try:
        conn.execute(text("SELECT 1 FROM dbstat LIMIT 0")).all()
    except OperationalError:
        return False
    return True


BTREE = (
    "SELECT pageno, pagetype, unused, pgsize, ncell FROM dbstat WHERE name = :name ORDER BY path"
)
# A b-tree leaf page's header, in bytes: what no cell may use.
_LEAF_HEADER = 8
# A page of dbstat: (pageno, pagetype, unused, pgsize, ncell).
Page = tuple[int, str, int, int, int]


def btree_stats(conn: Connection, name: str) -> dict[str, Any]:
    """Pages, out-of-order leaves and unused leaf space of one table or index b-tree."""
    rows = conn.execute(text(BTREE), {"name": name}).all()
    return _stats([(r.pageno, r.pagetype, r.unused, r.pgsize, r.ncell) for r in rows])


def _stats(pages: Sequence[Page]) -> dict[str, Any]:
    """btree_stats of a b-tree's pages in path order. A leaf out of order is one that
    does not follow the one before (_next); its free space, what VACUUM gives back of its
    leaves (reclaimable_leaves); unused_bytes, all its leaves' unused room, which a page
    of rows too large to share it keeps however it is packed."""
    leaves = [p for p in pages if p[1] == "leaf"]
    between = {p[0] for p in pages if p[1] != "leaf"}
    out_of_order = sum(1 for prev, cur in pairwise(leaves) if not _next(prev[0], cur[0], between))
    leaf_bytes = sum(p[3] for p in leaves)
    reclaimable = reclaimable_leaves(leaves) * (leaves[0][3] if leaves else 0)
    return {
        "pages": len(pages),
        "leaf_pages": len(leaves),
        "size_bytes": sum(p[3] for p in pages),
        "fragmentation_percent": percent(out_of_order, max(len(leaves) - 1, 0)),
        "free_space_percent": percent(reclaimable, leaf_bytes),
        "unused_bytes": sum(p[2] for p in leaves),
        "reclaimable_bytes": reclaimable,
    }


def _next(before: int, leaf: int, between: set[int]) -> bool:
    """Whether a leaf follows the one before it in the file, past only the b-tree's own
    other pages (its overflow and interior pages, which VACUUM writes between them)."""
    if leaf <= before or leaf - before - 1 > len(between):
        return False
    return all(n in between for n in range(before + 1, leaf))


def reclaimable_leaves(leaves: Sequence[Page]) -> int:
    """The leaf pages a repacking (VACUUM, REINDEX) saves: the leaves' cells, at their
    average size with its cell pointer, as many to a page as fit whole, against the
    leaves there are. Room a cell does not fit in stays unused in every packing, so it
    is not counted; a b-tree keeps one page however empty."""
    cells = sum(p[4] for p in leaves)
    used = sum(p[3] - p[2] - _LEAF_HEADER for p in leaves)
    if not cells or used <= 0:
        return max(len(leaves) - 1, 0)
    per_page = max(1, int((leaves[0][3] - _LEAF_HEADER) // (used / cells)))
    return max(len(leaves) - -(-cells // per_page), 0)


TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"


def require_table(conn: Connection, table: str) -> None:
    """StepFailed when the table is not there: dbstat and pragma_index_list say nothing
    of a table dropped since the plan, which would read as a table of no pages."""
    if not conn.execute(text(TABLE_EXISTS), {"t": table}).first():
        raise StepFailed(f"no such table: {table} (dropped since the plan)")


# A virtual table (FTS5, R-Tree) has no b-tree of its own (rootpage 0): its module keeps
# its data, and SQLite's ANALYZE gathers no statistics for it.
_VIRTUAL = "SELECT name FROM sqlite_schema WHERE type = 'table' AND rootpage = 0"


def virtual_tables(conn: Connection) -> set[str]:
    """The database's virtual tables, by name."""
    return {str(r[0]) for r in conn.execute(text(_VIRTUAL))}


def table_indexes(conn: Connection, table: str) -> list[str]:
    """A table's indexes; one whose name is not UTF-8 is left out (no statement names it)."""
    with sqlite_text_as_bytes(conn):
        rows = conn.execute(text("SELECT name FROM pragma_index_list(:t)"), {"t": table}).all()
    return sorted(n for n in (sqlite_name(r.name) for r in rows) if n is not None)


# --- in a dry run or a preview -----------------------------------------------------------
# Nothing writes, so the file's pages are read once, and each table's b-trees with every
# other table the plan names, in one query each (aishell/tool/readings.py). A run, whose
# steps change the file, measures each step afresh.

# Each table the plan names with its indexes (a row without one for a table with none).
INDEXES_ALL = (
    "SELECT m.name AS tbl, p.name AS idx FROM sqlite_schema m "
    "LEFT JOIN pragma_index_list(m.name) p WHERE m.type = 'table'"
)
INDEXES_EACH = INDEXES_ALL + " AND m.name IN :names"
# The pages of those tables' b-trees and their indexes'.
BTREES_EACH = (
    "SELECT name, pageno, pagetype, unused, pgsize, ncell FROM dbstat WHERE name IN "
    "(SELECT name FROM sqlite_schema WHERE tbl_name IN :names) ORDER BY name, path"
)
# For many tables of a large schema the whole file's b-trees are read once, and those of
# the tables named kept (targets/catalog.py: sqlite_reads_whole_file).
BTREES_ALL = "SELECT name, pageno, pagetype, unused, pgsize, ncell FROM dbstat ORDER BY name, path"
OWNERS_ALL = "SELECT name, tbl_name FROM sqlite_schema"
OWNERS_EACH = OWNERS_ALL + " WHERE tbl_name IN :names"
# Bound values per query, well under SQLite's limit on them.
_CHUNK = 5000


@dataclass(frozen=True)
class Btrees:
    """A table's indexes, and (with dbstat) btree_stats of it and of each of them."""

    indexes: list[str]
    stats: dict[str, dict[str, Any]]

    def of(self, name: str) -> dict[str, Any]:
        return self.stats.get(name) or _stats([])


def pages_of(ctx: ToolContext) -> dict[str, int]:
    """database_pages: once in a dry run or a preview, else now."""
    return read_once_in_dry_run(ctx, "sqlite pages", lambda: database_pages(ctx.connection))


def has_dbstat(ctx: ToolContext) -> bool:
    return read_once_in_dry_run(ctx, "sqlite dbstat", lambda: dbstat_available(ctx.connection))


def btrees(ctx: ToolContext, table: str) -> Btrees | None:
    """In a dry run or a preview, the table's b-trees as read with the plan's other
    tables (StepFailed when it is not there); else None: the caller reads them now."""
    if not ctx.dry_run:
        return None
    return ctx.table_readings.get_each(
        table, "sqlite btrees", lambda: _btrees_alone(ctx, table), lambda n: _btrees(ctx, n)
    )


def _btrees_alone(ctx: ToolContext, table: str) -> Btrees:
    conn = ctx.connection
    require_table(conn, table)
    indexes = table_indexes(conn, table)
    if not has_dbstat(ctx):
        return Btrees(indexes, {})
    return Btrees(indexes, {n: btree_stats(conn, n) for n in [table, *indexes]})


def _btrees(ctx: ToolContext, names: Sequence[str]) -> dict[str, Btrees]:
    conn = ctx.connection
    indexes: dict[str, list[str]] = {}
    pages: dict[str, list[Page]] = {}
    dbstat = has_dbstat(ctx)
    with sqlite_text_as_bytes(conn):
        whole = dbstat and sqlite_reads_whole_file(conn, len(names))
        for r in named_rows(conn, INDEXES_EACH, INDEXES_ALL, names, _name_in(0)):
            table, index = sqlite_name(r.tbl), sqlite_name(r.idx)
            if table is not None:
                indexes.setdefault(table, [])
                if index is not None:
                    indexes[table].append(index)
        if dbstat and not whole:
            for start in range(0, len(names), _CHUNK):
                chunk = {"names": list(names[start : start + _CHUNK])}
                _keep_pages(conn.execute(_expanding(BTREES_EACH), chunk), pages, None)
        if dbstat and whole:
            owned = _owned(conn, names)
            _keep_pages(conn.execute(text(BTREES_ALL)), pages, owned)
    found = {}
    for table, of_table in indexes.items():
        trees = [table, *of_table]
        stats = {n: _stats(pages.get(n, [])) for n in trees} if dbstat else {}
        found[table] = Btrees(sorted(of_table), stats)
    return found


def _owned(conn: Connection, names: Sequence[str]) -> set[str]:
    """The b-trees (and triggers) of these tables, by name."""
    owned: set[str] = set()
    for r in named_rows(conn, OWNERS_EACH, OWNERS_ALL, names, _name_in(1)):
        name = sqlite_name(r.name)
        if name is not None:
            owned.add(name)
    return owned


def _name_in(column: int) -> Callable[[Any], str | None]:
    """A schema row's table name, read under sqlite_text_as_bytes, from this column."""
    return lambda row: sqlite_name(row[column])


def _keep_pages(rows: Any, pages: dict[str, list[Page]], owned: set[str] | None) -> None:
    """dbstat's rows, by b-tree (those of `owned` alone, when given)."""
    for r in rows:
        name = sqlite_name(r.name)
        if name is not None and (owned is None or name in owned):
            kind = sqlite_name(r.pagetype) or ""
            pages.setdefault(name, []).append((r.pageno, kind, r.unused, r.pgsize, r.ncell))


def _expanding(sql: str) -> TextClause:
    return text(sql).bindparams(bindparam("names", expanding=True))


def percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0
