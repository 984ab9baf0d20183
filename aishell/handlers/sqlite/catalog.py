"""What the SQLite handlers measure of the file: its pages and free pages, and per b-tree
(from the dbstat virtual table, where the build has it) its pages, out-of-order leaves
and unused leaf space."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from aishell.errors import StepFailed
from aishell.sqltext import text
from aishell.targets.catalog import sqlite_name, sqlite_text_as_bytes


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


def btree_stats(conn: Connection, name: str) -> dict[str, Any]:
    """Pages, out-of-order leaves and unused leaf space of one table or index b-tree."""
    rows = conn.execute(
        text(
            "SELECT pageno, pagetype, unused, pgsize FROM dbstat WHERE name = :name ORDER BY path"
        ),
        {"name": name},
    ).all()
    leaves = [r for r in rows if r.pagetype == "leaf"]
    out_of_order = sum(1 for prev, cur in pairwise(leaves) if cur.pageno != prev.pageno + 1)
    leaf_bytes = sum(r.pgsize for r in leaves)
    unused = sum(r.unused for r in leaves)
    return {
        "pages": len(rows),
        "leaf_pages": len(leaves),
        "size_bytes": sum(r.pgsize for r in rows),
        "fragmentation_percent": percent(out_of_order, max(len(leaves) - 1, 0)),
        "free_space_percent": percent(unused, leaf_bytes),
        "unused_bytes": unused,
    }


TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"


def require_table(conn: Connection, table: str) -> None:
    """StepFailed when the table is not there: dbstat and pragma_index_list say nothing
    of a table dropped since the plan, which would read as a table of no pages."""
    if not conn.execute(text(TABLE_EXISTS), {"t": table}).first():
        raise StepFailed(f"no such table: {table} (dropped since the plan)")


def table_indexes(conn: Connection, table: str) -> list[str]:
    """A table's indexes; one whose name is not UTF-8 is left out (no statement names it)."""
    with sqlite_text_as_bytes(conn):
        rows = conn.execute(text("SELECT name FROM pragma_index_list(:t)"), {"t": table}).all()
    return sorted(n for n in (sqlite_name(r.name) for r in rows) if n is not None)


def percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0
