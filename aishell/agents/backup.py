"""The backup agent: a full backup, validated by restoring it."""

from __future__ import annotations

from typing import Any

from aishell.agents.base import PlanningContext
from aishell.errors import UsageError
from aishell.plan import Step, step_id

BACKUP_TYPES = ("full",)


class BackupAgent:
    name = "backup"

    def normalize_job(self, job: dict[str, Any]) -> dict[str, Any]:
        kind = job.get("type", "full")
        if kind not in BACKUP_TYPES:
            raise UsageError(
                f"Unknown backup type '{kind}'; this aishell takes: {', '.join(BACKUP_TYPES)}"
            )
        return {
            "type": kind,
            "verify": bool(job.get("verify", True)),
            "quick": bool(job.get("quick", False)),
        }

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]:
        """calculate_backup_size -> backup_database_full -> validate_backup."""
        steps = [
            Step(
                step_id(0),
                "calculate_backup_size",
                {},
                "Estimate the backup's size and check the backup folder has room",
            ),
            Step(
                step_id(1),
                "backup_database_full",
                {},
                "Take a full backup with a manifest of every table's row count",
            ),
        ]
        if job.get("verify", True):
            steps.append(
                Step(
                    step_id(2),
                    "validate_backup",
                    {"backup_path": "${step_1.output.backup_path}", "quick": job["quick"]},
                    "Prove the backup restores: checksum, restore, row counts",
                )
            )
        return steps
