"""PostgreSQL implementations of the maintenance tools, from the server's own catalogs.

Bloat comes from pgstattuple when the extension is installed, otherwise from a
statistics-based estimate, and every output says which. Corruption checks use
amcheck when it is installed and the role may run it; otherwise a table is reported
not checked, with the reason (aishell never installs the extension: CREATE EXTENSION
amcheck needs a superuser and changes the database). Indexes are rebuilt CONCURRENTLY,
after dropping the invalid leftovers of an interrupted earlier rebuild.

VACUUM and ANALYZE of a table the role may not maintain succeed with only a WARNING,
having done nothing: each step checks ownership first and listens for that warning,
and a step the server skipped ends `skipped` with the reason, never `succeeded`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.catalog import (
    FREEZE_MAX_AGE,
    is_lock_timeout,
    pg_urgency,
    user_tables,
)
from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import Handler, cached, each_table
from aishell.handlers.report import (
    checked_or_skipped,
    corruption_advice,
    corruption_summary,
    integrity_line,
)
from aishell.registry import RiskLevel, ToolContext

# Transaction-ID wraparound is at 2^31.
WRAPAROUND = 2**31

_TABLE_STATS = """
SELECT c.relname AS name,
       c.oid AS oid,
       coalesce(s.n_live_tup, 0) AS live,
       coalesce(s.n_dead_tup, 0) AS dead,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
       age(c.relfrozenxid) AS xid_age,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid) AS indexes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
  AND (cardinality(CAST(:tables AS text[])) = 0 OR c.relname = ANY(CAST(:tables AS text[])))
"""
_DATABASE = """
SELECT pg_database_size(current_database()) AS bytes,
       CASE WHEN blks_hit + blks_read > 0
            THEN round(100.0 * blks_hit / (blks_hit + blks_read), 2) END AS cache_hit_percent,
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())
           AS connections,
       (SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'active') AS active
FROM pg_stat_database WHERE datname = current_database()
"""
_LONG_TRANSACTIONS = """
SELECT pid, usename, application_name, state,
       extract(epoch FROM now() - xact_start)::bigint AS seconds
FROM pg_stat_activity
WHERE xact_start < now() - interval '5 minutes' AND pid <> pg_backend_pid()
ORDER BY xact_start
"""
_TABLE_OID = (
    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :t AND n.nspname = current_schema()"
)
_INDEXES = """
SELECT i.relname AS name, i.oid AS oid, x.indisvalid AS valid, am.amname AS method,
       pg_relation_size(i.oid) AS bytes
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_am am ON am.oid = i.relam
WHERE x.indrelid = :oid
ORDER BY i.relname
"""
_EXTENSIONS = "SELECT extname FROM pg_extension"


def extensions(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(text(_EXTENSIONS))}


def table_oid(conn: Connection, table: str) -> int:
    oid = conn.execute(text(_TABLE_OID), {"t": table}).scalar()
    if oid is None:
        raise StepFailed(f"Table {table!r} is not in the current schema")
    return int(oid)


def urgency(row: Mapping[str, Any]) -> float:
    """How soon a table needs work (the same ranking the planner uses)."""
    return pg_urgency(row["xid_age"], row["live"], row["dead"], row["total_bytes"])


def database_size(conn: Connection) -> dict[str, Any]:
    """The database's size, measured the same way before a run and after it."""
    size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    return {"size_bytes": int(size or 0), "method": "pg_database_size"}


# --- who may maintain what ------------------------------------------------------------------

# Who may VACUUM or ANALYZE a table: its owner (or a member of the owning role), the
# database's owner, and from PostgreSQL 17 whoever holds MAINTAIN on it. REINDEX needs
# the table's owner, or MAINTAIN from 17.
_PRIVILEGES = """
SELECT c.relname AS name, c.oid AS oid, pg_get_userbyid(c.relowner) AS owner,
       current_user AS role,
       pg_has_role(current_user, c.relowner, 'USAGE') AS owns,
       pg_has_role(current_user, d.datdba, 'USAGE') AND NOT c.relisshared AS owns_database,
       false AS maintain,
       has_table_privilege(c.oid, 'SELECT') AS may_select,
       has_table_privilege(c.oid, 'DELETE') AS may_delete
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN pg_database d
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
  AND d.datname = current_database()
  AND (cardinality(CAST(:tables AS text[])) = 0 OR c.relname = ANY(CAST(:tables AS text[])))
ORDER BY c.relname
"""
_PRIVILEGES_17 = _PRIVILEGES.replace(
    "false AS maintain", "has_table_privilege(c.oid, 'MAINTAIN') AS maintain"
)


