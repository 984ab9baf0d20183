"""analyze_database_health on PostgreSQL: sizes, dead rows, transaction-ID age and
statistics per table, long transactions, and the corruption check when asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import Handler, step_tables
from aishell.handlers.held import (
    Tablewise,
    one_at_a_time,
    rollback,
    tablewise_output,
    worth_one_at_a_time,
)
from aishell.handlers.integrity import health_integrity
from aishell.handlers.postgresql.catalog import invalid_index, schema_partitions
from aishell.handlers.postgresql.corruption import check_statements, corruption_check
from aishell.sqltext import text
from aishell.targets.catalog import FREEZE_MAX_AGE, pg_urgency, user_tables
from aishell.targets.partitions import PARTITION_TREE, PartitionTree
from aishell.tool.context import ToolContext
from aishell.tool.readings import TableReadings
from aishell.units import took

# Transaction-ID wraparound is at 2^31. A relation without a relfrozenxid of its own (a
# partitioned table: 0, whose age() is 2^31 - 1) has no age: its partitions have theirs.
WRAPAROUND = 2**31

# A partitioned table (relkind p) has no storage or rows of its own: its figures are
# its leaf partitions' totals (through every level: a partition may be partitioned
# again), each leaf also listed as a table of its own. Its partitions are its direct
# children; its leaves, the tables holding its rows (foreign ones hold none here). Which
# they are is the run's read of the partition trees (targets/partitions.py), given as
# (partitioned table, member, whether its own partition) triples: the tables planning
# and the maintenance steps take for its partitions are those summed here.
_TABLE_STATS = """
WITH named AS (
  SELECT c.oid, c.relname, c.relkind, c.relfrozenxid FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
    AND (pg_catalog.cardinality(CAST(:tables AS text[])) = 0
         OR c.relname = ANY(CAST(:tables AS text[])))
), tree AS (
  SELECT pg_catalog.unnest(CAST(CAST(:roots AS bigint[]) AS pg_catalog.oid[])) AS root,
         pg_catalog.unnest(CAST(CAST(:members AS bigint[]) AS pg_catalog.oid[])) AS relid,
         pg_catalog.unnest(CAST(:direct AS boolean[])) AS direct
), leaves AS (
  SELECT t.root,
         pg_catalog.count(*) AS leaves,
         pg_catalog.sum(coalesce(s.n_live_tup, 0)) AS live,
         pg_catalog.sum(coalesce(s.n_dead_tup, 0)) AS dead,
         pg_catalog.sum(pg_catalog.pg_total_relation_size(l.oid)) AS total_bytes,
         pg_catalog.sum(pg_catalog.pg_relation_size(l.oid)) AS table_bytes,
         pg_catalog.sum(pg_catalog.pg_indexes_size(l.oid)) AS index_bytes
  FROM tree t JOIN pg_class l ON l.oid = t.relid AND l.relkind = 'r'
  LEFT JOIN pg_stat_user_tables s ON s.relid = l.oid
  GROUP BY t.root
)
SELECT c.relname AS name,
       c.oid AS oid,
       c.relkind = 'p' AS partitioned,
       (SELECT pg_catalog.count(*) FROM tree t JOIN pg_class p ON p.oid = t.relid
        WHERE t.root = c.oid AND t.direct) AS partitions,
       coalesce(f.leaves, 0) AS leaf_partitions,
       CASE WHEN c.relkind = 'p' THEN coalesce(f.live, 0)
            ELSE coalesce(s.n_live_tup, 0) END::bigint AS live,
       CASE WHEN c.relkind = 'p' THEN coalesce(f.dead, 0)
            ELSE coalesce(s.n_dead_tup, 0) END::bigint AS dead,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
       CASE WHEN c.relfrozenxid <> '0'::xid THEN pg_catalog.age(c.relfrozenxid) END AS xid_age,
       CASE WHEN c.relkind = 'p' THEN coalesce(f.total_bytes, 0)
            ELSE pg_catalog.pg_total_relation_size(c.oid) END::bigint AS total_bytes,
       CASE WHEN c.relkind = 'p' THEN coalesce(f.table_bytes, 0)
            ELSE pg_catalog.pg_relation_size(c.oid) END::bigint AS table_bytes,
       CASE WHEN c.relkind = 'p' THEN coalesce(f.index_bytes, 0)
            ELSE pg_catalog.pg_indexes_size(c.oid) END::bigint AS index_bytes,
       (SELECT pg_catalog.count(*) FROM pg_index x WHERE x.indrelid = c.oid) AS indexes,
       ARRAY(SELECT i.relname::pg_catalog.text FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = c.oid AND NOT x.indisvalid AND i.relkind = 'i'
             ORDER BY i.relname) AS invalid_indexes,
       ARRAY(SELECT i.relname::pg_catalog.text FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = c.oid AND NOT x.indisready AND i.relkind = 'i') AS unready_indexes
