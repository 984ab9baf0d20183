"""PostgreSQL implementations of the maintenance tools, from the server's own catalogs.

Bloat comes from pgstattuple when the extension is installed, otherwise from a
statistics-based estimate, and every output says which. Corruption checks use
amcheck when installed; otherwise a full read of each table is what can be done,
and the output says what was not checked. Indexes are rebuilt CONCURRENTLY, after
dropping the invalid leftovers of an interrupted earlier rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell.catalog import FREEZE_MAX_AGE, pg_urgency, user_tables
from aishell.errors import StepFailed
from aishell.handlers import Handler, cached, corruption_report, each_table
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
    return {
        "database_size_bytes": database["bytes"],
        "cache_hit_percent": float(database["cache_hit_percent"] or 0),
        "connections": database["connections"],
        "active_connections": database["active"],
        "long_running_transactions": long_running,
        "tables": report,
        "integrity": None,
        "integrity_note": "checked by check_table_corruption (amcheck), not here",
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


def _choose(params: Mapping[str, Any], conn: Connection, ctx: ToolContext) -> dict[str, Any]:
    return cached(ctx, f"rebuild:{params['table']}", lambda: _measure(params, conn))


def _measure(params: Mapping[str, Any], conn: Connection) -> dict[str, Any]:
    threshold = params.get("fragmentation_threshold", 30)
    min_pages = params.get("min_pages", 8)
    oid = table_oid(conn, params["table"])
    has_pgstattuple = "pgstattuple" in extensions(conn)
    leftovers = [r[0] for r in conn.execute(text(_LEFTOVERS), {"oid": oid})]
    chosen, skipped = [], []
    for index in conn.execute(text(_INDEXES), {"oid": oid}).mappings():
        if index["name"] in leftovers:
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
    return {"oid": oid, "leftovers": leftovers, "chosen": chosen, "skipped": skipped}


def _rebuild(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    plan = _choose(params, conn, ctx)
    for leftover in plan["leftovers"]:
        # An interrupted REINDEX CONCURRENTLY leaves an invalid copy that every write
        # still maintains; it goes before the retry makes another.
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {ctx.quote(leftover)}"))
    rebuilt = []
    for index, before, reason in plan["chosen"]:
        conn.execute(text(f"REINDEX INDEX CONCURRENTLY {ctx.quote(index)}"))
        after = conn.execute(
            text(
                "SELECT pg_relation_size(i.oid) FROM pg_class i WHERE i.relname = :n "
                "AND i.relnamespace = "
                "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
            ),
            {"n": index},
        ).scalar()
        rebuilt.append(
            {
                "index": index,
                "reason": reason,
                "fragmentation_before": before["fragmentation_percent"],
                "bytes_before": before["bytes"],
                "bytes_after": after,
            }
        )
    return {
        "table": params["table"],
        "indexes_rebuilt": len(rebuilt),
        "rebuilt": rebuilt,
        "skipped": plan["skipped"],
        "leftovers_dropped": plan["leftovers"],
    }


def _rebuild_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    plan = _choose(params, ctx.connection, ctx)
    sql = [f"DROP INDEX CONCURRENTLY IF EXISTS {ctx.quote(i)}" for i in plan["leftovers"]]
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
        "DROP INDEX CONCURRENTLY IF EXISTS {index}",
        "REINDEX INDEX CONCURRENTLY {index}",
    ),
    run_fn=_rebuild,
    render_fn=_rebuild_sql,
    estimate_fn=_rebuild_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds indexes",
)


# --- optimize_table / vacuum_full_table -----------------------------------------------------

_SIZE = "SELECT pg_total_relation_size(CAST(:oid AS oid)) AS bytes"


def _vacuum(full: bool) -> Any:
    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        oid = table_oid(conn, params["table"])
        before = conn.execute(text(_SIZE), {"oid": oid}).scalar()
        options = "FULL, ANALYZE" if full else "ANALYZE"
        conn.execute(text(f"VACUUM ({options}) {ctx.quote(params['table'])}"))
        after = conn.execute(text(_SIZE), {"oid": oid}).scalar()
        return {
            "table": params["table"],
            "vacuumed": True,
            "full": full,
            "size_before": before,
            "size_after": after,
            "reclaimed_bytes": before - after,
        }

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


# --- check_table_corruption / repair_corrupted_tables ---------------------------------------

_BT_CHECK = "SELECT bt_index_check(CAST(:oid AS oid)::regclass, true)"
_HEAP_CHECK = "SELECT count(*) FROM verify_heapam(CAST(:oid AS oid)::regclass)"


def _check_one(conn: Connection, ctx: ToolContext, table: str, amcheck: bool) -> list[str]:
    oid = table_oid(conn, table)
    problems: list[str] = []
    if amcheck:
        found = conn.execute(text(_HEAP_CHECK), {"oid": oid}).scalar()
        if found:
            problems.append(f"verify_heapam found {found} damaged tuple(s)")
        for index in conn.execute(text(_INDEXES), {"oid": oid}).mappings():
            if index["method"] != "btree":
                continue
            if not index["valid"]:
                problems.append(f"index {index['name']} is invalid")
                continue
            try:
                conn.execute(text(_BT_CHECK), {"oid": index["oid"]})
            except Exception as exc:  # amcheck reports damage as an error
                problems.append(f"index {index['name']}: {str(getattr(exc, 'orig', exc)).strip()}")
    else:
        # Reading every row makes the server verify every page's checksum (when
        # data checksums are on) and trip over unreadable pages.
        conn.execute(text(f"SELECT count(*) FROM {ctx.quote(table)}"))
    return problems


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    amcheck = "amcheck" in extensions(conn)
    issues = []
    for table in tables:
        issues += [{"table": table, "message": m} for m in _check_one(conn, ctx, table, amcheck)]
    return corruption_report(
        tables,
        issues,
        method="amcheck" if amcheck else "full read of each table",
        not_checked=None
        if amcheck
        else (
            "amcheck is not installed: index structure and heap consistency were not checked "
            "(CREATE EXTENSION amcheck to check them)"
        ),
    )


check_table_corruption = Handler(
    sql_templates=(
        _TABLE_OID,
        _INDEXES,
        _EXTENSIONS,
        _HEAP_CHECK,
        _BT_CHECK,
        "SELECT count(*) FROM {table}",
    ),
    run_fn=_check,
)


def _repair(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    if not tables:
        return {"repaired_tables": [], "backup_path": None, "note": "no corrupted tables given"}
    amcheck = "amcheck" in extensions(conn)
    repaired, still = [], {}
    for table in tables:
        conn.execute(text(f"REINDEX TABLE CONCURRENTLY {ctx.quote(table)}"))
        remaining = _check_one(conn, ctx, table, amcheck)
        if remaining:
            still[table] = remaining
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