def table_privileges(conn: Connection, tables: list[str]) -> list[dict[str, Any]]:
    """Per table (every table of the schema when `tables` is empty): its owner and what
    the current role may do to it."""
    version = conn.dialect.server_version_info or (0,)
    sql = _PRIVILEGES_17 if version[0] >= 17 else _PRIVILEGES
    rows = [dict(r) for r in conn.execute(text(sql), {"tables": tables}).mappings()]
    for row in rows:
        row["maintain_known"] = version[0] >= 17
        row["may_vacuum"] = bool(row["owns"] or row["owns_database"] or row["maintain"])
        row["may_reindex"] = bool(row["owns"] or row["maintain"])
    return rows


def _refusal(row: Mapping[str, Any], action: str, reindex: bool) -> str:
    whom = "does not own it" if reindex else "owns neither it nor the database"
    fix = f"ALTER TABLE {row['name']} OWNER TO {row['role']}"
    if row["maintain_known"]:
        fix = f"GRANT MAINTAIN ON {row['name']} TO {row['role']}, or {fix}"
    return (
        f"{action} of {row['name']} skipped: role {row['role']} {whom} (owner: {row['owner']}); "
        f"run it as {row['owner']}, or {fix}"
    )


def require_maintain(conn: Connection, table: str, action: str, *, reindex: bool = False) -> None:
    """Raise StepSkipped before `action` when the server would refuse or skip it."""
    rows = table_privileges(conn, [table])
    if not rows:
        raise StepFailed(f"Table {table!r} is not in the current schema")
    row = rows[0]
    if row["may_reindex" if reindex else "may_vacuum"]:
        return
    reason = _refusal(row, action, reindex)
    raise StepSkipped(
        reason,
        {
            "table": table,
            "owner": row["owner"],
            "role": row["role"],
            "skipped_tables": [{"table": table, "reason": reason}],
        },
    )


# VACUUM and ANALYZE report a table they skip as a WARNING, and succeed: 'skipping "t"
# -- only table or database owner can vacuum it' (from 17: 'permission denied to vacuum
# "t", skipping it'). The check above catches it in any language; this, the rest.
_SKIPPED = re.compile(r"skipping|permission denied", re.IGNORECASE)


@contextmanager
def server_warnings(conn: Connection) -> Iterator[list[str]]:
    """The WARNING notices the server sends while the block runs."""
    raw: Any = conn.connection.driver_connection
    found: list[str] = []

    def keep(diagnostic: Any) -> None:
        if diagnostic.severity_nonlocalized == "WARNING":
            found.append(str(diagnostic.message_primary or "").strip())

    raw.add_notice_handler(keep)
    try:
        yield found
    finally:
        raw.remove_notice_handler(keep)


def raise_if_skipped(
    table: str, action: str, warnings: list[str], result: dict[str, Any]
) -> dict[str, Any]:
    """result, or StepSkipped when the server's warnings say it skipped the table."""
    skipped = [w for w in warnings if _SKIPPED.search(w)]
    if warnings:
        result["server_warnings"] = warnings
    if not skipped:
        return result
    reason = f"{action} of {table} skipped by the server: {skipped[0]}"
    raise StepSkipped(reason, {**result, "skipped_tables": [{"table": table, "reason": reason}]})