FROM named c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN leaves f ON f.root = c.oid
"""
_DATABASE = """
SELECT pg_catalog.pg_database_size(pg_catalog.current_database()) AS bytes,
       CASE WHEN blks_hit + blks_read > 0
            THEN pg_catalog.round(100.0 * blks_hit::pg_catalog.numeric
                                 / (blks_hit + blks_read)::pg_catalog.numeric, 2)
       END AS cache_hit_percent,
       (SELECT pg_catalog.count(*) FROM pg_stat_activity
         WHERE datname = pg_catalog.current_database())
           AS connections,
       (SELECT pg_catalog.count(*) FROM pg_stat_activity
         WHERE datname = pg_catalog.current_database() AND state = 'active') AS active
FROM pg_stat_database WHERE datname = pg_catalog.current_database()
"""
_LONG_TRANSACTIONS = """
SELECT pid, usename, application_name, state,
       extract(epoch FROM pg_catalog.now() - xact_start)::bigint AS seconds
FROM pg_stat_activity
WHERE xact_start < pg_catalog.now() - interval '5 minutes' AND pid <> pg_catalog.pg_backend_pid()
ORDER BY xact_start
"""


def urgency(row: Mapping[str, Any]) -> float:
    """How soon a table needs work (the same ranking the planner uses); a partitioned
    table's none: its figures are its partitions', which are ranked themselves."""
    if row["partitioned"]:
        return 0.0
    return pg_urgency(row["xid_age"], row["live"], row["dead"], row["total_bytes"])


def _table_health(row: Mapping[Any, Any]) -> dict[str, Any]:
    total = row["live"] + row["dead"]
    return {
        "table": row["name"],
        # Partitioned: no storage of its own; its figures are its leaf partitions'
        # totals, and each partition is listed as a table too.
        "partitioned": bool(row["partitioned"]),
        "partitions": row["partitions"],
        "leaf_partitions": row["leaf_partitions"],
        "rows": row["live"],
        "dead_rows": row["dead"],
        "dead_percent": round(100.0 * row["dead"] / total, 2) if total else 0.0,
        "xid_age": row["xid_age"],
        "wraparound_percent": (
            None if row["xid_age"] is None else round(100.0 * row["xid_age"] / WRAPAROUND, 2)
        ),
        "table_bytes": row["table_bytes"],
        "index_bytes": row["index_bytes"],
        "indexes": row["indexes"],
        # Not used by queries; no sign of corruption (what each is: _recommendations).
        "invalid_indexes": list(row["invalid_indexes"]),
        "unready_indexes": list(row["unready_indexes"]),
        "last_vacuum": row["last_vacuum"],
        "last_analyze": row["last_analyze"],
        "statistics": "present" if row["last_analyze"] else "missing",
        "urgency": urgency(row),
    }


def _recommendations(report: list[dict[str, Any]], long_running: list[dict[str, Any]]) -> list[str]:
    """Wraparound first, invalid indexes, dead rows, missing statistics, then the long
    transactions."""
    recommendations = []
    for t in report:
        if (t["xid_age"] or 0) > FREEZE_MAX_AGE // 2:
            recommendations.append(
                f"{t['table']}: transaction-ID age {t['xid_age']:,} is "
                f"{t['wraparound_percent']}% of the way to wraparound; VACUUM it first"
            )
        recommendations += [
            f"{t['table']}: {invalid_index(i, i not in t['unready_indexes'])}"
            for i in t["invalid_indexes"]
        ]
        # A parent's dead rows are its partitions', advised each by name.
        if t["dead_percent"] >= 20 and t["dead_rows"] >= 1000 and not t["partitioned"]:
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
            f"a transaction open for {took(float(tx['seconds']), 0)}; it keeps VACUUM from "
            "removing dead rows"
        )
    return recommendations


def _table_rows(
    conn: Connection, tables: list[str], known: TableReadings, trees: Mapping[str, PartitionTree]
) -> Tablewise[list[Any]]:
    """Every table's figures in one query; after a lock timeout (sizing takes a table's
    lightest lock, which an ACCESS EXCLUSIVE holder or one queued for it holds off),
    one table at a time, so that one held table leaves only itself out. The tables a
    preview already knows held are left out of the query, and named held."""
    seen = [t for t in tables if isinstance(known.held(t), DBAPIError)]
    if not seen:
        return _every_table_row(conn, tables, known, trees)
    rest = [t for t in tables if t not in seen]
    found = _every_table_row(conn, rest, known, trees) if rest else Tablewise()
    held: Tablewise[list[Any]] = one_at_a_time(conn, seen, lambda t: [], "Sizing", known)
    found.held.update(held.held)
    found.lock_error = found.lock_error or held.lock_error
    return found


def _tree_params(trees: Mapping[str, PartitionTree], tables: list[str]) -> dict[str, list[Any]]:
    """The partition trees of the tables named (none named: of all) as _TABLE_STATS takes
    them: each partitioned table's own partitions and the tables holding its rows."""
    named = set(tables)
    pairs = [
        (tree.oid, m.oid, m.direct)
        for name, tree in trees.items()
        if not named or name in named
        for m in tree.under
        if m.direct or m.kind == "r"
    ]
    return {
        "roots": [p[0] for p in pairs],
        "members": [p[1] for p in pairs],
        "direct": [p[2] for p in pairs],
    }


