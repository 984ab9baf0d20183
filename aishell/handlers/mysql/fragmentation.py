"""analyze_table_fragmentation on MySQL and MariaDB: InnoDB's DATA_FREE against the
table's size (its file's where the statistics are too old to give it: catalog.on_disk);
and when a table is worth rebuilding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.handlers import Handler
from aishell.handlers.mysql.catalog import (
    TABLE,
    free_percent,
    on_disk,
    recent_table_row,
    recent_table_size,
)
from aishell.handlers.shared import shared_step
from aishell.tool.context import ToolContext

PAGE_BYTES = 16384
STALE_METHOD = (
    "data_free against the file's size: the table's statistics are older than its file "
    "(ANALYZE TABLE it for a closer figure)"
)


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row = recent_table_row(ctx, params["table"])
    total = on_disk(row, recent_table_size(ctx, params["table"], row))
    threshold = params.get("fragmentation_threshold", 30)
    percent = free_percent(row, total)
    return {
        "table": params["table"],
        "method": "data_free" if total is None else STALE_METHOD,
        "engine": row["engine"],
        "fragmentation_percent": percent,
        "free_space_percent": percent,
        "size_bytes": row["data_bytes"] + row["index_bytes"] if total is None else total,
        "data_free_bytes": row["free_bytes"],
        "indexes": [],
        "estimated_benefit_bytes": row["free_bytes"],
        "recommendation": (
            f"rebuild (ALTER TABLE ... FORCE) to return {row['free_bytes']:,} bytes"
            if percent >= threshold
            else "No optimization needed"
        ),
    }


analyze_table_fragmentation = shared_step(
    # It reads: a resumed step reads its tables again.
    Handler(sql_templates=(TABLE,), run_fn=_fragmentation, changes_tables=False),
    "the fragmentation analysis",
)


def rebuild_reason(
    params: Mapping[str, Any], row: Mapping[str, Any], total: int | None = None
) -> str | None:
    """Why the table is worth rebuilding, None when it is not (see not_rebuilt_because);
    `total`: its bytes on disk where its file was read (catalog.on_disk)."""
    if _pages(row, total) < params.get("min_pages", 8):
        return None
    percent = free_percent(row, total)
    if percent >= params.get("fragmentation_threshold", 30):
        return f"{percent}% of its space is free"
    return None


def not_rebuilt_because(
    params: Mapping[str, Any], row: Mapping[str, Any], total: int | None = None
) -> str:
    """Why rebuild_reason found the table not worth rebuilding."""
    pages, least = _pages(row, total), params.get("min_pages", 8)
    if pages < least:
        return f"{pages} pages of data: under min_pages ({least})"
    return f"{free_percent(row, total)}% free: under the threshold"


def _pages(row: Mapping[str, Any], total: int | None) -> int:
    """The table's pages of data and indexes (its free space left out)."""
    used = row["data_bytes"] + row["index_bytes"] if total is None else total - row["free_bytes"]
    return int(used) // PAGE_BYTES
