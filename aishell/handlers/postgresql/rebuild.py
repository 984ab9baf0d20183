"""rebuild_fragmented_indexes on PostgreSQL: REINDEX INDEX CONCURRENTLY of the indexes
over the threshold, after dropping the invalid `_ccnew`/`_ccold` leftovers an interrupted
earlier rebuild left (every write still maintains them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepSkipped
from aishell.handlers import cached, rebuilding
from aishell.handlers.postgresql import estimates
from aishell.handlers.postgresql.catalog import REINDEX_LEFTOVER
from aishell.handlers.postgresql.privileges import require_maintain
from aishell.handlers.shared import shared_step
from aishell.sqltext import text
from aishell.targets.lockholders import is_lock_timeout
from aishell.targets.servermessage import server_message
from aishell.tool.context import ToolContext

_LEFTOVERS = """
SELECT i.relname AS name
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = CAST(:oid AS pg_catalog.oid) AND NOT x.indisvalid
  AND i.relname::pg_catalog.text ~ '_cc(new|old)[0-9]*$'
ORDER BY i.relname
"""
_DROP_LEFTOVER = "DROP INDEX CONCURRENTLY IF EXISTS {index}"


def leftovers(conn: Connection, oid: int) -> list[str]:
    """Invalid copies an interrupted REINDEX CONCURRENTLY left on a table."""
    return [r[0] for r in conn.execute(text(_LEFTOVERS), {"oid": oid})]


def _choose(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return cached(ctx, f"rebuild:{params['table']}", lambda: _measure(params, ctx))


def _measure(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Which indexes to rebuild: measured with pgstatindex only where the catalog's
    estimate of an index calls for it (aishell/handlers/postgresql/estimates.py); what
    the step before measured of the table (analyze_table_fragmentation) is not read
    again."""
    threshold = params.get("fragmentation_threshold", 30)
    min_pages = params.get("min_pages", 8)
    table = params["table"]
    scans = estimates.scanners(ctx)
    found = estimates.recent_indexes(ctx, table)
    oid, indexes = found.oid, found.indexes
    # The leftovers among them, as _LEFTOVERS finds them.
    left = sorted(
        i["name"] for i in indexes if not i["valid"] and REINDEX_LEFTOVER.search(i["name"])
    )
    chosen, skipped = [], []
    for index in indexes:
        name = index["name"]
        if name in left:
            continue
        if index["partitioned"]:
            skipped.append({"index": name, "reason": _partitioned_index(index)})
        elif index.get("exclusion"):
            skipped.append({"index": name, "reason": EXCLUSION_NOT_REBUILT})
        elif not index["valid"]:
            chosen.append(
                (name, {"bytes": index["bytes"], "fragmentation_percent": None}, "invalid index")
            )
        elif index["pages"] < min_pages:
            skipped.append({"index": name, "reason": f"{index['pages']} pages"})
        elif not scans.pgstattuple or index["method"] != "btree":
            why = "pgstattuple is not installed" if not scans.pgstattuple else "not a B-tree"
            skipped.append({"index": name, "reason": f"fragmentation unknown ({why})"})
        elif estimates.index_scan_reason(index, threshold, scans) is None:
            skipped.append({"index": name, "reason": estimates.not_scanned(index, threshold)})
        else:
            stats = {"bytes": index["bytes"], **estimates.recent_index_scan(ctx, table, index)}
            frag, free = stats["fragmentation_percent"], stats["free_space_percent"]
            if frag >= threshold or free >= threshold:
                chosen.append((name, stats, f"{frag}% fragmented, {free}% free space"))
            else:
                skipped.append({"index": name, "reason": f"{frag}% fragmented: under {threshold}%"})
    return {"oid": oid, "leftovers": left, "chosen": chosen, "skipped": skipped}


# PostgreSQL refuses REINDEX CONCURRENTLY of an exclusion constraint's index (0A000),
# and a plain REINDEX blocks the table's writes until it ends: the step takes no lock
# its preview did not promise.
EXCLUSION_NOT_REBUILT = (
    "the index of an exclusion constraint, which REINDEX CONCURRENTLY cannot rebuild; "
    "REINDEX INDEX (without CONCURRENTLY) would block writes to the table until it ends: "
    "not rebuilt"
)


def _partitioned_index(index: Mapping[str, Any]) -> str:
    """Why a partitioned index (of a partitioned table) is not rebuilt: it has no storage
    of its own; an invalid one lacks an index of some partition, which a rebuild does not
    give it."""
    said = "partitioned index, with no storage of its own: its partitions' indexes are "
    said += "rebuilt with their tables"
    if not index["valid"]:
        said += (
            "; it is invalid: some partition has no index attached to it (made with CREATE "
            "INDEX ... ON ONLY); ALTER INDEX ... ATTACH PARTITION each partition's index"
        )
    return said