# --- analyze_database_health ------------------------------------------------------------


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    database = conn.execute(text(_DATABASE)).mappings().one()
    rows = [dict(r) for r in conn.execute(text(_TABLE_STATS), {"tables": tables}).mappings()]
    report = []
    for row in rows:
        total = row["live"] + row["dead"]
        report.append(
            {
                "table": row["name"],
                "rows": row["live"],
                "dead_rows": row["dead"],
                "dead_percent": round(100.0 * row["dead"] / total, 2) if total else 0.0,
                "xid_age": row["xid_age"],
                "wraparound_percent": round(100.0 * (row["xid_age"] or 0) / WRAPAROUND, 2),
                "table_bytes": row["table_bytes"],
                "index_bytes": row["index_bytes"],
                "indexes": row["indexes"],
                "last_vacuum": row["last_vacuum"],
                "last_analyze": row["last_analyze"],
                "statistics": "present" if row["last_analyze"] else "missing",
                "urgency": urgency(row),
            }
        )
    report.sort(key=lambda t: (-t["urgency"], t["table"]))
    long_running = [dict(r) for r in conn.execute(text(_LONG_TRANSACTIONS)).mappings()]
    recommendations = []
    for t in report:
        if (t["xid_age"] or 0) > FREEZE_MAX_AGE // 2:
            recommendations.append(
                f"{t['table']}: transaction-ID age {t['xid_age']:,} is "
                f"{t['wraparound_percent']}% of the way to wraparound; VACUUM it first"
            )
        if t["dead_percent"] >= 20 and t["dead_rows"] >= 1000:
            recommendations.append(
                f"{t['table']}: {t['dead_percent']}% dead rows; optimize_table (VACUUM) "
                "would make their space reusable"
            )
    missing = [t["table"] for t in report if t["statistics"] == "missing" and t["rows"]]
    if missing:
        recommendations.append(f"No planner statistics for {', '.join(missing)}")
    for tx in long_running:
        recommendations.append(
            f"pid {tx['pid']} ({tx['usename']}, {tx['application_name'] or 'no name'}) has held "
            f"a transaction open for {tx['seconds']}s; it keeps VACUUM from removing dead rows"
        )
    check = (
        corruption_check(conn, ctx, [t["table"] for t in report])
        if params.get("check_corruption")
        else None
    )
    recommendations += corruption_advice(check, "amcheck")
    return {
        "database_size_bytes": database["bytes"],
        "size_method": "pg_database_size",
        "cache_hit_percent": float(database["cache_hit_percent"] or 0),
        "connections": database["connections"],
        "active_connections": database["active"],
        "long_running_transactions": long_running,
        "tables": report,
        "integrity": integrity_line(check),
        "corruption_check": check,
        "recommendations": recommendations,
    }


analyze_database_health = Handler(
    sql_templates=(_DATABASE, _TABLE_STATS, _LONG_TRANSACTIONS),
    run_fn=_health,
)


# --- analyze_table_fragmentation ----------------------------------------------------------

_PGSTATTUPLE = (
    "SELECT table_len, tuple_percent, dead_tuple_percent, free_percent "
    "FROM pgstattuple(CAST(:oid AS oid)::regclass)"
)
_PGSTATINDEX = (
    "SELECT leaf_pages, avg_leaf_density, leaf_fragmentation "
    "FROM pgstatindex(CAST(:oid AS oid)::regclass)"
)
# Without pgstattuple: the bytes the live rows need (from pg_stats' average widths
# and a 24-byte tuple header) against the table's size.
_ESTIMATE = """
SELECT c.reltuples AS reltuples,
       pg_relation_size(c.oid) AS bytes,
       current_setting('block_size')::int AS block_size,
       (SELECT coalesce(sum(s.avg_width), 0) FROM pg_stats s
         WHERE s.schemaname = n.nspname AND s.tablename = c.relname) AS row_width,
       coalesce(st.n_dead_tup, 0) AS dead,
       coalesce(st.n_live_tup, 0) AS live
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables st ON st.relid = c.oid
WHERE c.oid = :oid
"""


