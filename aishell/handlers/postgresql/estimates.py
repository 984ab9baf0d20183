"""How bloated a PostgreSQL table and its indexes are, estimated without reading them
whole, and which of them are worth a full scan (pgstattuple, pgstatindex).

A table: pgstattuple_approx where pgstattuple 1.3 or later is installed (it reads only
the pages the visibility map does not vouch for, and the free space map for the rest),
else the catalog's statistics. An index: the pages a rebuild would make of its entries
(pg_stats' average key widths and distinct values, posting lists where it deduplicates,
its fill factor: aishell/handlers/postgresql/btree.py) against its size. A full scan
reads every page, so a table is scanned only when its estimate reaches the threshold,
and an index only when its estimate reaches half of it (the order of its leaf pages can
only be measured, so its bar is lower) or cannot be made (no statistics yet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.handlers import read_together
from aishell.handlers.postgresql import btree
from aishell.sqltext import text
from aishell.tool.context import ToolContext
from aishell.units import exact

PGSTATTUPLE_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'pgstattuple'"
APPROX = (
    "SELECT table_len, scanned_percent, approx_free_percent, dead_tuple_percent "
    "FROM pgstattuple_approx(CAST(:oid AS oid)::regclass)"
)


def _size(table: str, relation: str) -> str:
    """A relation's size (the table aliased `table`, or one of its indexes): pg_class's
    page count where nothing changed the table since the last ANALYZE counted them (the
    count is then exact), else measured. pg_relation_size opens the relation, which
    costs a new session a cache entry for each of 10,000 relations and waits behind a
    lock held on it."""
    return (
        f"CASE WHEN {table}.reltuples >= '0'::pg_catalog.float4\n"
        f"                 AND pg_catalog.pg_stat_get_mod_since_analyze({table}.oid) = 0\n"
        f"            THEN {relation}.relpages * pg_catalog.current_setting('block_size')::bigint\n"
        f"            ELSE pg_catalog.pg_relation_size({relation}.oid) END"
    )


# Without pgstattuple_approx: the bytes the live rows need (from pg_stats' average widths
# and a 24-byte tuple header) against the table's size.
STATISTICS = f"""
SELECT c.reltuples AS reltuples, c.relpages AS relpages,
       {_size("c", "c")} AS bytes,
       pg_catalog.current_setting('block_size')::int AS block_size,
       (SELECT coalesce(pg_catalog.sum(s.avg_width), 0) FROM pg_stats s
         WHERE s.schemaname = n.nspname AND s.tablename = c.relname) AS row_width,
       coalesce(st.n_dead_tup, 0) AS dead,
       coalesce(st.n_live_tup, 0) AS live
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables st ON st.relid = c.oid
WHERE c.oid = CAST(:oid AS pg_catalog.oid)
"""
# The table's oid and each of its indexes with what an index's estimate needs: its
# entries (reltuples, kept by VACUUM and ANALYZE), its fill factor, and the average width
# of its key columns; a key column without statistics (or an expression) makes the
# estimate unknown. A table without indexes is one row without an index.
INDEXES = f"""
SELECT t.oid AS table_oid, t.relkind = 'p' AS partitioned,
       i.relname AS name, i.oid AS oid, x.indisvalid AS valid,
       x.indisexclusion AS exclusion, i.relkind = 'I' AS index_partitioned,
       am.amname AS method, i.reltuples AS entries,
       {_size("t", "i")} AS bytes,
       {_size("t", "t")} AS table_bytes, t.relpages AS table_pages,
       pg_catalog.current_setting('block_size')::int AS block_size,
       coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                   FROM pg_catalog.unnest(i.reloptions) o
                  WHERE substring(o FROM '^fillfactor=([0-9]+)$') IS NOT NULL), 90)
           AS fillfactor,
       (SELECT pg_catalog.sum(s.avg_width) FROM pg_attribute a
          JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname
                         AND s.attname = a.attname
         WHERE a.attrelid = t.oid AND a.attnum = ANY(CAST(x.indkey AS int2[])))
           AS key_width,
       ARRAY(SELECT s.n_distinct FROM pg_attribute a
               JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname
                              AND s.attname = a.attname AND NOT s.inherited
              WHERE a.attrelid = t.oid AND a.attnum = ANY(CAST(x.indkey AS int2[])))
           AS distincts,
       {btree.DEDUPLICATES} AS deduplicates,
       (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(CAST(x.indkey AS int2[])) k
         WHERE NOT EXISTS (
               SELECT 1 FROM pg_attribute a
                 JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname
                                AND s.attname = a.attname
                WHERE a.attrelid = t.oid AND a.attnum = k)) AS unknown_columns
