"""SQLite implementations of the maintenance tools: real page counts, real checks.

Fragmentation comes from the dbstat virtual table: a b-tree's leaf pages read in
key order should sit at consecutive page numbers; every leaf that does not is a
seek (the share of such leaves is the "logical fragmentation" SQL Server and Ola
Hallengren's scripts act on). Unused bytes in leaf pages are the free space a
rebuild would give back. Without dbstat only database-wide free pages are known.

A database file (or folder) the process may not write is found before any write and
the step ends `skipped` with the reason; so does a write SQLite refuses as read-only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from aishell.catalog import user_tables
from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import Handler, cached, each_table
from aishell.handlers.report import (
    checked_or_skipped,
    corruption_advice,
    corruption_summary,
    integrity_line,
)
from aishell.registry import RiskLevel, ToolContext
from aishell.sqltext import quote_identifier

# --- measurements -----------------------------------------------------------------


def database_pages(conn: Connection) -> dict[str, int]:
    page_size = conn.execute(text("PRAGMA page_size")).scalar_one()
    page_count = conn.execute(text("PRAGMA page_count")).scalar_one()
    freelist = conn.execute(text("PRAGMA freelist_count")).scalar_one()
    return {
        "page_size": page_size,
        "page_count": page_count,
        "freelist_count": freelist,
        "size_bytes": page_size * page_count,
        "free_bytes": page_size * freelist,
    }


def database_size(conn: Connection) -> dict[str, Any]:
    """The file's size in pages, measured the same way before a run and after it."""
    pages = database_pages(conn)
    return {
        "size_bytes": pages["size_bytes"],
        "method": "page_count x page_size",
        "freelist_count": pages["freelist_count"],
    }


# --- may this process write the file? --------------------------------------------------


def database_file(conn: Connection) -> Path | None:
    for _seq, name, file in conn.execute(text("PRAGMA database_list")):
        if name == "main" and file:
            return Path(file)
    return None


def read_only_reason(conn: Connection) -> str | None:
    """Why SQLite would refuse to write this database, or None. os.access asks the
    kernel as SQLite's own open() would (a read-only mount or an immutable file refuses
    even root); the file is not opened, which would drop SQLite's POSIX locks."""
    path = database_file(conn)
    if path is None:
        return None
    if not os.access(path, os.W_OK):
        return f"the database file {path} is read-only for this process"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"the folder {path.parent} is read-only, and SQLite writes its journal there"
    return None


def require_writable(conn: Connection, table: str, action: str) -> None:
    """Raise StepSkipped before `action` when SQLite could not write the file."""
    reason = read_only_reason(conn)
    if reason is not None:
        _skip(table, f"{action} of {table} skipped: {reason}")


def _skip(table: str, reason: str) -> None:
    raise StepSkipped(
        reason, {"table": table, "skipped_tables": [{"table": table, "reason": reason}]}
    )


def write(conn: Connection, sql: str, table: str, action: str) -> None:
    """Run one write; SQLite's refusal to write a read-only database is a skip."""
    try:
        conn.execute(text(sql))
    except DBAPIError as exc:
        name = str(getattr(exc.orig, "sqlite_errorname", ""))
        if not name.startswith("SQLITE_READONLY"):
            raise
        _skip(table, f"{action} of {table} refused by SQLite: {exc.orig} ({name})")


def dbstat_available(conn: Connection) -> bool:
    try:
        conn.execute(text("SELECT 1 FROM dbstat LIMIT 0")).all()
    except OperationalError:
        return False
    return True


def btree_stats(conn: Connection, name: str) -> dict[str, Any]:
    """Pages, out-of-order leaves and unused leaf space of one table or index b-tree."""
    rows = conn.execute(
        text(
            "SELECT pageno, pagetype, unused, pgsize FROM dbstat WHERE name = :name ORDER BY path"
        ),
        {"name": name},
    ).all()
    leaves = [r for r in rows if r.pagetype == "leaf"]
    out_of_order = sum(1 for prev, cur in pairwise(leaves) if cur.pageno != prev.pageno + 1)
    leaf_bytes = sum(r.pgsize for r in leaves)
    unused = sum(r.unused for r in leaves)
    return {
        "pages": len(rows),
        "leaf_pages": len(leaves),
        "size_bytes": sum(r.pgsize for r in rows),
        "fragmentation_percent": _percent(out_of_order, max(len(leaves) - 1, 0)),
        "free_space_percent": _percent(unused, leaf_bytes),
        "unused_bytes": unused,
    }