def _index_stats(conn: Connection, index: Mapping[str, Any], has_pgstattuple: bool) -> dict:
    stats: dict[str, Any] = {
        "index": index["name"],
        "bytes": index["bytes"],
        "valid": index["valid"],
    }
    if has_pgstattuple and index["method"] == "btree" and index["valid"]:
        row = conn.execute(text(_PGSTATINDEX), {"oid": index["oid"]}).mappings().one()
        density = float(row["avg_leaf_density"] or 0)
        stats.update(
            {
                "leaf_pages": row["leaf_pages"],
                "fragmentation_percent": float(row["leaf_fragmentation"] or 0),
                # Default fillfactor leaves 10% free; only space beyond that is waste.
                "free_space_percent": round(max(90.0 - density, 0.0), 2) if density else 0.0,
            }
        )
    else:
        stats.update(
            {
                "leaf_pages": index["bytes"] // 8192,
                "fragmentation_percent": None,
                "free_space_percent": None,
            }
        )
    return stats


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    threshold = params.get("fragmentation_threshold", 30)
    oid = table_oid(conn, table)
    has_pgstattuple = "pgstattuple" in extensions(conn)
    indexes = [
        _index_stats(conn, i, has_pgstattuple)
        for i in conn.execute(text(_INDEXES), {"oid": oid}).mappings()
    ]
    if has_pgstattuple:
        row = conn.execute(text(_PGSTATTUPLE), {"oid": oid}).mappings().one()
        bloat = float(row["dead_tuple_percent"]) + float(row["free_percent"])
        result = {
            "method": "pgstattuple",
            "fragmentation_percent": round(bloat, 2),
            "dead_tuple_percent": float(row["dead_tuple_percent"]),
            "free_space_percent": float(row["free_percent"]),
            "size_bytes": row["table_len"],
        }
    else:
        row = conn.execute(text(_ESTIMATE), {"oid": oid}).mappings().one()
        needed = max(row["reltuples"], 0) * (row["row_width"] + 24)
        bloat = 100.0 * (1 - needed / row["bytes"]) if row["bytes"] and row["row_width"] else 0.0
        total = row["live"] + row["dead"]
        result = {
            "method": "statistics estimate (pgstattuple is not installed)",
            "fragmentation_percent": round(max(bloat, 0.0), 2),
            "dead_tuple_percent": round(100.0 * row["dead"] / total, 2) if total else 0.0,
            "free_space_percent": None,
            "size_bytes": row["bytes"],
        }
    to_rebuild = [
        i["index"]
        for i in indexes
        if not i["valid"]
        or (i["fragmentation_percent"] or 0) >= threshold
        or (i["free_space_percent"] or 0) >= threshold
    ]
    advice = []
    if to_rebuild:
        advice.append(f"REINDEX CONCURRENTLY {', '.join(to_rebuild)}")
    if result["fragmentation_percent"] >= threshold:
        advice.append("VACUUM to make dead rows' space reusable (VACUUM FULL to shrink the file)")
    return {
        "table": table,
        **result,
        "indexes": indexes,
        "recommendation": "; ".join(advice) or "No optimization needed",
    }


analyze_table_fragmentation = Handler(
    sql_templates=(_TABLE_OID, _INDEXES, _EXTENSIONS, _PGSTATTUPLE, _PGSTATINDEX, _ESTIMATE),
    run_fn=_fragmentation,
)


# --- rebuild_fragmented_indexes ------------------------------------------------------------

_LEFTOVERS = """
SELECT i.relname AS name
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = :oid AND NOT x.indisvalid AND i.relname ~ '_cc(new|old)[0-9]*$'
ORDER BY i.relname
"""
_DROP_LEFTOVER = "DROP INDEX CONCURRENTLY IF EXISTS {index}"


def leftovers(conn: Connection, oid: int) -> list[str]:
    """Invalid copies an interrupted REINDEX CONCURRENTLY left on a table."""
    return [r[0] for r in conn.execute(text(_LEFTOVERS), {"oid": oid})]


def _choose(params: Mapping[str, Any], conn: Connection, ctx: ToolContext) -> dict[str, Any]:
    return cached(ctx, f"rebuild:{params['table']}", lambda: _measure(params, conn))


