"""analyze_table_fragmentation on MySQL and MariaDB, and when a table is worth rebuilding.

What a rebuild gives back of an InnoDB table is its free extents (DATA_FREE) and the
unused room in its half-empty pages, which DATA_FREE does not see: a table whose rows
were mostly deleted keeps its pages. The pages' fill is estimated from what the rows
need, TABLE_ROWS times the average length of a sample of them (the first rows by the
table's key, each with InnoDB's per-record header), against DATA_LENGTH as a rebuild
would fill its pages (targets/catalog.py's mysql_reclaimable, which planning's urgency
uses too). Where the statistics are older than the table's file (catalog.on_disk), or
the engine keeps no such pages, DATA_FREE alone is measured.
"""

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
from aishell.sqltext import text
from aishell.targets.catalog import (
    FIXED_BYTES,
    RECORD_HEADER,
    ROW_ID_BYTES,
    VARIABLE_TYPES,
    mysql_reclaimable,
)
from aishell.tool.context import ToolContext

PAGE_BYTES = 16384
STALE_METHOD = (
    "data_free against the file's size: the table's statistics are older than its file "
    "(ANALYZE TABLE it for a closer figure)"
)
SAMPLE_ROWS = 1000
# The key of the sampled record length among a table's readings (tool/readings.py).
RECORD_READING = "record_bytes"
FILL_METHOD = (
    f"page fill: data_free, and the unused room of the pages, from TABLE_ROWS times the "
    f"average length of the first {SAMPLE_ROWS:,} rows against DATA_LENGTH + INDEX_LENGTH"
)
COLUMNS = """
SELECT COLUMN_NAME AS name, DATA_TYPE AS type, IS_NULLABLE AS nullable, EXTRA AS extra,
       COLUMN_KEY AS col_key
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION
"""
# The sample's query as the tool's catalog shows it: the query sums the bytes of each
# of the table's stored columns, each named.
SAMPLE = (
    f"SELECT avg(length(column_name)) FROM (SELECT * FROM {{table}} LIMIT {SAMPLE_ROWS}) AS sampled"
)


def record_bytes(ctx: ToolContext, table: str, row: Mapping[str, Any]) -> float | None:
    """The bytes an average record of this InnoDB table takes, from a sample of its
    first rows; None for other engines and for an empty table. A value of the types in
    FIXED_BYTES takes those bytes; another, its LENGTH() (strings and binaries exactly;
    numbers as text, a little over)."""
    if (row.get("engine") or "").lower() != "innodb" or not row["row_count"]:
        return None
    conn = ctx.connection
    stored = [
        c
        for c in conn.execute(text(COLUMNS), {"t": table}).mappings()
        if "VIRTUAL" not in str(c["extra"]).upper()
    ]
    if not stored:
        return None
    parts = [
        f"{FIXED_BYTES[str(c['type']).lower()]}"
        if str(c["type"]).lower() in FIXED_BYTES
        else f"coalesce(length({ctx.quote(str(c['name']))}), 0)"
        for c in stored
    ]
    sample = (
        f"SELECT avg({' + '.join(parts)}) FROM "
        f"(SELECT * FROM {ctx.quote(table)} LIMIT {SAMPLE_ROWS}) AS sampled"
    )
    average = conn.execute(text(sample)).scalar()
    if average is None:
        return None
    overhead = RECORD_HEADER + sum(1 for c in stored if str(c["type"]).lower() in VARIABLE_TYPES)
    overhead += (sum(1 for c in stored if c["nullable"] == "YES") + 7) // 8
    if not any(c["col_key"] == "PRI" for c in stored):
        overhead += ROW_ID_BYTES
    return float(average) + overhead


def reclaimable(
    row: Mapping[str, Any], total: int | None = None, record: float | None = None
) -> dict[str, Any]:
    """What a rebuild would give back: {bytes, size_bytes, percent, method}. `total`:
    the table's file size where its statistics are older than it (catalog.on_disk);
    `record`: record_bytes, where known."""
    if total is not None:
        return {
            "bytes": row["free_bytes"],
            "size_bytes": total,
            "percent": free_percent(row, total),
            "method": STALE_METHOD,
        }
    size = row["data_bytes"] + row["index_bytes"] + row["free_bytes"]
    if record is None or not row["data_bytes"]:
        return {
            "bytes": row["free_bytes"],
            "size_bytes": size,
            "percent": free_percent(row),
            "method": "data_free",
        }
    free = mysql_reclaimable(row, record)
    percent = round(100.0 * free / size, 2) if size else 0.0
    return {"bytes": free, "size_bytes": size, "percent": percent, "method": FILL_METHOD}


