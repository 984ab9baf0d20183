"""The backup agent: a full backup, validated by restoring it; and the restore of a
catalogued backup into a target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.base import AgentSpec, CatalogFact, PlanningContext, given_options
from aishell.config.models import AgentConfig
from aishell.config.options import (
    BACKUP_OPTIONS,
    BACKUP_RETENTION_DAYS,
    BACKUP_TYPE,
    CLEANUP,
    KEEP_LAST,
    QUICK,
    VERIFY,
)
from aishell.plan.model import Step, step_id

# The steps that run a dump, which may wait for table locks.
_DUMPS = ("backup_database_full", "backup_database_incremental")


SPEC = AgentSpec(
    name="backup",
    description="Back up a target and prove the backup restores; restore a catalogued backup.",
    options=BACKUP_OPTIONS,
    tools=(
        "find_last_backup",
        "calculate_backup_size",
        "backup_database_full",
        "backup_database_incremental",
        "validate_backup",
        "cleanup_old_backups",
        "restore_backup",
    ),
    privileges={
        "postgresql": ("SELECT on every table and sequence", "CREATEDB (to validate)"),
        "mysql": ("SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT", "CREATE, DROP (to validate)"),
        "sqlite": ("read access to the database file",),
    },
)


class BackupAgent:
    name = SPEC.name
    spec = SPEC

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        # A value given is checked as given ("no" is not a flag, keep_last 0 is not the
        # default); only a key left out takes the command line's default.
        given = given_options(SPEC, job)
        normalized: dict[str, Any] = {
            "type": given.get("type", BACKUP_TYPE.default),
            "verify": given.get("verify", VERIFY.default),
            "quick": given.get("quick", QUICK.default),
        }
        if "lock_wait_seconds" in given:
            normalized["lock_wait_seconds"] = given["lock_wait_seconds"]
        if given.get("cleanup", CLEANUP.default):
            normalized.update(
                cleanup=True,
                retention_days=given.get("retention_days", BACKUP_RETENTION_DAYS.default),
                keep_last=given.get("keep_last", KEEP_LAST.default),
            )
        return normalized

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        """Nothing to check before planning: a backup takes whatever the database holds."""

    def catalog_needs(self, job: dict[str, Any]) -> frozenset[CatalogFact]:
        return frozenset()  # a backup takes the whole database, in no order of tables

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
        if job["type"] == "drill":
            return _steps(*_DRILL)
        work = list(_INCREMENTAL if job["type"] == "incremental" else _FULL)
        if job.get("verify", True):
            work.append(_validate(job["quick"]))
        if job.get("cleanup"):
            work.append(_cleanup(job["retention_days"], job["keep_last"]))
        if job.get("lock_wait_seconds") is not None:
            wait = {"lock_wait_seconds": job["lock_wait_seconds"]}
            work = [(tool, {**p, **wait} if tool in _DUMPS else p, why) for tool, p, why in work]
        return _steps(*work)

    def plan_restore(
        self, backup: Mapping[str, Any], into: str, *, replace: bool, lock_wait: float | None
    ) -> tuple[dict[str, Any], list[Step]]:
        """The restore of a catalogued backup (its catalog row) into target `into`: the
        job its plan records, and its one step, restore_backup, which is critical and
        so always approved first. `lock_wait`: the longest it may wait for a table lock
        (None: the tool's default)."""
        params: dict[str, Any] = {"backup_path": backup["path"], "replace": replace}
        if lock_wait is not None:
            params["lock_wait_seconds"] = lock_wait
        if backup.get("sha256"):
            # The step refuses a file that is not the one the catalog recorded.
            params["sha256"] = backup["sha256"]
        why = f"Restore backup {backup['id']} of '{backup['target']}' into '{into}'"
        job = {"type": "restore", "backup_id": backup["id"]}
        return job, [Step(step_id(0), "restore_backup", params, why)]


_Work = tuple[str, dict[str, Any], str]
_NEWEST = "${step_0.output.backup_path}"
# A restore drill: the newest backup, restored into a scratch database.
_DRILL: tuple[_Work, ...] = (
    ("find_last_backup", {"verified_only": False}, "Find the newest backup of the target"),
    (
        "validate_backup",
        {"backup_path": _NEWEST, "quick": False},
        "Restore it into a scratch database and check every table's rows and contents",
    ),
)
_INCREMENTAL: tuple[_Work, ...] = (
    (
        "find_last_backup",
        {"verified_only": True},
        "Find the newest verified backup to chain from",
    ),
    (
        "backup_database_incremental",
        {"parent": _NEWEST},
        "Back up the tables that changed since that backup",
    ),
)
_FULL: tuple[_Work, ...] = (
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
)


def _validate(quick: bool) -> _Work:
    return (
        "validate_backup",
        {"backup_path": "${step_1.output.backup_path}", "quick": quick},
        "Prove the backup restores: checksum, restore, rows and contents",
    )


def _cleanup(retention_days: int, keep_last: int) -> _Work:
    return (
        "cleanup_old_backups",
        {"retention_days": retention_days, "keep_last": keep_last},
        "Delete backups past retention, never the newest verified one",
    )


def _steps(*work: _Work) -> list[Step]:
    """Steps step_0, step_1, ... of (tool, params, rationale)."""
    return [Step(step_id(i), tool, dict(params), why) for i, (tool, params, why) in enumerate(work)]