FROM pg_class t
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_index x ON x.indrelid = t.oid
LEFT JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_am am ON am.oid = i.relam
WHERE t.relname = :t AND n.nspname = pg_catalog.current_schema()
ORDER BY i.relname
"""
# The same figures of every table named, in one query each (a plan's tables, read
# together: aishell/tool/readings.py). pg_stats is read once for them all (a lookup per
# index or table would read it 10,000 times), and the statistics functions stand for
# pg_stat_user_tables (whose dozen figures per table cost ten times the time). The
# indexes' query also gives each table's STATISTICS_EACH figures: pg_stats, the costliest
# part of both, is then read once for a plan's estimates (recent_indexes). The tables
# named are found once, by the catalog's index on names, and joined by oid after: the
# server otherwise chose, where few tables have an index, to compare each of pg_index's
# rows with every name of the list (0.9 s for 10,000 names).
INDEXES_EACH = f"""WITH tables AS (
  SELECT t.oid, t.relname FROM pg_class t
  JOIN pg_namespace n ON n.oid = t.relnamespace
  WHERE t.relname = ANY(CAST(:names AS text[])) AND n.nspname = pg_catalog.current_schema()
), widths AS (
  SELECT s.tablename, s.attname, pg_catalog.sum(s.avg_width) AS width,
         pg_catalog.max(s.n_distinct) FILTER (WHERE NOT s.inherited) AS distinct_values
  FROM pg_stats s
  WHERE s.schemaname = pg_catalog.current_schema()
    AND s.tablename = ANY(CAST(:names AS text[]))
  GROUP BY s.tablename, s.attname
), keys AS (
  SELECT x.indexrelid, k.attnum, w.width, w.distinct_values
  FROM tables t
  JOIN pg_index x ON x.indrelid = t.oid
  CROSS JOIN LATERAL pg_catalog.unnest(CAST(x.indkey AS int2[])) k(attnum)
  LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
  LEFT JOIN widths w ON w.tablename = t.relname AND w.attname = a.attname
), per_index AS (
  SELECT indexrelid, pg_catalog.count(*) FILTER (WHERE width IS NULL) AS unknown_columns
  FROM keys GROUP BY indexrelid
), key_widths AS (
  SELECT indexrelid, pg_catalog.sum(width) AS key_width,
         pg_catalog.array_agg(distinct_values) AS distincts
  FROM (SELECT DISTINCT indexrelid, attnum, width, distinct_values FROM keys
        WHERE width IS NOT NULL) d
  GROUP BY indexrelid
), row_widths AS (
  SELECT tablename, pg_catalog.sum(width) AS row_width FROM widths GROUP BY tablename
)
SELECT t.relname AS tbl, t.oid AS table_oid, t.relkind = 'p' AS partitioned,
       i.relname AS name, i.oid AS oid, i.relkind = 'I' AS index_partitioned,
       t.reltuples AS reltuples, t.relpages AS table_pages,
       {_size("t", "t")} AS table_bytes,
       coalesce(rw.row_width, 0)::bigint AS row_width,
       pg_catalog.pg_stat_get_dead_tuples(t.oid) AS dead,
       pg_catalog.pg_stat_get_live_tuples(t.oid) AS live,
       x.indisvalid AS valid, x.indisexclusion AS exclusion, am.amname AS method,
       i.reltuples AS entries,
       {_size("t", "i")} AS bytes,
       pg_catalog.current_setting('block_size')::int AS block_size,
       coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                   FROM pg_catalog.unnest(i.reloptions) o
                  WHERE substring(o FROM '^fillfactor=([0-9]+)$') IS NOT NULL), 90)
           AS fillfactor,
       kw.key_width, kw.distincts, {btree.DEDUPLICATES} AS deduplicates, p.unknown_columns
