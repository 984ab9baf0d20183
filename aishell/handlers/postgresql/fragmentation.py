"""analyze_table_fragmentation on PostgreSQL: bloat estimated first (pgstattuple_approx
where installed, else the catalog's statistics), and a full scan with pgstattuple or
pgstatindex only where the estimate reaches the threshold. The step's SQL shows each
full scan with its size and why; every output says how each figure was measured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.handlers import Handler, cached
from aishell.handlers.postgresql import estimates
from aishell.handlers.postgresql.catalog import PARTITIONED, run_partitioned
from aishell.handlers.shared import shared_step
from aishell.tool.context import ToolContext


def _measure(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The estimates, and which full scans they call for (shown before the step runs)."""
    threshold = params.get("fragmentation_threshold", 30)
    scans = estimates.scanners(ctx)
    table = estimates.recent_indexes(ctx, params["table"])
    oid, indexes = table.oid, table.indexes
    if table.partitioned:
        # Nothing to read: its rows are its partitions', measured as tables.
        parent = run_partitioned(ctx, [params["table"]])[params["table"]]
        return {"oid": oid, "partitioned": parent.described("measured"), "indexes": indexes}
    estimate = estimates.recent_table_estimate(ctx, params["table"], oid, scans)
    return {
        "oid": oid,
        "estimate": estimate,
        "table_scan": estimates.table_scan_reason(estimate, threshold, scans),
        "indexes": [(i, estimates.index_scan_reason(i, threshold, scans)) for i in indexes],
        "pgstattuple": scans.pgstattuple,
    }


def _plan(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return cached(ctx, f"fragmentation:{params['table']}", lambda: _measure(params, ctx))


def _index(
    ctx: ToolContext,
    table: str,
    index: Mapping[str, Any],
    why: str | None,
    threshold: float,
    pgstattuple: bool,
) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "index": index["name"],
        "bytes": index["bytes"],
        "valid": index["valid"],
        "estimated_free_percent": index["estimated_free_percent"],
    }
    if index.get("exclusion"):
        stats["exclusion"] = True
    if why is not None:
        return {**stats, "method": "pgstatindex", **estimates.recent_index_scan(ctx, table, index)}
    if not pgstattuple or index["method"] != "btree" or not index["valid"]:
        note = "not measured (pgstattuple is not installed, or not a valid B-tree index)"
    else:
        note = estimates.not_scanned(index, threshold)
    return {
        **stats,
        "method": note,
        "leaf_pages": index["pages"],
        "fragmentation_percent": None,
        "free_space_percent": None,
    }


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    threshold = params.get("fragmentation_threshold", 30)
    plan = _plan(params, ctx)
    if "partitioned" in plan:
        return _partitioned(table, plan)
    estimate = plan["estimate"]
    # scanned_percent: the share of the table's pages read.
    result: dict[str, Any] = {**estimate, "full_scan": False}
    if plan["table_scan"] is not None:
        measured = estimates.full_table_scan(conn, plan["oid"])
        result = {**measured, "scanned_percent": 100.0, "full_scan": True, "estimate": estimate}
    indexes = [
        _index(ctx, table, i, why, threshold, plan["pgstattuple"]) for i, why in plan["indexes"]
    ]
    wanted = [
        i
        for i in indexes
        if not i["valid"]
        or (i["fragmentation_percent"] or 0) >= threshold
        or (i["free_space_percent"] or 0) >= threshold
    ]
    to_rebuild = [i["index"] for i in wanted if not i.get("exclusion")]
    blocking = [i["index"] for i in wanted if i.get("exclusion")]
    advice = []
    if to_rebuild:
        advice.append(f"REINDEX CONCURRENTLY {', '.join(to_rebuild)}")
    if blocking:
        advice.append(
            f"REINDEX INDEX {', '.join(blocking)} in a quiet hour: an exclusion constraint's "
            "index, which no REINDEX CONCURRENTLY rebuilds (a plain REINDEX blocks writes)"
        )
    if result["fragmentation_percent"] is None:
        advice.append("not measured: ANALYZE the table (or install pgstattuple) to measure it")
    elif result["fragmentation_percent"] >= threshold:
        advice.append("VACUUM to make dead rows' space reusable (VACUUM FULL to shrink the file)")
    return {
        "table": table,
        **result,
        "indexes": indexes,
        "recommendation": "; ".join(advice) or "No optimization needed",
    }


def _partitioned(table: str, plan: Mapping[str, Any]) -> dict[str, Any]:
    """A partitioned table's output: it is one, and nothing of it was measured."""
    said = plan["partitioned"]
    return {
        "table": table,
        "partitioned": True,
        "method": f"not measured: {said}",
        "fragmentation_percent": None,
        "dead_tuple_percent": None,
        "free_space_percent": None,
        "size_bytes": 0,
        "scanned_percent": 0.0,
        "full_scan": False,
        "indexes": [
            {
                "index": i["name"],
                "bytes": 0,
                "valid": i["valid"],
                "partitioned": True,
                "method": f"not measured: {_PARTITIONED_INDEX}",
                "fragmentation_percent": None,
                "free_space_percent": None,
            }
            for i in plan["indexes"]
        ],
        "recommendation": f"No optimization of {table} itself: {said}",
    }


# What is said of a partitioned table's index.
_PARTITIONED_INDEX = (
    "a partitioned index, with no storage of its own: its partitions' indexes are "
    "measured with their tables"
)


def _fragmentation_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """The estimate, then each full scan it calls for, with what it reads and why."""
    plan = _plan(params, ctx)
    if "partitioned" in plan:
        return [PARTITIONED, f"-- {ctx.quote(params['table'])}: {plan['partitioned']}"]
    estimate = plan["estimate"]
    sql = [estimates.APPROX if estimate["method"] == "pgstattuple_approx" else estimates.STATISTICS]
    if plan["table_scan"] is not None:
        name = ctx.quote(params["table"])
        sql.append(
            estimates.scan_comment("table", name, estimate["size_bytes"], plan["table_scan"])
        )
        sql.append(estimates.PGSTATTUPLE)
    for index, why in plan["indexes"]:
        if why is not None:
            name = ctx.quote(index["name"])
            sql.append(estimates.scan_comment("index", name, index["bytes"], why))
            sql.append(estimates.PGSTATINDEX)
    if len(sql) == 1:
        sql.append(f"-- no full scan: the estimates of {ctx.quote(params['table'])} are enough")
    return sql


def _fragmentation_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """What the step will read whole: the cost of its full scans."""
    plan = _plan(params, ctx)
    if "partitioned" in plan:
        return {"full_scans": [], "bytes_to_scan": 0}
    scans = [(i["name"], i["bytes"]) for i, why in plan["indexes"] if why is not None]
    if plan["table_scan"] is not None:
        scans.insert(0, (params["table"], plan["estimate"]["size_bytes"]))
    return {"full_scans": [n for n, _ in scans], "bytes_to_scan": sum(b for _, b in scans)}


analyze_table_fragmentation = shared_step(
    Handler(
        sql_templates=(*estimates.SQL, PARTITIONED),
        run_fn=_fragmentation,
        render_fn=_fragmentation_sql,
        estimate_fn=_fragmentation_estimate,
        changes_tables=False,  # it reads: a resumed step reads its tables again
    ),
    "the fragmentation analysis",
)