def table_indexes(conn: Connection, table: str) -> list[str]:
    rows = conn.execute(text("SELECT name FROM pragma_index_list(:t)"), {"t": table}).all()
    return sorted(r.name for r in rows)


def integrity_messages(conn: Connection, table: str) -> list[str]:
    """Problems PRAGMA integrity_check finds in one table and its indexes ([] when ok)."""
    quoted = quote_identifier(conn.dialect, table)
    rows = conn.execute(text(f"PRAGMA integrity_check({quoted})")).all()
    messages = [r[0] for r in rows]
    return [] if messages == ["ok"] else messages


def _percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _needs_rebuild(stats: Mapping[str, Any], threshold: float, min_pages: int) -> str | None:
    """Why a b-tree should be rebuilt, or None."""
    if stats["leaf_pages"] < min_pages:
        return None
    if stats["fragmentation_percent"] >= threshold:
        return f"{stats['fragmentation_percent']}% of leaf pages out of order"
    if stats["free_space_percent"] >= threshold:
        return f"{stats['free_space_percent']}% of leaf space unused"
    return None


# --- analyze_database_health --------------------------------------------------------


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    pages = database_pages(conn)
    tables = list(params.get("tables") or []) or user_tables(conn)
    sizes: dict[str, int] = {}
    has_dbstat = dbstat_available(conn)
    if has_dbstat:
        for row in conn.execute(
            text("SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name")
        ):
            sizes[row.name] = row.bytes
    schema_rows = conn.execute(
        text("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index'")
    ).all()
    indexes_of: dict[str, list[str]] = {}
    for row in schema_rows:
        indexes_of.setdefault(row.tbl_name, []).append(row.name)
    analyzed: set[str] = set()
    if conn.execute(
        text("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'")
    ).scalar_one():
        analyzed = {r[0] for r in conn.execute(text("SELECT DISTINCT tbl FROM sqlite_stat1"))}
    report = []
    for table in tables:
        quoted = ctx.quote(table)
        rows = conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one()
        index_bytes = sum(sizes.get(i, 0) for i in indexes_of.get(table, []))
        report.append(
            {
                "table": table,
                "rows": rows,
                "indexes": len(indexes_of.get(table, [])),
                "table_bytes": sizes.get(table),
                "index_bytes": index_bytes if has_dbstat else None,
                "statistics": "present" if table in analyzed else "missing",
            }
        )
    # Most urgent first: the largest share of the file, then missing statistics.
    report.sort(key=lambda t: (-(t["table_bytes"] or 0) - (t["index_bytes"] or 0), t["table"]))
    check = corruption_check(conn, ctx, tables) if params.get("check_corruption") else None
    freelist_percent = _percent(pages["freelist_count"], pages["page_count"])
    recommendations = []
    if freelist_percent >= 10:
        recommendations.append(
            f"{freelist_percent}% of the file ({pages['free_bytes']} bytes) is free pages; "
            "optimize_table (VACUUM) would return them to the file system"
        )
    missing = [t["table"] for t in report if t["statistics"] == "missing" and t["rows"]]
    if missing:
        recommendations.append(
            f"No planner statistics for {', '.join(missing)}; run update_table_statistics"
        )
    recommendations += corruption_advice(check, "integrity_check")
    return {
        "database_size_bytes": pages["size_bytes"],
        "size_method": "page_count x page_size",
        "page_size": pages["page_size"],
        "page_count": pages["page_count"],
        "freelist_count": pages["freelist_count"],
        "freelist_percent": freelist_percent,
        "journal_mode": conn.execute(text("PRAGMA journal_mode")).scalar_one(),
        "dbstat": has_dbstat,
        "tables": report,
        "integrity": integrity_line(check),
        "corruption_check": check,
        "recommendations": recommendations,
    }