FROM tables named
JOIN pg_class t ON t.oid = named.oid
LEFT JOIN pg_index x ON x.indrelid = t.oid
LEFT JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_am am ON am.oid = i.relam
LEFT JOIN per_index p ON p.indexrelid = x.indexrelid
LEFT JOIN key_widths kw ON kw.indexrelid = x.indexrelid
LEFT JOIN row_widths rw ON rw.tablename = t.relname
ORDER BY t.relname, i.relname
"""
STATISTICS_EACH = f"""SELECT c.relname AS tbl, c.reltuples AS reltuples,
       c.relpages AS relpages,
       {_size("c", "c")} AS bytes,
       pg_catalog.current_setting('block_size')::int AS block_size,
       coalesce(w.row_width, 0) AS row_width,
       pg_catalog.pg_stat_get_dead_tuples(c.oid) AS dead,
       pg_catalog.pg_stat_get_live_tuples(c.oid) AS live
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN (SELECT s.tablename, pg_catalog.sum(s.avg_width) AS row_width FROM pg_stats s
           WHERE s.schemaname = pg_catalog.current_schema()
             AND s.tablename = ANY(CAST(:names AS text[]))
           GROUP BY s.tablename) w ON w.tablename = c.relname
WHERE c.relname = ANY(CAST(:names AS text[])) AND n.nspname = pg_catalog.current_schema()
"""
APPROX_EACH = """
SELECT c.relname AS tbl, a.table_len, a.scanned_percent, a.approx_free_percent,
       a.dead_tuple_percent
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL pgstattuple_approx(c.oid::regclass) a
WHERE c.relname = ANY(CAST(:names AS text[])) AND n.nspname = pg_catalog.current_schema()
  AND c.relkind = 'r'
"""
PGSTATTUPLE = (
    "SELECT table_len, tuple_percent, dead_tuple_percent, free_percent "
    "FROM pgstattuple(CAST(:oid AS oid)::regclass)"
)
PGSTATINDEX = (
    "SELECT index_size, internal_pages, leaf_pages, avg_leaf_density, leaf_fragmentation "
    "FROM pgstatindex(CAST(:oid AS oid)::regclass)"
)
SQL = (
    PGSTATTUPLE_VERSION,
    APPROX,
    STATISTICS,
    INDEXES,
    PGSTATTUPLE,
    PGSTATINDEX,
    INDEXES_EACH,
    STATISTICS_EACH,
    APPROX_EACH,
)


@dataclass(frozen=True)
class Scanners:
    """What this database can measure with: pgstattuple's full scans, and its sampled
    estimate (pgstattuple_approx, from version 1.3)."""

    pgstattuple: bool
    approx: bool


def scanners(ctx: ToolContext) -> Scanners:
    """Asked once per run (or preview): the steps of a run measure alike."""
    found = ctx.run_cache.get("pgstattuple")
    if not isinstance(found, Scanners):
        found = ctx.run_cache["pgstattuple"] = _scanners(ctx.connection)
    return found


def _scanners(conn: Connection) -> Scanners:
    version = conn.execute(text(PGSTATTUPLE_VERSION)).scalar()
    if version is None:
        return Scanners(False, False)
    parts = tuple(int(p) for p in str(version).split(".") if p.isdigit())
    return Scanners(True, parts >= (1, 3))


def table_estimate(conn: Connection, oid: int, scans: Scanners) -> dict[str, Any]:
    """The table's share of dead and free space, without reading all of it."""
    if scans.approx:
        return _approx(conn.execute(text(APPROX), {"oid": oid}).mappings().one())
    return _from_statistics(conn.execute(text(STATISTICS), {"oid": oid}).mappings().one(), scans)


def recent_table_estimate(
    ctx: ToolContext, table: str, oid: int, scans: Scanners
) -> dict[str, Any]:
    """table_estimate, read with the plan's other tables (one query for them all)."""

    def each(names: Sequence[str]) -> dict[str, dict[str, Any]]:
        sql = APPROX_EACH if scans.approx else STATISTICS_EACH
        rows = _together(ctx.connection, sql, names)
        if scans.approx:
            return {r["tbl"]: _approx(r) for r in rows}
        return {r["tbl"]: _from_statistics(r, scans) for r in rows}

    return ctx.table_readings.get_each(
        table,
        ("estimate", scans.approx),
        lambda: table_estimate(ctx.connection, oid, scans),
        each,
    )


def _approx(row: Mapping[Any, Any]) -> dict[str, Any]:
    dead, free = float(row["dead_tuple_percent"]), float(row["approx_free_percent"])
    return {
        "method": "pgstattuple_approx",
        "fragmentation_percent": round(dead + free, 2),
        "dead_tuple_percent": round(dead, 2),
        "free_space_percent": round(free, 2),
        "size_bytes": int(row["table_len"]),
        "scanned_percent": round(float(row["scanned_percent"]), 2),
    }


