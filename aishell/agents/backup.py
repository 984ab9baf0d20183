"""The backup agent: a full backup, validated by restoring it."""

from __future__ import annotations

from typing import Any

from aishell.agents.base import PlanningContext
from aishell.config import AgentConfig
from aishell.errors import UsageError
from aishell.plan import Step, step_id

BACKUP_TYPES = ("full", "incremental", "drill")


class BackupAgent:
    name = "backup"

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        kind = job.get("type", "full")
        if kind not in BACKUP_TYPES:
            raise UsageError(
                f"Unknown backup type '{kind}'; this aishell takes: {', '.join(BACKUP_TYPES)}"
            )
        normalized: dict[str, Any] = {
            "type": kind,
            "verify": bool(job.get("verify", True)),
            "quick": bool(job.get("quick", False)),
        }
        if job.get("cleanup"):
            normalized.update(
                cleanup=True,
                retention_days=job.get("retention_days", 30),
                keep_last=job.get("keep_last", 1),
            )
        return normalized

    def describe_job(self, job: dict[str, Any], ctx: PlanningContext) -> str:
        if job["type"] == "drill":
            return "Find the newest backup and prove it restores into a scratch database."
        verify = (
            " and prove it restores (checksum, restore, rows and contents)"
            if job.get("verify")
            else ""
        )
        cleanup = (
            f", then delete backups older than {job['retention_days']} days keeping the "
            f"last {job['keep_last']}"
            if job.get("cleanup")
            else ""
        )
        return f"Take a {job['type']} backup of the target{verify}{cleanup}."

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]:
        """full: calculate_backup_size -> backup_database_full -> validate_backup;
        incremental: find_last_backup -> backup_database_incremental -> validate_backup
        (either with cleanup_old_backups last); drill: find_last_backup -> validate_backup."""
        newest = "${step_0.output.backup_path}"
        if job["type"] == "drill":
            # A restore drill: the newest backup, restored into a scratch database.
            return _steps(
                (
                    "find_last_backup",
                    {"verified_only": False},
                    "Find the newest backup of the target",
                ),
                (
                    "validate_backup",
                    {"backup_path": newest, "quick": False},
                    "Restore it into a scratch database and check every table's rows and contents",
                ),
            )
        work: list[tuple[str, dict[str, Any], str]]
        if job["type"] == "incremental":
            work = [
                (
                    "find_last_backup",
                    {"verified_only": True},
                    "Find the newest verified backup to chain from",
                ),
                (
                    "backup_database_incremental",
                    {"parent": newest},
                    "Back up the tables that changed since that backup",
                ),
            ]
        else:
            work = [
                (
                    "calculate_backup_size",
                    {},
                    "Estimate the backup's size and check the backup folder has room",
                ),
                (
                    "backup_database_full",
                    {},
                    "Take a full backup with a manifest of every table's row count",
                ),
            ]
        if job.get("verify", True):
            work.append(
                (
                    "validate_backup",
                    {"backup_path": "${step_1.output.backup_path}", "quick": job["quick"]},
                    "Prove the backup restores: checksum, restore, rows and contents",
                )
            )
        if job.get("cleanup"):
            work.append(
                (
                    "cleanup_old_backups",
                    {"retention_days": job["retention_days"], "keep_last": job["keep_last"]},
                    "Delete backups past retention, never the newest verified one",
                )
            )
        return _steps(*work)


def _steps(*work: tuple[str, dict[str, Any], str]) -> list[Step]:
    """Steps step_0, step_1, ... of (tool, params, rationale)."""
    return [Step(step_id(i), tool, params, why) for i, (tool, params, why) in enumerate(work)]