def _drop_leftovers(
    conn: Connection, ctx: ToolContext, names: list[str], progress: dict[str, Any]
) -> tuple[list[str], DBAPIError | None]:
    """Drop invalid leftovers: (those that could not be dropped now, the first error)."""
    kept: list[str] = []
    error: DBAPIError | None = None
    for name in names:
        try:
            conn.execute(text(_DROP_LEFTOVER.replace("{index}", ctx.quote(name))))
        except DBAPIError as exc:
            kept.append(name)
            error = error or exc
        else:
            progress["dropped"].append(name)
    return kept, error


# Indexes' sizes after their rebuild, found by name: REINDEX CONCURRENTLY gives each a
# new oid.
_INDEX_BYTES = (
    "SELECT i.relname, pg_catalog.pg_relation_size(i.oid) FROM pg_class i "
    "WHERE i.relname = ANY(CAST(:names AS text[])) AND i.relnamespace = "
    "(SELECT oid FROM pg_namespace WHERE nspname = pg_catalog.current_schema())"
)


def _rebuild(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    plan = _choose(params, ctx)
    oid = plan["oid"]
    # Kept across the executor's retries of this step: what earlier attempts did.
    progress = ctx.step_cache.setdefault(
        f"rebuild-progress:{table}", {"rebuilt": [], "dropped": [], "kept": [], "story": []}
    )
    failed = progress.setdefault("failed", [])
    done = {r["index"] for r in progress["rebuilt"]} | {f["index"] for f in failed}
    todo = [c for c in plan["chosen"] if c[0] not in done]
    # A retry looks afresh: the failed attempt may have left some. The first attempt,
    # like a step that rebuilds nothing, holds to the plan's, read as the step rendered.
    left = leftovers(conn, oid) if plan["chosen"] and ctx.attempt > 1 else plan["leftovers"]
    if todo or left:
        require_maintain(conn, table, "REINDEX CONCURRENTLY", reindex=True, run_cache=ctx.run_cache)
    _drop_before_rebuild(conn, ctx, table, left, progress)
    for index, before, reason in todo:
        _reindex(conn, ctx, table, oid, (index, before, reason), progress)
    unsized = [r["index"] for r in progress["rebuilt"] if r["bytes_after"] is None]
    if unsized:
        found = conn.execute(text(_INDEX_BYTES), {"names": unsized})
        sizes: dict[str, int] = {str(name): int(size) for name, size in found}
        for rebuilt in progress["rebuilt"]:
            rebuilt["bytes_after"] = sizes.get(rebuilt["index"], rebuilt["bytes_after"])
    result = {
        "table": table,
        "indexes_rebuilt": len(progress["rebuilt"]),
        "rebuilt": progress["rebuilt"],
        "skipped": plan["skipped"],
        "leftovers_dropped": progress["dropped"],
    }
    if progress["story"]:
        result["notes"] = progress["story"]
    if failed:
        _raise_failed(table, failed, result)
    return result


# What the server refuses of one index for a reason of its own, after which the others
# are rebuilt still: its data (22: an expression's error), its constraint (23: a unique
# index over duplicate values), damage (XX). A lock wait, a cancel or a lost connection
# is the step's, retried or failed as any step's.
_INDEX_OWN_TROUBLE = ("22", "23", "XX")


def _reindex(
    conn: Connection,
    ctx: ToolContext,
    table: str,
    oid: int,
    chosen: tuple[str, dict[str, Any], str],
    progress: dict[str, Any],
) -> None:
    """REINDEX INDEX CONCURRENTLY one chosen index, into `progress`: rebuilt, or failed
    with the server's reason when the trouble is the index's own."""
    index, before, reason = chosen
    try:
        conn.execute(text(f"REINDEX INDEX CONCURRENTLY {ctx.quote(index)}"))
    except DBAPIError as exc:
        if not _after_failed_reindex(conn, ctx, table, oid, index, exc, progress):
            state = str(getattr(exc.orig, "sqlstate", "") or "")
            if is_lock_timeout(exc) or not state.startswith(_INDEX_OWN_TROUBLE):
                raise
            progress["failed"].append({"index": index, "error": server_message(exc)})
            return
    progress["rebuilt"].append(
        {
            "index": index,
            "reason": reason,
            "fragmentation_before": before["fragmentation_percent"],
            "bytes_before": before["bytes"],
            "bytes_after": None,
        }
    )


def _raise_failed(table: str, failed: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """The table's rebuild ends skipped, with each index the server refused and why: the
    step goes on with its other tables, and the report names it."""
    why = "; ".join(
        f"REINDEX INDEX CONCURRENTLY {f['index']} on table {table} failed: {f['error']}"
        for f in failed
    )
    if result["rebuilt"]:
        why += f" ({', '.join(r['index'] for r in result['rebuilt'])} rebuilt)"
    result["failed"] = failed
    raise StepSkipped(why, {**result, "skipped_tables": [{"table": table, "reason": why}]})


def _drop_before_rebuild(
    conn: Connection, ctx: ToolContext, table: str, left: list[str], progress: dict[str, Any]
) -> None:
    """An interrupted REINDEX CONCURRENTLY leaves an invalid copy that every write still
    maintains; it goes before the retry makes another. One that cannot be dropped now
    fails the step, with why, and no index of the table is rebuilt."""
    kept, error = _drop_leftovers(conn, ctx, left, progress)
    if error is None:
        return
    new = [n for n in kept if n not in progress["kept"]]
    if new:
        progress["kept"] += new
        why = "while the lock is held" if is_lock_timeout(error) else f"({_first(error)})"
        _tell(
            progress,
            f"the invalid leftover(s) {', '.join(new)} of an earlier REINDEX CONCURRENTLY "
            f"on table {table} cannot be dropped {why}, so no index of {table} was rebuilt",
        )
    # The executor retries a lock timeout and names who holds it; the note says the rest.
    error.add_note("; ".join(progress["story"]))
    raise error


def _first(exc: DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]


def _tell(progress: dict[str, Any], line: str) -> None:
    if line not in progress["story"]:
        progress["story"].append(line)


def _after_failed_reindex(
    conn: Connection,
    ctx: ToolContext,
    table: str,
    oid: int,
    index: str,
    exc: DBAPIError,
    progress: dict[str, Any],
) -> bool:
    """Drop what a failed REINDEX CONCURRENTLY left, and say so on its error. True when
    the new index had already replaced the old one (only dropping the old copy failed),
    so the rebuild is done."""
    if conn.invalidated:
        # The session itself is gone (ended by the server, the network): nothing more can
        # be read on it; the executor reconnects for a retry or fails the step with it.
        _tell(
            progress,
            f"REINDEX INDEX CONCURRENTLY {index} on table {table} lost its session "
            f"({_first(exc)}); what it left is dropped first when {table} is rebuilt again",
        )
        exc.add_note("; ".join(progress["story"]))
        return False
    waited = is_lock_timeout(exc)
    left = leftovers(conn, oid)
    ours = [n for n in left if n.startswith(index[:50])]
    swapped = bool(ours) and all("_ccold" in n for n in ours)
    kept, _ = _drop_leftovers(conn, ctx, left, progress)
    gone = [n for n in left if n not in kept]
    progress["kept"] += [n for n in kept if n not in progress["kept"]]
    line = (
        f"REINDEX INDEX CONCURRENTLY {index} "
        f"{'timed out waiting for a lock on' if waited else 'failed on'} table {table}"
    )
    if swapped:
        line += " after the rebuilt index had replaced the old one"
    if gone:
        line += f"; its invalid leftover(s) {', '.join(gone)} were dropped"
    if kept:
        why = "while the lock is held" if waited else "now"
        line += (
            f"; its invalid leftover(s) {', '.join(kept)} cannot be dropped {why}, and are "
            f"dropped first when {table} is rebuilt again"
        )
    if not left:
        line += "; it left no invalid index"
    _tell(progress, line)
    if not swapped:
        # The executor retries a lock timeout and names who holds it; the note says the rest.
        exc.add_note("; ".join(progress["story"]))
    return swapped


def _rebuild_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    plan = _choose(params, ctx)
    sql = [_DROP_LEFTOVER.replace("{index}", ctx.quote(i)) for i in plan["leftovers"]]
    sql += [f"REINDEX INDEX CONCURRENTLY {ctx.quote(i)}" for i, _, _ in plan["chosen"]]
    left = [
        f"-- {ctx.quote(s['index'])}: {s['reason']}"
        for s in plan["skipped"]
        if s["reason"] == EXCLUSION_NOT_REBUILT
    ]
    if not sql:
        other = " other" if left else ""
        sql = [f"-- no{other} index of {ctx.quote(params['table'])} is over the threshold"]
    return [*left, *sql]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    plan = _choose(params, ctx)
    return {
        "indexes_to_rebuild": [i for i, _, _ in plan["chosen"]],
        "index_bytes_to_rewrite": sum(s["bytes"] for _, s, _ in plan["chosen"]),
    }


rebuild_fragmented_indexes = shared_step(
    rebuilding(
        (
            estimates.PGSTATTUPLE_VERSION,
            estimates.INDEXES,
            estimates.PGSTATINDEX,
            _LEFTOVERS,
            _DROP_LEFTOVER,
            "REINDEX INDEX CONCURRENTLY {index}",
            _INDEX_BYTES,
        ),
        _rebuild,
        _rebuild_sql,
        _rebuild_estimate,
    ),
    "REINDEX CONCURRENTLY",
)