analyze_database_health = Handler(
    sql_templates=(
        "PRAGMA page_size",
        "PRAGMA page_count",
        "PRAGMA freelist_count",
        "SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name",
        "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index'",
        "SELECT DISTINCT tbl FROM sqlite_stat1",
        "SELECT count(*) FROM {table}",
        "PRAGMA integrity_check({table})",
        "PRAGMA foreign_key_check({table})",
    ),
    run_fn=_health,
)


# --- analyze_table_fragmentation ----------------------------------------------------


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    threshold = params.get("fragmentation_threshold", 30)
    pages = database_pages(conn)
    freelist_percent = _percent(pages["freelist_count"], pages["page_count"])
    if not dbstat_available(conn):
        return {
            "table": table,
            "method": "freelist",
            "fragmentation_percent": freelist_percent,
            "free_space_percent": None,
            "database_freelist_percent": freelist_percent,
            "indexes": [],
            "estimated_benefit_bytes": pages["free_bytes"],
            "recommendation": (
                "This SQLite build has no dbstat table, so only database-wide free pages "
                "are known" + ("; VACUUM would reclaim them" if pages["freelist_count"] else "")
            ),
        }
    stats = btree_stats(conn, table)
    indexes = []
    for index in table_indexes(conn, table):
        index_stats = btree_stats(conn, index)
        indexes.append(
            {"index": index, **index_stats, "rebuild": _needs_rebuild(index_stats, threshold, 1)}
        )
    to_rebuild = [i["index"] for i in indexes if i["rebuild"]]
    benefit = pages["free_bytes"] + stats["unused_bytes"] + sum(i["unused_bytes"] for i in indexes)
    advice = []
    if to_rebuild:
        advice.append(f"REINDEX {', '.join(to_rebuild)}")
    if pages["freelist_count"] or _needs_rebuild(stats, threshold, 1):
        advice.append("VACUUM to compact the file")
    return {
        "table": table,
        "method": "dbstat",
        **stats,
        "database_freelist_percent": freelist_percent,
        "indexes": indexes,
        "estimated_benefit_bytes": benefit,
        "recommendation": "; ".join(advice) or "No optimization needed",
    }


analyze_table_fragmentation = Handler(
    sql_templates=(
        "PRAGMA page_size",
        "PRAGMA page_count",
        "PRAGMA freelist_count",
        "SELECT name FROM pragma_index_list(:t)",
        "SELECT pageno, pagetype, unused, pgsize FROM dbstat WHERE name = :name ORDER BY path",
    ),
    run_fn=_fragmentation,
)


# --- rebuild_fragmented_indexes -----------------------------------------------------


def _indexes_to_rebuild(
    params: Mapping[str, Any], conn: Connection, ctx: ToolContext | None = None
) -> tuple[list[tuple[str, dict[str, Any], str]], list[dict[str, Any]]]:
    if ctx is not None:
        return cached(ctx, f"rebuild:{params['table']}", lambda: _indexes_to_rebuild(params, conn))
    threshold = params.get("fragmentation_threshold", 30)
    min_pages = params.get("min_pages", 8)
    chosen, skipped = [], []
    for index in table_indexes(conn, params["table"]):
        stats = btree_stats(conn, index)
        reason = _needs_rebuild(stats, threshold, min_pages)
        if reason:
            chosen.append((index, stats, reason))
        else:
            why = (
                f"{stats['leaf_pages']} leaf pages, below {min_pages}"
                if stats["leaf_pages"] < min_pages
                else f"{stats['fragmentation_percent']}% out of order, "
                f"{stats['free_space_percent']}% unused: under {threshold}%"
            )
            skipped.append({"index": index, "reason": why})
    return chosen, skipped


