"""analyze_table_fragmentation on MySQL and MariaDB: InnoDB's DATA_FREE against the
table's size; and when a table is worth rebuilding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.handlers import Handler
from aishell.handlers.mysql.catalog import TABLE, free_percent, recent_table_row
from aishell.handlers.shared import shared_step
from aishell.tool.context import ToolContext


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row = recent_table_row(ctx, params["table"])
    threshold = params.get("fragmentation_threshold", 30)
    percent = free_percent(row)
    return {
        "table": params["table"],
        "method": "data_free",
        "engine": row["engine"],
        "fragmentation_percent": percent,
        "free_space_percent": percent,
        "size_bytes": row["data_bytes"] + row["index_bytes"],
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


def rebuild_reason(params: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    threshold = params.get("fragmentation_threshold", 30)
    percent = free_percent(row)
    pages = (row["data_bytes"] + row["index_bytes"]) // 16384
    if pages < params.get("min_pages", 8):
        return None
    if percent >= threshold:
        return f"{percent}% of its space is free"
    return None