def measure(ctx: ToolContext, table: str) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
    """The table's row, its file's size where its statistics are older (on_disk), and
    what a rebuild would give back (reclaimable), as earlier steps of the run just read
    them if they did (readings) and kept for the steps after."""
    row = recent_table_row(ctx, table)
    total, space = space_of(ctx, row, recent_table_size(ctx, table, row), keep=True)
    return row, total, space


def space_of(
    ctx: ToolContext, row: Mapping[str, Any], size: Mapping[str, Any] | None, *, keep: bool
) -> tuple[int | None, dict[str, Any]]:
    """The one measure of a table's free space that the health report, this step, the
    rebuild and optimize_table give and decide by: its file's size where its statistics
    are older (on_disk), and what a rebuild would give back (reclaimable, its pages' fill
    from a sample where the statistics are fresh). `keep`: the sample is kept for the
    steps after (a report over every table keeps none: a table dropped or changed before
    a later step is then read again)."""
    table = str(row["name"])
    total = on_disk(row, size)
    record = None
    if total is None:
        if keep:  # kept in a tuple: a None is a reading too
            record = ctx.table_readings.get(
                table, RECORD_READING, lambda: (record_bytes(ctx, table, row),)
            )[0]
        else:
            record = record_bytes(ctx, table, row)
    return total, reclaimable(row, total, record)


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row, _, space = measure(ctx, params["table"])
    threshold = params.get("fragmentation_threshold", 30)
    percent = space["percent"]
    return {
        "table": params["table"],
        "method": space["method"],
        "engine": row["engine"],
        "fragmentation_percent": percent,
        "free_space_percent": percent,
        "size_bytes": space["size_bytes"],
        "data_free_bytes": row["free_bytes"],
        "indexes": [],
        "estimated_benefit_bytes": space["bytes"],
        "recommendation": (
            f"rebuild (ALTER TABLE ... FORCE) to return about {space['bytes']:,} bytes"
            if percent >= threshold
            else "No optimization needed"
        ),
    }


analyze_table_fragmentation = shared_step(
    # It reads: a resumed step reads its tables again.
    Handler(
        sql_templates=(TABLE, COLUMNS, SAMPLE),
        run_fn=_fragmentation,
        changes_tables=False,
    ),
    "the fragmentation analysis",
)


def rebuild_reason(
    params: Mapping[str, Any],
    row: Mapping[str, Any],
    total: int | None = None,
    space: Mapping[str, Any] | None = None,
) -> str | None:
    """Why the table is worth rebuilding, None when it is not (see not_rebuilt_because);
    `total`: its bytes on disk where its file was read (catalog.on_disk); `space`: what
    measure found a rebuild would give back (else reclaimable without a sample: its
    DATA_FREE alone)."""
    if _pages(row, total) < params.get("min_pages", 8):
        return None
    space = space or reclaimable(row, total)
    if space["percent"] >= params.get("fragmentation_threshold", 30):
        return f"about {space['percent']}% of its space would be given back"
    return None


def not_rebuilt_because(
    params: Mapping[str, Any],
    row: Mapping[str, Any],
    total: int | None = None,
    space: Mapping[str, Any] | None = None,
) -> str:
    """Why rebuild_reason found the table not worth rebuilding."""
    pages, least = _pages(row, total), params.get("min_pages", 8)
    if pages < least:
        return f"{pages} pages of data: under min_pages ({least})"
    space = space or reclaimable(row, total)
    return f"about {space['percent']}% free: under the threshold"


def _pages(row: Mapping[str, Any], total: int | None) -> int:
    """The table's pages of data and indexes (its free space left out)."""
    used = row["data_bytes"] + row["index_bytes"] if total is None else total - row["free_bytes"]
    return int(used) // PAGE_BYTES
