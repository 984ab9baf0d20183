"""The maintenance agent: quick, standard, full and emergency plans."""

from __future__ import annotations

from typing import Any

from aishell.agents.base import PlanningContext
from aishell.config import AgentConfig
from aishell.errors import UsageError
from aishell.plan import Step, step_id

MAINTENANCE_TYPES = ("quick", "standard", "full", "emergency")


class MaintenanceAgent:
    name = "maintenance"

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        kind = job.get("type", "standard")
        if kind not in MAINTENANCE_TYPES:
            raise UsageError(
                f"Unknown maintenance type '{kind}'; "
                f"expected one of: {', '.join(MAINTENANCE_TYPES)}"
            )
        tables = job.get("tables")
        if tables is not None:
            tables = [t.strip() for t in tables if t.strip()]
            if not tables:
                raise UsageError("--tables was given but names no table")
        return {
            "type": kind,
            "tables": tables,
            "rebuild_indexes": bool(job.get("rebuild_indexes", True)),
        }

    def describe_job(self, job: dict[str, Any], ctx: PlanningContext) -> str:
        scope = f"tables {', '.join(ctx.tables)}" if job.get("tables") else "every table"
        threshold = f"{ctx.defaults.fragmentation_threshold:g}%"
        rebuild = (
            f"rebuild indexes fragmented past {threshold}, "
            if job.get("rebuild_indexes", True)
            else ""
        )
        work = {
            "quick": "refresh planner statistics",
            "standard": "measure fragmentation and refresh planner statistics",
            "full": (
                "check every table for corruption before anything changes, "
                f"measure fragmentation, {rebuild}compact tables fragmented past "
                f"{threshold} and refresh planner statistics, most urgent tables first"
            ),
            "emergency": "check for corruption and repair corrupted tables after a backup copy",
        }[job["type"]]
        return (
            f"Run {job['type']} maintenance on {scope}: check the database's health first, "
            f"then {work}, and end with a maintenance report."
        )

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]:
        """Health first, then the work of the maintenance type per table, a report last."""
        kind = job["type"]
        tables = list(ctx.tables)
        if kind == "full" and not job.get("tables"):
            # The most urgent tables first, so a window that closes early has done them.
            tables.sort(key=lambda t: (-ctx.urgency.get(t, 0.0), t))
        threshold = ctx.defaults.fragmentation_threshold
        work: list[tuple[str, dict[str, Any], str, str | None]] = []
        conditions: dict[int, str] = {}

        def add(
            tool: str, params: dict[str, Any], rationale: str, table: str | None = None
        ) -> None:
            work.append((tool, params, rationale, table))

        # Full maintenance checks for corruption in its first step, before a REINDEX could
        # hide a damaged index or a VACUUM touch a damaged page; the report says per table
        # whether it was checked. Emergency maintenance has a check step of its own.
        add(
            "analyze_database_health",
            {"tables": tables, "check_corruption": kind == "full"},
            "Assess the database's health before changing anything"
            + (", and check every table for corruption" if kind == "full" else ""),
        )

        def statistics(t: str) -> None:
            add("update_table_statistics", {"table": t}, f"Refresh planner statistics for {t}", t)

        def fragmentation(t: str) -> None:
            add(
                "analyze_table_fragmentation",
                {"table": t, "fragmentation_threshold": threshold},
                f"Measure fragmentation of {t}",
                t,
            )

        if kind == "quick":
            for t in tables:
                statistics(t)
        elif kind == "standard":
            for t in tables:
                fragmentation(t)
                statistics(t)
        elif kind == "full":
            for t in tables:
                fragmentation(t)
                if job.get("rebuild_indexes", True):
                    add(
                        "rebuild_fragmented_indexes",
                        {
                            "table": t,
                            "fragmentation_threshold": threshold,
                            "min_pages": ctx.defaults.min_index_pages,
                        },
                        f"Rebuild indexes of {t} fragmented past {threshold:g}%",
                        t,
                    )
                # On PostgreSQL optimize_table is VACUUM (ANALYZE): it refreshes the
                # statistics too (and its output counts them), so no ANALYZE follows.
                analyzes = ctx.dialect == "postgresql"
                add(
                    "optimize_table",
                    {"table": t, "fragmentation_threshold": threshold},
                    f"Compact {t} and return free pages"
                    + (", refreshing its planner statistics" if analyzes else ""),
                    t,
                )
                if not analyzes:
                    statistics(t)
        elif kind == "emergency":
            add(
                "check_table_corruption",
                {"tables": tables},
                "Look for corrupted tables and indexes",
            )
            add(
                "repair_corrupted_tables",
                {"tables": "${step_1.output.corrupted_tables}", "create_backup": True},
                "Repair the tables the check found corrupted, after a backup copy",
            )
            # Nothing to repair, nothing to approve: skip unless the check found damage.
            conditions[len(work) - 1] = "${step_1.output.corrupted_tables}"

        steps = [
            Step(
                id=step_id(i),
                tool=tool,
                params=params,
                rationale=rationale,
                condition=conditions.get(i),
            )
            for i, (tool, params, rationale, _) in enumerate(work)
        ]
        actions = [
            {"tool": tool, "table": table, "output": f"${{{step_id(i)}.output}}"}
            for i, (tool, _, _, table) in enumerate(work)
            if i > 0
        ]
        steps.append(
            Step(
                id=step_id(len(work)),
                tool="generate_maintenance_report",
                params={
                    "maintenance_type": kind,
                    "tables": tables,
                    "baseline": "${step_0.output}",
                    "actions": actions,
                },
                rationale="Summarize what was done and the database before and after",
                always_run=True,
            )
        )
        return steps
