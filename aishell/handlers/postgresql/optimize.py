"""optimize_table (VACUUM; of a partitioned table, its ANALYZE), vacuum_full_table and
update_table_statistics (ANALYZE) on PostgreSQL: ownership checked first, the server's
warnings heard, sizes measured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import Handler, skip_table
from aishell.handlers.held import GONE
from aishell.handlers.postgresql.catalog import (
    Partitioned,
    foreign_partitions_refusal,
    schema_partitions,
)
from aishell.handlers.postgresql.privileges import (
    raise_if_skipped,
    require_maintain,
    server_warnings,
    skipped_by_warnings,
)
from aishell.handlers.shared import shared_step
from aishell.handlers.statistics import Engine, Refusals, statistics_handler
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.tool.context import ToolContext

# Every fork of the table, its TOAST table and their indexes: the same sum before and
# after, so the difference is what the files gave back. Before: the server's clock too.
_SIZE = """
SELECT pg_catalog.pg_total_relation_size(c.oid) AS bytes,
       coalesce(s.n_dead_tup, 0) AS dead_rows{also}
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = CAST(:oid AS pg_catalog.oid)
"""
_BEFORE = _SIZE.replace("{also}", ", pg_catalog.clock_timestamp() AS at")
# After: the dead rows VACUUM had to leave (n_dead_tup is what it could not remove), and
# what keeps the oldest snapshot they are visible to, among what began before the VACUUM:
# a transaction of a session or a prepared one in this database (only those hold back a
# table's rows), a replication slot, a standby's hot_standby_feedback. The oldest
# three, described, in the same round trip.
_AFTER = _SIZE.replace(
    "{also}",
    """,
  (SELECT coalesce(pg_catalog.json_agg(h.what ORDER BY h.age DESC), '[]') FROM (
     SELECT pg_catalog.age(a.backend_xmin) AS age,
            pg_catalog.format('pid %s (%s, %s, %s, in a transaction for %ss: %L)',
            a.pid, a.usename, coalesce(nullif(a.application_name, ''), 'no name'), a.state,
            pg_catalog.round(extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)),
            pg_catalog.left(a.query, 80)) AS what
     FROM pg_stat_activity a
     WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()
       AND a.xact_start < :since
       AND a.datname = pg_catalog.current_database()
     UNION ALL
     SELECT pg_catalog.age(r.xmin), pg_catalog.format('replication slot %s', r.slot_name)
     FROM pg_replication_slots r WHERE r.xmin IS NOT NULL
     UNION ALL
     SELECT pg_catalog.age(p.transaction),
            pg_catalog.format('prepared transaction %L (%s, since %s)',
            p.gid, p.owner, p.prepared)
     FROM pg_prepared_xacts p
     WHERE p.prepared < :since AND p.database = pg_catalog.current_database()
     UNION ALL
     SELECT pg_catalog.age(w.backend_xmin), pg_catalog.format('standby %s (hot_standby_feedback)',
            coalesce(nullif(w.application_name, ''), pg_catalog.host(w.client_addr), 'local'))
     FROM pg_stat_replication w WHERE w.backend_xmin IS NOT NULL
     ORDER BY 1 DESC LIMIT 3) h) AS kept_by""",
)


def _vacuum_statement(params: Mapping[str, Any], ctx: ToolContext, full: bool) -> str:
    """The VACUUM the step sends: with ANALYZE unless told to leave the statistics."""
    options = (["FULL"] if full else []) + (["ANALYZE"] if _analyzes(params) else [])
    quoted = ctx.quote(params["table"])
    return f"VACUUM ({', '.join(options)}) {quoted}" if options else f"VACUUM {quoted}"


def _analyzes(params: Mapping[str, Any]) -> bool:
    return bool(params.get("update_stats", True))


def _vacuum(full: bool) -> Any:
    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        table = params["table"]
        if not full and (parent := _partitioned(params, ctx)) is not None:
            return _of_partitioned(params, ctx, parent)
        action = "VACUUM FULL" if full else "VACUUM"
        oid = require_maintain(conn, table, action, run_cache=ctx.run_cache)["oid"]
        before = conn.execute(text(_BEFORE), {"oid": oid}).mappings().one()
        with server_warnings(conn) as warnings:
            conn.execute(text(_vacuum_statement(params, ctx, full)))
        after = conn.execute(text(_AFTER), {"oid": oid, "since": before["at"]}).mappings().one()
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
            # ANALYZE is one of its options unless update_stats is false.
            "statistics_updated": _analyzes(params),
        }
        if after["dead_rows"] and after["kept_by"]:
            # Not an error: VACUUM did what it could. The report says who kept the rest.
            result["dead_rows_kept"] = after["dead_rows"]
            result["kept_by"] = list(after["kept_by"])
        if grew > 0:
            result["size_note"] = (
                f"the table's files grew by {grew} bytes: VACUUM writes the free space map "
                "and visibility map, and makes dead rows' space reusable inside the file "
                "rather than returning it (VACUUM FULL returns it)"
            )
        return raise_if_skipped(table, action, warnings, result)

    return run


def _partitioned(params: Mapping[str, Any], ctx: ToolContext) -> Partitioned | None:
    """The table as a partitioned one (relkind p), or None: the same answer for the
    step's render and run, so that what runs is what was shown. (A table made
    partitioned since the run read them is another table: its approval's identity
    check catches it.) Every partitioned table of the schema is read once a run, for
    all its steps: no query per table."""
    tree = schema_partitions(ctx).get(params["table"])
    return None if tree is None else Partitioned.of(tree)


def _of_partitioned(
    params: Mapping[str, Any], ctx: ToolContext, parent: Partitioned
) -> dict[str, Any]:
    """A partitioned table has no storage of its own, and its VACUUM would vacuum each
    partition again, which is a table with a step of its own: no VACUUM. Only ANALYZE
    gathers the statistics of the table as a whole (autovacuum never does), unless
    update_stats is false."""
    conn, table = ctx.connection, params["table"]
    result: dict[str, Any] = {
        "table": table,
        "vacuumed": False,
        "partitioned": True,
        "partitions": list(parent.leaves),
        "reclaimed_bytes": 0,
        "statistics_updated": _analyzes(params),
        "reason": _partitioned_reason(parent, _analyzes(params)),
    }
    if not _analyzes(params):
        return result
    refusal = foreign_partitions_refusal(ctx, table)
    if refusal is not None:
        skip_table(table, refusal, {**result, "statistics_updated": False})
    require_maintain(conn, table, "ANALYZE", run_cache=ctx.run_cache)
    with server_warnings(conn) as warnings:
        conn.execute(text(f"ANALYZE {ctx.quote(table)}"))
    return raise_if_skipped(table, "ANALYZE", warnings, result)


def _partitioned_reason(parent: Partitioned, analyzes: bool) -> str:
    said = parent.described("vacuumed") + (
        ", each by its own step where the run maintains it; no VACUUM of it, which would "
        "vacuum them again"
    )
    if not analyzes:
        return said + ", and no ANALYZE (update_stats is false)"
    # A partitioned table's ANALYZE also analyzes each partition (only PostgreSQL 18's
    # ANALYZE ONLY does not): said, as that is work their own steps did.
    return said + (
        "; ANALYZE gathered its statistics as a whole, and analyzed each partition again"
    )


def _optimize_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    parent = _partitioned(params, ctx)
    if parent is None:
        return [_vacuum_statement(params, ctx, False)]
    if _analyzes(params):
        refusal = foreign_partitions_refusal(ctx, params["table"])
        return [f"ANALYZE {ctx.quote(params['table'])}" if refusal is None else f"-- {refusal}"]
    return [f"-- {ctx.quote(params['table'])} is partitioned: no VACUUM of it, no ANALYZE"]


optimize_table = shared_step(
    Handler(
        # VACUUM (ANALYZE), or without ANALYZE when update_stats is false; a partitioned
        # table's: only its ANALYZE (_of_partitioned).
        sql_templates=("VACUUM (ANALYZE) {table}", "VACUUM {table}", "ANALYZE {table}"),
        run_fn=_vacuum(full=False),
        render_fn=_optimize_sql,
        risk=RiskLevel.MEDIUM,
        effect="vacuums a table",
    ),
    "VACUUM",
)
vacuum_full_table = Handler(
    sql_templates=("VACUUM (FULL, ANALYZE) {table}",),
    run_fn=_vacuum(full=True),
    risk=RiskLevel.HIGH,
    effect="rewrites a table under an exclusive lock",
)

# The row counts ANALYZE left in the catalog, for the tables it analyzed.
_ROW_ESTIMATES = """
SELECT c.relname AS name, c.reltuples::bigint AS row_estimate FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = pg_catalog.current_schema() AND c.relname = ANY(CAST(:tables AS text[]))
"""


def _refused(conn: Connection, tables: list[str], ctx: ToolContext) -> Refusals:
    refused: Refusals = {}
    for table in tables:
        try:
            require_maintain(conn, table, "ANALYZE", run_cache=ctx.run_cache)
        except StepSkipped as exc:
            refused[table] = str(exc)
        except StepFailed:
            # Not in the catalog: dropped since the plan (require_maintain's only failure).
            refused[table] = GONE
            continue
        foreign = foreign_partitions_refusal(ctx, table)
        if foreign is not None:
            refused[table] = foreign
    return refused


def _statements(tables: list[str], ctx: ToolContext) -> list[str]:
    # One statement for them all. The target's connection autocommits, so the server
    # analyzes each table in a transaction of its own: no table's lock is held while
    # the others are analyzed.
    named = [t for t in tables if t not in _analyzed_with_parent(tables, ctx)]
    return [f"ANALYZE {', '.join(ctx.quote(t) for t in named)}"]


def _analyzed_with_parent(tables: list[str], ctx: ToolContext) -> set[str]:
    """The partitions among `tables` whose partitioned table is among them too: its
    ANALYZE analyzes each of its partitions, so naming them as well would analyze them
    twice. Read once per list, for the render and the run alike."""
    if len(tables) < 2:
        return set()
    named = set(tables)
    parents = schema_partitions(ctx)
    return {leaf for name in named & parents.keys() for leaf in parents[name].leaves} & named


def _send(conn: Connection, statements: list[str], tables: list[str]) -> Refusals:
    with server_warnings(conn) as warnings:
        for sql in statements:
            conn.execute(text(sql))
    return skipped_by_warnings(tables, "ANALYZE", warnings)


def _estimates(conn: Connection, tables: list[str]) -> dict[str, int]:
    rows = conn.execute(text(_ROW_ESTIMATES), {"tables": tables})
    return {name: max(int(n), 0) for name, n in rows}


# What it declares it may send: its statement for one table, and its read.
update_table_statistics = statistics_handler(
    Engine(_refused, _statements, _send, _estimates, ("ANALYZE {table}", _ROW_ESTIMATES))
)
