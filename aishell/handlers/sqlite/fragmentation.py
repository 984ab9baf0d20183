"""analyze_table_fragmentation on SQLite, and when a b-tree is worth rebuilding.

Fragmentation comes from the dbstat virtual table: a b-tree's leaf pages read in key
order should sit at consecutive page numbers, past only the b-tree's own overflow and
interior pages, which VACUUM writes between them; every leaf that does not is a seek
(the share of such leaves is the "logical fragmentation" SQL Server and Ola
Hallengren's scripts act on). The free space a rebuild gives back is the leaf pages a
repacking saves (catalog.reclaimable_leaves), not every unused byte: room too small for
a row stays unused however the rows are packed. Without dbstat only database-wide free
pages are known. The file's free pages (its freelist) are the database's: each table's
estimated_benefit_bytes is what its own b-trees give back, and the freelist is given
apart (database_freelist), so that the tables' sum and the freelist add up to what
VACUUM gives back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.handlers import Handler
from aishell.handlers.shared import shared_step
from aishell.handlers.sqlite.catalog import (
    BTREE,
    TABLE_EXISTS,
    btree_stats,
    btrees,
    has_dbstat,
    pages_of,
    percent,
    require_table,
    table_indexes,
)
from aishell.tool.context import ToolContext


def needs_rebuild(stats: Mapping[str, Any], threshold: float, min_pages: int) -> str | None:
    """Why a b-tree should be rebuilt, or None."""
    if stats["leaf_pages"] < min_pages:
        return None
    if stats["fragmentation_percent"] >= threshold:
        return f"{stats['fragmentation_percent']}% of leaf pages out of order"
    if stats["free_space_percent"] >= threshold:
        return f"{stats['free_space_percent']}% of leaf space would be given back"
    return None


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    threshold = params.get("fragmentation_threshold", 30)
    pages = pages_of(ctx)
    freelist_percent = percent(pages["freelist_count"], pages["page_count"])
    # The file's free pages are the database's, not the table's: they are said once,
    # apart from the table's own figures (a step over many tables sums those).
    freelist = {
        "pages": pages["freelist_count"],
        "bytes": pages["free_bytes"],
        "percent": freelist_percent,
    }
    if not has_dbstat(ctx):
        return _freelist_only(table, freelist)
    trees = btrees(ctx, table)
    if trees is None:
        stats = btree_stats(conn, table)
        if not stats["pages"]:
            require_table(conn, table)
        names = table_indexes(conn, table)
    else:
        stats, names = trees.of(table), trees.indexes
    indexes = []
    for index in names:
        index_stats = btree_stats(conn, index) if trees is None else trees.of(index)
        indexes.append(
            {"index": index, **index_stats, "rebuild": needs_rebuild(index_stats, threshold, 1)}
        )
    to_rebuild = [i["index"] for i in indexes if i["rebuild"]]
    benefit = stats["reclaimable_bytes"] + sum(i["reclaimable_bytes"] for i in indexes)
    advice = []
    if to_rebuild:
        advice.append(f"REINDEX {', '.join(to_rebuild)}")
    if pages["freelist_count"] or needs_rebuild(stats, threshold, 1):
        advice.append("VACUUM to compact the file")
    return {
        "table": table,
        "method": "dbstat",
        **stats,
        "database_freelist_percent": freelist_percent,
        "database_freelist": freelist,
        "indexes": indexes,
        "estimated_benefit_bytes": benefit,
        "recommendation": "; ".join(advice) or "No optimization needed",
    }


def _freelist_only(table: str, freelist: Mapping[str, Any]) -> dict[str, Any]:
    """Without dbstat: the database's free pages, the table's own figures unknown."""
    return {
        "table": table,
        "method": "freelist",
        "fragmentation_percent": freelist["percent"],
        "free_space_percent": None,
        "database_freelist_percent": freelist["percent"],
        "database_freelist": freelist,
        "indexes": [],
        "estimated_benefit_bytes": None,
        "recommendation": (
            "This SQLite build has no dbstat table, so only database-wide free pages "
            "are known" + ("; VACUUM would reclaim them" if freelist["pages"] else "")
        ),
    }


analyze_table_fragmentation = shared_step(
    Handler(
        sql_templates=(
            TABLE_EXISTS,
            "PRAGMA page_size",
            "PRAGMA page_count",
            "PRAGMA freelist_count",
            "SELECT name FROM pragma_index_list(:t)",
            BTREE,
        ),
        run_fn=_fragmentation,
        changes_tables=False,  # it reads: a resumed step reads its tables again
    ),
    "the fragmentation analysis",
)