def _rebuild(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    if not dbstat_available(conn):
        return {
            "table": params["table"],
            "indexes_rebuilt": 0,
            "rebuilt": [],
            "skipped": [],
            "note": "This SQLite build has no dbstat table; index fragmentation is unknown",
        }
    chosen, skipped = _indexes_to_rebuild(params, conn, ctx)
    if chosen:
        require_writable(conn, params["table"], "REINDEX")
    rebuilt = []
    for index, before, reason in chosen:
        started = time.monotonic()
        write(conn, f"REINDEX {ctx.quote(index)}", params["table"], "REINDEX")
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
    chosen, _ = _indexes_to_rebuild(params, ctx.connection, ctx)
    if not chosen:
        return [f"-- no index of {ctx.quote(params['table'])} is over the threshold"]
    return [f"REINDEX {ctx.quote(index)}" for index, _, _ in chosen]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if not dbstat_available(ctx.connection):
        return {}
    chosen, _ = _indexes_to_rebuild(params, ctx.connection, ctx)
    return {
        "indexes_to_rebuild": [index for index, _, _ in chosen],
        "index_bytes_to_rewrite": sum(stats["size_bytes"] for _, stats, _ in chosen),
    }


rebuild_fragmented_indexes = Handler(
    sql_templates=(
        "SELECT pageno, pagetype, unused, pgsize FROM dbstat WHERE name = :name ORDER BY path",
        "REINDEX {index}",
    ),
    run_fn=_rebuild,
    render_fn=_rebuild_sql,
    estimate_fn=_rebuild_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds indexes",
)


# --- optimize_table -----------------------------------------------------------------


def _optimize_reason(params: Mapping[str, Any], conn: Connection) -> str | None:
    pages = database_pages(conn)
    if pages["freelist_count"]:
        return f"{pages['freelist_count']} free pages ({pages['free_bytes']} bytes) in the file"
    if dbstat_available(conn):
        stats = btree_stats(conn, params["table"])
        return _needs_rebuild(stats, params.get("fragmentation_threshold", 30), 8)
    return None


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    before = database_pages(conn)
    reason = _optimize_reason(params, conn)
    if reason is None:
        return {
            "table": params["table"],
            "scope": "database",
            "vacuumed": False,
            "reason": "the file has no free pages and the table is not fragmented",
            "size_before": before["size_bytes"],
            "size_after": before["size_bytes"],
            "reclaimed_bytes": 0,
        }
    require_writable(conn, params["table"], "VACUUM")
    # VACUUM rebuilds the whole file: SQLite has no per-table equivalent.
    write(conn, "VACUUM", params["table"], "VACUUM")
    after = database_pages(conn)
    return {
        "table": params["table"],
        "scope": "database",
        "vacuumed": True,
        "reason": reason,
        "size_before": before["size_bytes"],
        "size_after": after["size_bytes"],
        # The same measure both sides; VACUUM never grows the file, but a writer between
        # the two measures could.
        "reclaimed_bytes": max(before["size_bytes"] - after["size_bytes"], 0),
    }


def _optimize_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    if _optimize_reason(params, ctx.connection) is None:
        return ["-- nothing to do: no free pages and the table is not fragmented"]
    return ["VACUUM"]


def _optimize_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pages = database_pages(ctx.connection)
    return {
        "database_bytes_to_rewrite": pages["size_bytes"],
        "free_bytes_to_reclaim": pages["free_bytes"],
        "will_vacuum": _optimize_reason(params, ctx.connection) is not None,
    }


optimize_table = Handler(
    sql_templates=("VACUUM",),
    run_fn=_optimize,
    render_fn=_optimize_sql,
    estimate_fn=_optimize_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rewrites the database file",
)


# --- update_table_statistics ----------------------------------------------------------

_STAT_ROWS = "SELECT count(*) AS stat_rows FROM sqlite_stat1 WHERE tbl = :table"


def _analyze(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn, table = ctx.connection, params["table"]
    require_writable(conn, table, "ANALYZE")
    write(conn, f"ANALYZE {ctx.quote(table)}", table, "ANALYZE")
    rows = conn.execute(text(_STAT_ROWS), {"table": table}).scalar_one()
    return {"table": table, "statistics_updated": True, "stat_rows": rows}


update_table_statistics = Handler(
    sql_templates=("ANALYZE {table}", _STAT_ROWS),
    run_fn=_analyze,
    risk=RiskLevel.LOW,
    effect="updates statistics",
)


# --- check_table_corruption / repair_corrupted_tables -------------------------------


def _check_table(conn: Connection, ctx: ToolContext, table: str) -> dict[str, Any]:
    try:
        issues = integrity_messages(conn, table)
        for row in conn.execute(text(f"PRAGMA foreign_key_check({ctx.quote(table)})")):
            issues.append(f"row {row[1]} references a missing row in {row[2]}")
    except DBAPIError as exc:
        # A file damaged past reading fails the check itself: that is its finding.
        name = str(getattr(exc.orig, "sqlite_errorname", ""))
        if name not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            raise
        issues = [f"{exc.orig} ({name})"]
    return {"table": table, "status": "corrupted" if issues else "ok", "issues": issues}


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """integrity_check and foreign_key_check of each table: SQLite can always check."""
    return corruption_summary("integrity_check", [_check_table(conn, ctx, t) for t in tables])


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    return checked_or_skipped(corruption_check(conn, ctx, tables))


def _check_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    tables = list(params.get("tables") or []) or user_tables(ctx.connection)
    return [
        f"PRAGMA {pragma}({ctx.quote(t)})"
        for t in tables
        for pragma in ("integrity_check", "foreign_key_check")
    ]


check_table_corruption = Handler(
    sql_templates=("PRAGMA integrity_check({table})", "PRAGMA foreign_key_check({table})"),
    run_fn=_check,
    render_fn=_check_sql,
)


def _backup_copy(ctx: ToolContext, label: str) -> Path:
    """Copy the whole database with SQLite's backup API; the copy is checked before use."""
    if ctx.backup_dir is None:
        raise StepFailed("No backup folder configured (backup_dir in config/aishell.yaml)")
    ctx.backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    final = ctx.backup_dir / f"{ctx.target}-{label}-{stamp}.sqlite"
    partial = final.with_suffix(".sqlite.partial")
    source = ctx.connection.connection.driver_connection
    assert isinstance(source, sqlite3.Connection)
    dest = sqlite3.connect(partial)
    try:
        source.backup(dest)
    finally:
        dest.close()
    partial.rename(final)
    return final


def _repair(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    if not tables:
        return {"repaired_tables": [], "backup_path": None, "note": "no corrupted tables given"}
    read_only = read_only_reason(conn)
    if read_only is not None:
        reason = f"REINDEX of {', '.join(tables)} skipped: {read_only}"
        raise StepSkipped(
            reason, {"skipped_tables": [{"table": t, "reason": reason} for t in tables]}
        )
    backup = str(_backup_copy(ctx, "pre-repair")) if params.get("create_backup", True) else None
    repaired, still_damaged = [], {}
    for table in tables:
        # REINDEX rebuilds every index of the table from the table's rows, which
        # fixes index entries that disagree with the table.
        write(conn, f"REINDEX {ctx.quote(table)}", table, "REINDEX")
        remaining = integrity_messages(conn, table)
        if remaining:
            still_damaged[table] = remaining[:5]
        else:
            repaired.append(table)
    if still_damaged:
        detail = "; ".join(f"{t}: {m[0]}" for t, m in still_damaged.items())
        raise StepFailed(
            f"REINDEX did not repair {', '.join(still_damaged)} (the table b-tree itself is "
            f"damaged; restore from a backup{f' such as {backup}' if backup else ''}): {detail}"
        )
    return {"repaired_tables": repaired, "backup_path": backup}


repair_corrupted_tables = Handler(
    sql_templates=("REINDEX {table}", "PRAGMA integrity_check({table})"),
    run_fn=_repair,
    render_fn=each_table("REINDEX {table}"),
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables and indexes",
)


# --- what each agent needs of the process (aishell targets check) -------------------------


def agent_needs(conn: Connection) -> list[dict[str, Any]]:
    """What each agent needs of this database file and, per need, what is missing."""
    read_only = read_only_reason(conn)
    writes = "write access to the database file and its folder"
    return [
        {
            "agent": "maintenance",
            "privilege": writes,
            "needed_for": "ANALYZE, VACUUM and REINDEX (skipped without it)",
            "missing": read_only,
        },
        {
            "agent": "backup",
            "privilege": "read access to the database file",
            "needed_for": "the backup API copy",
            "missing": None,
        },
        {
            "agent": "log_cleanup",
            "privilege": writes,
            "needed_for": "delete_old_records",
            "missing": read_only,
        },
    ]