def _every_table_row(
    conn: Connection, tables: list[str], known: TableReadings, trees: Mapping[str, PartitionTree]
) -> Tablewise[list[Any]]:
    def read(named: list[str]) -> list[Any]:
        params = {"tables": named, **_tree_params(trees, named)}
        return list(conn.execute(text(_TABLE_STATS), params).mappings())

    try:
        rows = read(tables)
    except DBAPIError as exc:
        if not worth_one_at_a_time(exc):
            raise
        rollback(conn)
    else:
        found: Tablewise[list[Any]] = Tablewise(done={r["name"]: [r] for r in rows})
        found.gone = [t for t in tables if t not in found.done]
        return found
    found = one_at_a_time(
        conn,
        tables or user_tables(conn),
        lambda t: read([t]),
        "Sizing",
        known,
    )
    found.gone += [t for t, rows in found.done.items() if not rows]  # dropped meanwhile
    return found


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    database = conn.execute(text(_DATABASE)).mappings().one()
    found = _table_rows(conn, tables, ctx.table_readings, schema_partitions(ctx))
    rows = [r for done in found.done.values() for r in done]
    report = sorted((_table_health(r) for r in rows), key=lambda t: (-t["urgency"], t["table"]))
    long_running = [dict(r) for r in conn.execute(text(_LONG_TRANSACTIONS)).mappings()]
    recommendations = _recommendations(report, long_running)
    check = (
        corruption_check(conn, ctx, [t["table"] for t in report])
        if params.get("check_corruption")
        else None
    )
    return {
        **tablewise_output(found),
        "database_size_bytes": database["bytes"],
        "size_method": "pg_database_size",
        "cache_hit_percent": float(database["cache_hit_percent"] or 0),
        "connections": database["connections"],
        "active_connections": database["active"],
        "long_running_transactions": long_running,
        **health_integrity(report, check, recommendations, "amcheck"),
    }


def _health_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """Its catalog reads, then (with check_corruption) each table's check. (The partition
    trees are the run's one read, shared by its steps, as optimize_table shows none.)"""
    statements = [_DATABASE, _TABLE_STATS, _LONG_TRANSACTIONS]
    if params.get("check_corruption"):
        tables = step_tables(params, ctx)
        statements += check_statements(ctx.connection, ctx, tables)
    return statements


analyze_database_health = Handler(
    # PARTITION_TREE: the run's read of the partition trees (handlers/postgresql/catalog.py's
    # schema_partitions), which this step makes where no step before it has.
    sql_templates=(_DATABASE, PARTITION_TREE, _TABLE_STATS, _LONG_TRANSACTIONS),
    run_fn=_health,
    render_fn=_health_sql,
)