def _measure(params: Mapping[str, Any], conn: Connection) -> dict[str, Any]:
    threshold = params.get("fragmentation_threshold", 30)
    min_pages = params.get("min_pages", 8)
    oid = table_oid(conn, params["table"])
    has_pgstattuple = "pgstattuple" in extensions(conn)
    left = leftovers(conn, oid)
    chosen, skipped = [], []
    for index in conn.execute(text(_INDEXES), {"oid": oid}).mappings():
        if index["name"] in left:
            continue
        stats = _index_stats(conn, index, has_pgstattuple)
        frag, free = stats["fragmentation_percent"], stats["free_space_percent"]
        if not index["valid"]:
            chosen.append((index["name"], stats, "invalid index"))
        elif stats["leaf_pages"] < min_pages:
            skipped.append({"index": index["name"], "reason": f"{stats['leaf_pages']} leaf pages"})
        elif frag is None:
            skipped.append(
                {
                    "index": index["name"],
                    "reason": "fragmentation unknown (pgstattuple missing "
                    f"or a {index['method']} index)",
                }
            )
        elif frag >= threshold or (free or 0) >= threshold:
            chosen.append((index["name"], stats, f"{frag}% fragmented, {free}% free space"))
        else:
            skipped.append(
                {"index": index["name"], "reason": f"{frag}% fragmented: under {threshold}%"}
            )
    return {"oid": oid, "leftovers": left, "chosen": chosen, "skipped": skipped}


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


