"""generate_maintenance_report: what the run did, and the database before and after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell.handlers import Handler
from aishell.handlers.sqlite_maintenance import database_pages
from aishell.registry import ToolContext


def summarize(
    maintenance_type: str, tables: list[str], actions: list[Mapping[str, Any]]
) -> dict[str, Any]:
    """Aggregate the outputs of a run's steps into the report's counters."""
    report: dict[str, Any] = {
        "maintenance_type": maintenance_type,
        "actions_count": len(actions),
        "tables_processed": [],
        "indexes_rebuilt": 0,
        "statistics_updated": 0,
        "tables_optimized": 0,
        "corruption_found": False,
        "corrupted_tables": [],
        "repaired_tables": [],
        "fragmentation": {},
        "steps_not_run": 0,
    }
    for action in actions:
        tool, output = action.get("tool"), action.get("output")
        if output is None:
            report["steps_not_run"] += 1
            continue
        table = action.get("table")
        if table and table not in report["tables_processed"]:
            report["tables_processed"].append(table)
        if tool == "rebuild_fragmented_indexes":
            report["indexes_rebuilt"] += int(output.get("indexes_rebuilt", 0))
        elif tool == "update_table_statistics":
            report["statistics_updated"] += 1
        elif tool == "optimize_table" and output.get("vacuumed"):
            report["tables_optimized"] += 1
        elif tool == "check_table_corruption":
            report["corrupted_tables"] = list(output.get("corrupted_tables") or [])
            report["corruption_found"] = bool(report["corrupted_tables"])
        elif tool == "repair_corrupted_tables":
            report["repaired_tables"] = list(output.get("repaired_tables") or [])
        elif tool == "analyze_table_fragmentation" and table:
            report["fragmentation"][table] = {
                "fragmentation_percent": output.get("fragmentation_percent"),
                "free_space_percent": output.get("free_space_percent"),
                "recommendation": output.get("recommendation"),
            }
    for table in tables:
        if table not in report["tables_processed"]:
            report["tables_processed"].append(table)
    return report


def database_size(conn: Connection) -> dict[str, Any]:
    """The database's size now (and, for SQLite, its free pages)."""
    name = conn.dialect.name
    if name == "postgresql":
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        return {"size_bytes": int(size or 0)}
    if name in ("mysql", "mariadb"):
        size = conn.execute(
            text(
                "SELECT coalesce(sum(DATA_LENGTH + INDEX_LENGTH), 0) "
                "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            )
        ).scalar()
        return {"size_bytes": int(size or 0)}
    pages = database_pages(conn)
    return {"size_bytes": pages["size_bytes"], "freelist_count": pages["freelist_count"]}


def _report(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    report = summarize(
        params["maintenance_type"], list(params.get("tables") or []), params.get("actions") or []
    )
    baseline = params.get("baseline") or {}
    after = database_size(ctx.connection)
    before_bytes = baseline.get("database_size_bytes")
    report.update(
        {
            "size_before": before_bytes,
            "size_after": after["size_bytes"],
            "reclaimed_bytes": (before_bytes - after["size_bytes"]) if before_bytes else None,
            "freelist_before": baseline.get("freelist_count"),
            "freelist_after": after.get("freelist_count"),
        }
    )
    parts = [
        f"{params['maintenance_type']} maintenance of {len(report['tables_processed'])} table(s)",
        f"{report['statistics_updated']} statistics update(s)",
        f"{report['indexes_rebuilt']} index(es) rebuilt",
    ]
    if report["steps_not_run"]:
        parts.append(f"{report['steps_not_run']} step(s) not run")
    if report["reclaimed_bytes"]:
        parts.append(f"{report['reclaimed_bytes']} bytes reclaimed")
    if report["corruption_found"]:
        parts.append(
            f"corruption in {', '.join(report['corrupted_tables'])}; "
            f"repaired: {', '.join(report['repaired_tables']) or 'none'}"
        )
    report["summary"] = "; ".join(parts)
    return report


generate_maintenance_report = Handler(
    sql_templates=("PRAGMA page_size", "PRAGMA page_count", "PRAGMA freelist_count"),
    run_fn=_report,
)
# The same aggregation on the servers, measuring the database's size with their catalogs.
generate_maintenance_report_postgresql = Handler(
    sql_templates=("SELECT pg_database_size(current_database())",), run_fn=_report
)
generate_maintenance_report_mysql = Handler(
    sql_templates=(
        "SELECT coalesce(sum(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE()",
    ),
    run_fn=_report,
)
