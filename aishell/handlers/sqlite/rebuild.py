"""rebuild_fragmented_indexes on SQLite: REINDEX of each index over the threshold."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aishell.handlers import cached, rebuilding
from aishell.handlers.shared import shared_step
from aishell.handlers.sqlite.appcode import app_code
from aishell.handlers.sqlite.catalog import (
    BTREE,
    TABLE_EXISTS,
    Btrees,
    btree_stats,
    btrees,
    has_dbstat,
    require_table,
    table_indexes,
)
from aishell.handlers.sqlite.fragmentation import needs_rebuild
from aishell.handlers.sqlite.privileges import require_writable, write
from aishell.targets.appcode import Use
from aishell.tool.context import ToolContext

Chosen = tuple[list[tuple[str, dict[str, Any], str]], list[dict[str, Any]]]


def _indexes_to_rebuild(params: Mapping[str, Any], ctx: ToolContext) -> Chosen:
    """What to rebuild, as the step's render found it: its run does what it showed."""

    def choose() -> Chosen:
        chosen, skipped = _choose(params, ctx.connection, btrees(ctx, params["table"]))
        return _without_app_code(params["table"], chosen, skipped, ctx)

    return cached(ctx, f"rebuild:{params['table']}", choose)


# The cause of an index left out because its REINDEX needs the application's code.
APP_CODE = "application code"


def _without_app_code(
    table: str,
    chosen: list[tuple[str, dict[str, Any], str]],
    skipped: list[dict[str, Any]],
    ctx: ToolContext,
) -> Chosen:
    """The chosen indexes but those whose REINDEX would evaluate the application's
    functions or collations, which are skipped, each named with why."""
    code = app_code(ctx)
    kept = []
    for index, stats, reason in chosen:
        why = code.reason(table, f"index {index} not rebuilt", _of_index(index))
        if why is None:
            kept.append((index, stats, reason))
        else:
            skipped.append({"index": index, "reason": why, "cause": APP_CODE})
    return kept, skipped


def _of_index(index: str) -> Callable[[Use], bool]:
    """The uses a REINDEX of this index evaluates: its own, or (for the automatic index
    of a key) the key's."""

    def stops(use: Use) -> bool:
        if use.kind == "primary key":
            return index.startswith("sqlite_autoindex_")
        return use.kind == "index" and use.name == index

    return stops


def _choose(params: Mapping[str, Any], conn: Connection, trees: Btrees | None) -> Chosen:
    """The indexes over the threshold (from `trees` where a dry run read them)."""
    threshold = params.get("fragmentation_threshold", 30)
    min_pages = params.get("min_pages", 8)
    chosen, skipped = [], []
    if trees is None:
        indexes = table_indexes(conn, params["table"])
        if not indexes:
            require_table(conn, params["table"])
    else:
        indexes = trees.indexes
    for index in indexes:
        stats = btree_stats(conn, index) if trees is None else trees.of(index)
        reason = needs_rebuild(stats, threshold, min_pages)
        if reason:
            chosen.append((index, stats, reason))
        else:
            why = (
                f"{stats['leaf_pages']} leaf pages, below {min_pages}"
                if stats["leaf_pages"] < min_pages
                else f"{stats['fragmentation_percent']}% out of order, "
                f"{stats['free_space_percent']}% to give back: under {threshold}%"
            )
            skipped.append({"index": index, "reason": why})
    return chosen, skipped


def _rebuild(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    if not has_dbstat(ctx):
        return {
            "table": params["table"],
            "indexes_rebuilt": 0,
            "rebuilt": [],
            "skipped": [],
            "note": "This SQLite build has no dbstat table; index fragmentation is unknown",
        }
    chosen, skipped = _indexes_to_rebuild(params, ctx)
    if chosen:
        require_writable(conn, params["table"], "REINDEX")
    rebuilt = []
    for index, before, reason in chosen:
        started = time.monotonic()
        # Named in its schema: a bare name is read as a collation first (an index
        # named "nocase" would rebuild every index that uses NOCASE instead).
        write(conn, f"REINDEX main.{ctx.quote(index)}", params["table"], "REINDEX")
        after = btree_stats(conn, index)
        rebuilt.append(
            {
                "index": index,
                "reason": reason,
                "fragmentation_before": before["fragmentation_percent"],
                "fragmentation_after": after["fragmentation_percent"],
                "pages_before": before["pages"],
                "pages_after": after["pages"],
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    return {
        "table": params["table"],
        "indexes_rebuilt": len(rebuilt),
        "rebuilt": rebuilt,
        "skipped": skipped,
    }


def _rebuild_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    chosen, skipped = _indexes_to_rebuild(params, ctx)
    left_out = [f"-- {s['reason']}" for s in skipped if s.get("cause") == APP_CODE]
    if not chosen:
        other = " other" if left_out else ""
        return [
            *left_out,
            f"-- no{other} index of {ctx.quote(params['table'])} is over the threshold",
        ]
    return [*left_out, *(f"REINDEX main.{ctx.quote(index)}" for index, _, _ in chosen)]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if not has_dbstat(ctx):
        return {}
    chosen, _ = _indexes_to_rebuild(params, ctx)
    return {
        "indexes_to_rebuild": [index for index, _, _ in chosen],
        "index_bytes_to_rewrite": sum(stats["size_bytes"] for _, stats, _ in chosen),
    }


rebuild_fragmented_indexes = shared_step(
    rebuilding(
        (
            TABLE_EXISTS,
            BTREE,
            "REINDEX main.{index}",
        ),
        _rebuild,
        _rebuild_sql,
        _rebuild_estimate,
    ),
    "REINDEX",
)