def _rebuild(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    plan = _choose(params, conn, ctx)
    oid = plan["oid"]
    # Kept across the executor's retries of this step: what earlier attempts did.
    progress = ctx.step_cache.setdefault(
        f"rebuild-progress:{table}", {"rebuilt": [], "dropped": [], "kept": [], "story": []}
    )
    done = {r["index"] for r in progress["rebuilt"]}
    todo = [c for c in plan["chosen"] if c[0] not in done]
    # Fresh, not from the plan: an earlier attempt of this step may have left some.
    left = leftovers(conn, oid)
    if todo or left:
        require_maintain(conn, table, "REINDEX CONCURRENTLY", reindex=True)
    # An interrupted REINDEX CONCURRENTLY leaves an invalid copy that every write still
    # maintains; it goes before the retry makes another.
    kept, error = _drop_leftovers(conn, ctx, left, progress)
    if error is not None:
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
    for index, before, reason in todo:
        try:
            conn.execute(text(f"REINDEX INDEX CONCURRENTLY {ctx.quote(index)}"))
        except DBAPIError as exc:
            if not _after_failed_reindex(conn, ctx, table, oid, index, exc, progress):
                raise
        progress["rebuilt"].append(
            {
                "index": index,
                "reason": reason,
                "fragmentation_before": before["fragmentation_percent"],
                "bytes_before": before["bytes"],
                "bytes_after": conn.execute(
                    text(
                        "SELECT pg_relation_size(i.oid) FROM pg_class i WHERE i.relname = :n "
                        "AND i.relnamespace = "
                        "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
                    ),
                    {"n": index},
                ).scalar(),
            }
        )
    result = {
        "table": table,
        "indexes_rebuilt": len(progress["rebuilt"]),
        "rebuilt": progress["rebuilt"],
        "skipped": plan["skipped"],
        "leftovers_dropped": progress["dropped"],
    }
    if progress["story"]:
        result["notes"] = progress["story"]
    return result


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
    plan = _choose(params, ctx.connection, ctx)
    sql = [_DROP_LEFTOVER.replace("{index}", ctx.quote(i)) for i in plan["leftovers"]]
    sql += [f"REINDEX INDEX CONCURRENTLY {ctx.quote(i)}" for i, _, _ in plan["chosen"]]
    return sql or [f"-- no index of {ctx.quote(params['table'])} is over the threshold"]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    plan = _choose(params, ctx.connection, ctx)
    return {
        "indexes_to_rebuild": [i for i, _, _ in plan["chosen"]],
        "index_bytes_to_rewrite": sum(s["bytes"] for _, s, _ in plan["chosen"]),
    }


rebuild_fragmented_indexes = Handler(
    sql_templates=(
        _LEFTOVERS,
        _DROP_LEFTOVER,
        "REINDEX INDEX CONCURRENTLY {index}",
    ),
    run_fn=_rebuild,
    render_fn=_rebuild_sql,
    estimate_fn=_rebuild_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds indexes",
)


# --- optimize_table / vacuum_full_table / update_table_statistics ---------------------------

# Every fork of the table, its TOAST table and their indexes: the same sum before and
# after, so the difference is what the files gave back.
_SIZE = """
SELECT pg_total_relation_size(c.oid) AS bytes, coalesce(s.n_dead_tup, 0) AS dead_rows
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = :oid
"""


def _vacuum(full: bool) -> Any:
    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        table = params["table"]
        oid = table_oid(conn, table)
        action = "VACUUM FULL" if full else "VACUUM"
        require_maintain(conn, table, action)
        before = conn.execute(text(_SIZE), {"oid": oid}).mappings().one()
        options = "FULL, ANALYZE" if full else "ANALYZE"
        with server_warnings(conn) as warnings:
            conn.execute(text(f"VACUUM ({options}) {ctx.quote(table)}"))
        after = conn.execute(text(_SIZE), {"oid": oid}).mappings().one()
        grew = after["bytes"] - before["bytes"]
        result: dict[str, Any] = {
            "table": table,
            "vacuumed": True,
            "full": full,
            "size_before": before["bytes"],
            "size_after": after["bytes"],
            "reclaimed_bytes": max(-grew, 0),
            "dead_rows_before": before["dead_rows"],
            "dead_rows_after": after["dead_rows"],
        }
        if grew > 0:
            result["size_note"] = (
                f"the table's files grew by {grew} bytes: VACUUM writes the free space map "
                "and visibility map, and makes dead rows' space reusable inside the file "
                "rather than returning it (VACUUM FULL returns it)"
            )
        return raise_if_skipped(table, action, warnings, result)

    return run


optimize_table = Handler(
    sql_templates=("VACUUM (ANALYZE) {table}",),
    run_fn=_vacuum(full=False),
    risk=RiskLevel.MEDIUM,
    effect="vacuums a table",
)
vacuum_full_table = Handler(
    sql_templates=("VACUUM (FULL, ANALYZE) {table}",),
    run_fn=_vacuum(full=True),
    risk=RiskLevel.HIGH,
    effect="rewrites a table under an exclusive lock",
)

_ROW_ESTIMATE = "SELECT c.reltuples::bigint AS row_estimate FROM pg_class c WHERE c.oid = :oid"


def _analyze(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    oid = table_oid(conn, table)
    require_maintain(conn, table, "ANALYZE")
    with server_warnings(conn) as warnings:
        conn.execute(text(f"ANALYZE {ctx.quote(table)}"))
    estimate = conn.execute(text(_ROW_ESTIMATE), {"oid": oid}).scalar()
    result = {"table": table, "statistics_updated": True, "row_estimate": estimate}
    return raise_if_skipped(table, "ANALYZE", warnings, result)


update_table_statistics = Handler(
    sql_templates=("ANALYZE {table}", _ROW_ESTIMATE),
    run_fn=_analyze,
    risk=RiskLevel.LOW,
    effect="updates statistics",
)


# --- corruption checks: check_table_corruption, and the health analysis when asked ------------

_AMCHECK = """
SELECT n.nspname AS schema,
       (SELECT bool_and(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p
         WHERE p.pronamespace = e.extnamespace AND p.proname = 'bt_index_check'
           AND p.pronargs = 2) AS may_check_indexes,
       (SELECT bool_and(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p
         WHERE p.pronamespace = e.extnamespace AND p.proname = 'verify_heapam') AS may_check_heap
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'amcheck'
"""
_AMCHECK_AVAILABLE = "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'"
# The extension's schema is quoted in by the dialect; it comes from pg_extension.
_BT_CHECK = "SELECT {schema}.bt_index_check(CAST(:oid AS oid)::regclass, true)"
_HEAP_CHECK = (
    "SELECT blkno, offnum, msg FROM {schema}.verify_heapam(CAST(:oid AS oid)::regclass) LIMIT 20"
)
_FULL_READ = "SELECT count(*) FROM {table}"


@dataclass(frozen=True)
class Amcheck:
    """Whether amcheck can check this database for this role, and if not, why."""

    schema: str | None
    heap: bool
    reason: str | None


def amcheck(conn: Connection) -> Amcheck:
    row = conn.execute(text(_AMCHECK)).mappings().first()
    role = conn.execute(text("SELECT current_user")).scalar()
    if row is None:
        if conn.execute(text(_AMCHECK_AVAILABLE)).scalar():
            reason = (
                "amcheck is not installed in this database (aishell does not install it: "
                "CREATE EXTENSION amcheck needs a superuser and changes the database)"
            )
        else:
            reason = (
                "amcheck is not installed and not available on this server (it ships with "
                "PostgreSQL's contrib modules)"
            )
        return Amcheck(None, False, reason)
    if not row["may_check_indexes"]:
        return Amcheck(
            row["schema"],
            False,
            f"role {role} may not run amcheck (GRANT EXECUTE ON FUNCTION "
            f"{row['schema']}.bt_index_check(regclass, boolean), "
            f"{row['schema']}.verify_heapam TO {role})",
        )
    return Amcheck(row["schema"], bool(row["may_check_heap"]), None)


def _read_check(
    conn: Connection, sql: str, params: Mapping[str, Any]
) -> tuple[list[Any], str | None, str | None]:
    """Run one check: (rows, damage found, why it could not run)."""
    try:
        return list(conn.execute(text(sql), params)), None, None
    except DBAPIError as exc:
        state = str(getattr(exc.orig, "sqlstate", "") or "")
        message = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        if state.startswith("XX"):  # data_corrupted, index_corrupted, internal_error
            return [], message, None
        if state == "42501" or is_lock_timeout(exc):
            return [], None, message
        raise


def _check_table(conn: Connection, ctx: ToolContext, table: str, tool: Amcheck) -> dict:
    oid = table_oid(conn, table)
    issues: list[str] = []
    notes: list[str] = []
    if tool.reason is not None:
        # What can be done without amcheck: read every row, so that an unreadable page
        # (or, with data checksums on, a bad checksum) shows. It is not a check of the
        # indexes or of the rows' consistency, so the table stays "not checked".
        _, damage, why = _read_check(conn, _FULL_READ.replace("{table}", ctx.quote(table)), {})
        if damage:
            return {"table": table, "status": "corrupted", "issues": [f"full read: {damage}"]}
        read = f"could not read it either: {why}" if why else "a full read found no unreadable page"
        return {"table": table, "status": "not checked", "reason": f"{tool.reason}; {read}"}
    schema = ctx.quote(str(tool.schema))
    if tool.heap:
        rows, damage, why = _read_check(conn, _HEAP_CHECK.replace("{schema}", schema), {"oid": oid})
        if why:
            return {"table": table, "status": "not checked", "reason": f"verify_heapam: {why}"}
        issues += [f"verify_heapam: {damage}"] if damage else []
        issues += [f"block {r.blkno}, item {r.offnum}: {r.msg}" for r in rows]
    else:
        notes.append("the table's rows were not checked (verify_heapam needs amcheck 1.3+)")
    for index in conn.execute(text(_INDEXES), {"oid": oid}).mappings():
        if index["method"] != "btree":
            notes.append(f"index {index['name']} ({index['method']}): amcheck checks B-trees only")
            continue
        if not index["valid"]:
            if re.search(r"_cc(new|old)[0-9]*$", index["name"]):
                notes.append(f"index {index['name']} is an invalid leftover of a REINDEX")
            else:
                issues.append(f"index {index['name']} is invalid; REINDEX it")
            continue
        _, damage, why = _read_check(
            conn, _BT_CHECK.replace("{schema}", schema), {"oid": index["oid"]}
        )
        if why:
            return {"table": table, "status": "not checked", "reason": f"bt_index_check: {why}"}
        if damage:
            issues.append(f"index {index['name']}: {damage}")
    result: dict[str, Any] = {
        "table": table,
        "status": "corrupted" if issues else "ok",
        "issues": issues,
    }
    if notes:
        result["notes"] = notes
    return result


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """amcheck over each table and its B-tree indexes; per table, checked or why not."""
    tool = amcheck(conn)
    results = [_check_table(conn, ctx, t, tool) for t in tables]
    if tool.reason is None:
        method = "amcheck" if tool.heap else "amcheck (indexes only)"
    else:
        method = "full read of each table"
    notes = [f"{r['table']}: {n}" for r in results for n in r.get("notes") or []]
    return corruption_summary(method, results, notes=notes)


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    return checked_or_skipped(corruption_check(conn, ctx, tables))


check_table_corruption = Handler(
    sql_templates=(
        _TABLE_OID,
        _INDEXES,
        _AMCHECK,
        _AMCHECK_AVAILABLE,
        _HEAP_CHECK,
        _BT_CHECK,
        _FULL_READ,
    ),
    run_fn=_check,
)


def _repair(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    if not tables:
        return {"repaired_tables": [], "backup_path": None, "note": "no corrupted tables given"}
    for table in tables:
        require_maintain(conn, table, "REINDEX TABLE CONCURRENTLY", reindex=True)
    tool = amcheck(conn)
    repaired, still = [], {}
    for table in tables:
        conn.execute(text(f"REINDEX TABLE CONCURRENTLY {ctx.quote(table)}"))
        after = _check_table(conn, ctx, table, tool)
        if after["status"] == "corrupted":
            still[table] = after["issues"]
        else:
            repaired.append(table)
    if still:
        detail = "; ".join(f"{t}: {m[0]}" for t, m in still.items())
        raise StepFailed(
            f"REINDEX did not repair {', '.join(still)} (the table's own data is damaged; "
            f"restore it from a backup): {detail}"
        )
    return {
        "repaired_tables": repaired,
        "backup_path": None,
        "note": "REINDEX rebuilds indexes from the table's rows and changes no data, "
        "so no copy was taken",
    }


repair_corrupted_tables = Handler(
    sql_templates=("REINDEX TABLE CONCURRENTLY {table}",),
    run_fn=_repair,
    render_fn=each_table("REINDEX TABLE CONCURRENTLY {table}"),
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged indexes",
)


# --- what each agent needs of the role (aishell targets check) --------------------------------

_UNREADABLE = """
SELECT n.nspname || '.' || c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
  AND NOT has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""


def _listed(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def agent_needs(conn: Connection) -> list[dict[str, Any]]:
    """The privileges each agent needs on this database and, per need, what is missing."""
    rows = table_privileges(conn, [])
    role = conn.execute(text("SELECT current_user")).scalar()
    maintain = "MAINTAIN on it" if (conn.dialect.server_version_info or (0,))[0] >= 17 else ""

    def unless(key: str) -> str | None:
        names = [r["name"] for r in rows if not r[key]]
        return f"not on {_listed(names)}" if names else None

    owner = "owner of each table" + (f" (or {maintain})" if maintain else "")
    tool = amcheck(conn)
    pgstattuple = "pgstattuple" in extensions(conn)
    unreadable = [r[0] for r in conn.execute(text(_UNREADABLE))]
    needs = [
        {
            "agent": "maintenance",
            "privilege": f"{owner}, or of the database",
            "needed_for": "VACUUM and ANALYZE (skipped without it)",
            "missing": unless("may_vacuum"),
        },
        {
            "agent": "maintenance",
            "privilege": owner,
            "needed_for": "REINDEX (skipped without it)",
            "missing": unless("may_reindex"),
        },
        {
            "agent": "maintenance",
            "privilege": "EXECUTE on amcheck (bt_index_check, verify_heapam)",
            "needed_for": "the corruption check (tables reported not checked without it)",
            "missing": tool.reason,
        },
        {
            "agent": "maintenance",
            "privilege": "EXECUTE on pgstattuple (pg_stat_scan_tables)",
            "needed_for": "measured bloat (estimated without it)",
            "missing": None if pgstattuple else "pgstattuple is not installed",
            "optional": True,
        },
        {
            "agent": "backup",
            "privilege": "SELECT on every table and sequence",
            "needed_for": "pg_dump",
            "missing": f"not on {_listed(unreadable)}" if unreadable else None,
        },
        {
            "agent": "log_cleanup",
            "privilege": "SELECT and DELETE on the tables it purges",
            "needed_for": "delete_old_records",
            "missing": unless("may_delete"),
        },
    ]
    for need in needs:
        need["role"] = role
    return needs
