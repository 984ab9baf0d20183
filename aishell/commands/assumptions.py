"""What a plan assumed about its target when it was made, and how the target has moved
since: a saved plan runs only on the target it was made for."""

from __future__ import annotations

from typing import Any

from aishell.plan.model import Plan
from aishell.targets.tables import TableCatalog

# A plan is stale when a table's row estimate moved by more than this share.
ROW_DRIFT_TOLERANCE = 0.25


def plan_assumptions(
    catalog: TableCatalog, job: dict[str, Any], tables: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """What a plan is made from: the tables, their row estimates and their indexes."""
    described: dict[str, Any] = {}
    for table in tables:
        info = catalog.tables.get(table)
        described[table] = (
            None if info is None else {"rows": info.rows, "indexes": sorted(info.indexes)}
        )
    result: dict[str, Any] = {"tables": described}
    if not job.get("tables"):
        result["all_tables"] = list(catalog.names)
    if catalog.unreadable:  # only then: plans made before keep their hashes
        result["unreadable_tables"] = list(catalog.unreadable)
    return result


def planned_tables(plan: Plan) -> list[str]:
    return list((plan.assumptions.get("tables") or {}).keys())


def drift_since_plan(plan: Plan, now: dict[str, Any]) -> list[str]:
    """How the target differs from what the plan assumed, beyond the row tolerance."""
    then = plan.assumptions
    found: list[str] = []
    if "all_tables" in then and then["all_tables"] != now.get("all_tables"):
        added = sorted(set(now.get("all_tables", [])) - set(then["all_tables"]))
        gone = sorted(set(then["all_tables"]) - set(now.get("all_tables", [])))
        if added:
            found.append(f"new tables: {', '.join(added)}")
        if gone:
            found.append(f"tables gone: {', '.join(gone)}")
    for table, before in (then.get("tables") or {}).items():
        after = (now.get("tables") or {}).get(table)
        if before is None or after is None:
            if before != after:
                found.append(f"table '{table}' {'is gone' if after is None else 'appeared'}")
            continue
        if before["indexes"] != after["indexes"]:
            found.append(f"indexes of '{table}' changed")
        rows_then, rows_now = before["rows"], after["rows"]
        if abs(rows_now - rows_then) > ROW_DRIFT_TOLERANCE * max(rows_then, 1):
            found.append(f"'{table}' has {rows_now:,} rows, the plan assumed {rows_then:,}")
    return found