def _from_statistics(row: Mapping[Any, Any], scans: Scanners) -> dict[str, Any]:
    """The share of the file that rows do not fill, from the planner's statistics: the
    row count times the average width. A table with no row count (reltuples -1: never
    vacuumed or analyzed, or truncated since) or no widths (never analyzed) has no
    estimate: None, not 100% (no rows) nor 0% (no width)."""
    total = row["live"] + row["dead"]
    why = "pgstattuple is not installed" if not scans.pgstattuple else "pgstattuple before 1.3"
    fragmentation: float | None = 0.0
    method = f"statistics estimate ({why})"
    if row["bytes"] and (row["reltuples"] < 0 or not row["row_width"]):
        fragmentation = None
        method = f"not measured: the table has no statistics (ANALYZE it), and {why}"
    elif row["bytes"]:
        rows = row["reltuples"] * grown(row["relpages"], row["bytes"], row["block_size"])
        needed = rows * (row["row_width"] + 24)
        fragmentation = round(max(100.0 * (1 - needed / row["bytes"]), 0.0), 2)
    return {
        "method": method,
        "fragmentation_percent": fragmentation,
        "dead_tuple_percent": round(100.0 * row["dead"] / total, 2) if total else 0.0,
        "free_space_percent": None,
        "size_bytes": int(row["bytes"]),
        "scanned_percent": 0.0,
    }


def _together(conn: Connection, sql: str, names: Sequence[str]) -> list[Mapping[Any, Any]]:
    """The rows of one query of many tables (none when it failed: each is read alone)."""
    if not names:
        return []
    return read_together(
        conn, lambda: list(conn.execute(text(sql), {"names": list(names)}).mappings().all())
    )


def full_table_scan(conn: Connection, oid: int) -> dict[str, Any]:
    row = conn.execute(text(PGSTATTUPLE), {"oid": oid}).mappings().one()
    dead, free = float(row["dead_tuple_percent"]), float(row["free_percent"])
    return {
        "method": "pgstattuple",
        "fragmentation_percent": round(dead + free, 2),
        "dead_tuple_percent": dead,
        "free_space_percent": free,
        "size_bytes": int(row["table_len"]),
    }


@dataclass(frozen=True)
class TableIndexes:
    """A table's oid, whether it is partitioned (no storage of its own), and each of its
    indexes with its estimated free share (None: no statistics to estimate it from)."""

    oid: int
    partitioned: bool
    indexes: list[dict[str, Any]]


def table_indexes(conn: Connection, table: str) -> TableIndexes:
    """The table's oid and indexes."""
    rows = conn.execute(text(INDEXES), {"t": table}).mappings().all()
    if not rows:
        raise StepFailed(f"Table {table!r} is not in the current schema")
    return _indexes_of(rows)


def _indexes_of(rows: Sequence[Mapping[Any, Any]]) -> TableIndexes:
    indexes = [
        {
            "name": r["name"],
            "oid": r["oid"],
            "valid": r["valid"],
            # An exclusion constraint's index, which no REINDEX CONCURRENTLY rebuilds.
            "exclusion": bool(r["exclusion"]),
            "method": r["method"],
            # A partitioned index (of a partitioned table) has no storage of its own.
            "partitioned": bool(r["index_partitioned"]),
            "bytes": int(r["bytes"]),
            "pages": int(r["bytes"]) // int(r["block_size"]),
            "block_size": int(r["block_size"]),
            "fillfactor": int(r["fillfactor"]),
            "estimated_free_percent": _index_free(r),
        }
        for r in rows
        if r["name"] is not None
    ]
    return TableIndexes(int(rows[0]["table_oid"]), bool(rows[0]["partitioned"]), indexes)


def recent_indexes(ctx: ToolContext, table: str) -> TableIndexes:
    """table_indexes, as an earlier step of the run read them if it just did, else read
    with the plan's other tables (one query for them all)."""

    def each(names: Sequence[str]) -> dict[str, TableIndexes]:
        by_table: dict[str, list[Mapping[Any, Any]]] = {}
        for row in _together(ctx.connection, INDEXES_EACH, names):
            by_table.setdefault(row["tbl"], []).append(row)
        scans = scanners(ctx)
        if not scans.approx:
            # The statistics estimate of each table came with its indexes.
            ctx.table_readings.keep_each(
                ("estimate", False),
                {
                    name: _from_statistics(_table_figures(rows[0]), scans)
                    for name, rows in by_table.items()
                },
            )
        return {name: _indexes_of(rows) for name, rows in by_table.items()}

    return ctx.table_readings.get_each(
        table, "indexes", lambda: table_indexes(ctx.connection, table), each
    )


def _table_figures(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The figures of the table _from_statistics reads, from a row of INDEXES_EACH (which
    names them for the table): only those, not a copy of the whole row for each table."""
    return {
        "live": row["live"],
        "dead": row["dead"],
        "reltuples": row["reltuples"],
        "row_width": row["row_width"],
        "block_size": row["block_size"],
        "bytes": row["table_bytes"],
        "relpages": row["table_pages"],
    }


def grown(pages: Any, now_bytes: Any, block: Any) -> float:
    """How many times over the table's file is what it was when VACUUM or ANALYZE last
    counted its rows (relpages): the planner reads reltuples so, as rows per page times
    the pages there are now. Without it a table filled a thousandfold since would have
    its rows counted as one thousandth of its file, and be called 99.9% free."""
    if not pages or not now_bytes:
        return 1.0
    return float(now_bytes) / (int(pages) * int(block))


def _index_free(row: Mapping[Any, Any]) -> float | None:
    """The index's estimated free share, its entries counted as the table has grown."""
    if row["entries"] < 0:
        return None
    grew = grown(row["table_pages"], row["table_bytes"], row["block_size"])
    return btree.estimated_free(row, float(row["entries"]) * grew)


def table_scan_reason(estimate: Mapping[str, Any], threshold: float, scans: Scanners) -> str | None:
    """Why the table is read whole with pgstattuple; None when its estimate is enough."""
    if not scans.pgstattuple:
        return None
    if estimate["fragmentation_percent"] is None:
        return "no statistics to estimate it from (never analyzed, or truncated since)"
    if estimate["fragmentation_percent"] < threshold:
        return None
    if estimate["scanned_percent"] >= 100:
        return None  # the estimate read every page (none all-visible): it measured them
    return (
        f"estimated {estimate['fragmentation_percent']}% dead or free "
        f"({estimate['method']}), at or above the {exact(threshold)}% threshold"
    )


def index_scan_reason(index: Mapping[str, Any], threshold: float, scans: Scanners) -> str | None:
    """Why the index is read whole with pgstatindex; None when its estimate is enough
    (or nothing can measure it: pgstattuple missing, not a valid B-tree, a partitioned
    index, which has no pages of its own)."""
    if not scans.pgstattuple or index["method"] != "btree" or not index["valid"]:
        return None
    if index.get("partitioned"):
        return None
    estimate = index["estimated_free_percent"]
    if estimate is None:
        return "no statistics to estimate it from"
    if estimate >= threshold / 2:
        return f"estimated {estimate}% free, at least half the {exact(threshold)}% threshold"
    return None


def not_scanned(index: Mapping[str, Any], threshold: float) -> str:
    """Why an index was left unmeasured, for a step's output."""
    return (
        f"estimated {index['estimated_free_percent']}% free from catalog statistics: "
        f"under half the {exact(threshold)}% threshold, not read"
    )


def full_index_scan(conn: Connection, index: Mapping[str, Any]) -> dict[str, Any]:
    """pgstatindex of one index: its leaf pages, their order and their fill."""
    row = conn.execute(text(PGSTATINDEX), {"oid": index["oid"]}).mappings().one()
    return {
        "leaf_pages": row["leaf_pages"],
        "fragmentation_percent": _leaf_fragmentation(row["leaf_fragmentation"]),
        # What a rebuild at the index's fill factor gives back, as its estimate says it.
        "free_space_percent": btree.measured_free(row, index["block_size"], index["fillfactor"]),
    }


def _leaf_fragmentation(value: Any) -> float:
    """pgstatindex's share of leaf pages out of order; an index without leaf pages (an
    empty table's) has none, where pgstatindex divides by no pages and says NaN, which
    no step's output, report or JSON could carry."""
    share = float(value or 0)
    return 0.0 if math.isnan(share) else share


def recent_index_scan(ctx: ToolContext, table: str, index: Mapping[str, Any]) -> dict[str, Any]:
    """full_index_scan, as an earlier step of the run made it if it just did."""
    return ctx.table_readings.get(
        table, ("pgstatindex", index["oid"]), lambda: full_index_scan(ctx.connection, index)
    )


def scan_comment(kind: str, name: str, size: int, reason: str) -> str:
    """The line a step's SQL shows before a full scan: what it reads, and why."""
    return f"-- full scan of {kind} {name} ({size:,} bytes): {reason}"
