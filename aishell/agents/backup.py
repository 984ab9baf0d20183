"""The backup agent: a full backup, validated by restoring it; and the restore of a
catalogued backup into a target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.base import (
    AgentSpec,
    CatalogFact,
    PlanningContext,
    given_options,
)
from aishell.agents.limits import DraftLimits
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
from aishell.errors import UsageError
from aishell.plan.model import Step, step_id
from aishell.state.backups import database_of
from aishell.units import exact

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
        if normalized["type"] == "drill":
            _refuse_ignored_by_drill(given)
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

    def draft_limits(self, job: dict[str, Any], ctx: PlanningContext) -> DraftLimits:
        """What a model's draft of the job must keep to, as plan_steps does: its type's
        backup and no other, chained as the rules chain it; with verification, a
        validation of that backup, as quick as the job says, and none without; the
        cleanup of old backups only with --cleanup, with its settings; never a restore."""
        kind = job["type"]
        taken = _TAKEN.get(kind)
        verify = kind == "drill" or bool(job.get("verify", True))
        refused = {"restore_backup": "a backup job never restores: `aishell restore` does"}
        refused.update({dump: _no_dump(kind) for dump in _DUMPS if dump != taken})
        required, fed = _held_params(job, taken)
        needed: dict[str, str] = {}
        if verify:
            needed[_VALIDATE] = f"the {kind} backup job proves its backup restores"
        else:
            refused[_VALIDATE] = "the job says --no-verify: no step may validate a backup"
        cleanup = _cleanup_limits(job)
        if cleanup is None:
            refused[_CLEANUP] = "the job does not say --cleanup: no step may delete backups"
        else:
            required[_CLEANUP] = cleanup
        changes = {t for t in (taken, verify and _VALIDATE, cleanup and _CLEANUP) if t}
        return DraftLimits(
            changes=frozenset(changes),
            changes_why=f"the {kind} backup job changes only by {', '.join(sorted(changes))}",
            refused=refused,
            required=required,
            needed=needed,
            fed=fed,
        )

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
        # Named by the database it is of: the target it was taken through may reach
        # another database now.
        of = database_of(backup.get("manifest")) or "a database its manifest does not name"
        why = (
            f"Restore backup {backup['id']} (of {of}, taken as '{backup['target']}') into '{into}'"
        )
        job = {"type": "restore", "backup_id": backup["id"]}
        return job, [Step(step_id(0), "restore_backup", params, why)]


_Work = tuple[str, dict[str, Any], str]
_NEWEST = "${step_0.output.backup_path}"


def _refuse_ignored_by_drill(given: Mapping[str, Any]) -> None:
    """A drill restores the newest backup and takes none: an option about the backup it
    would take, its validation or its cleanup would be dropped unsaid, and the person
    who typed `--cleanup` would believe old backups were deleted."""
    ignored = [
        *([QUICK.cli_flag] if given.get("quick") else []),
        *(["--no-verify"] if given.get("verify") is False else []),
        *([CLEANUP.cli_flag] if given.get("cleanup") else []),
        *(["--lock-wait"] if given.get("lock_wait_seconds") is not None else []),
    ]
    if ignored:
        one = "it" if len(ignored) == 1 else "them"
        raise UsageError(
            f"--type drill proves the newest backup by restoring it whole and takes no "
            f"{', '.join(ignored)}: run the drill without {one}, or give {one} to a full "
            "or incremental backup"
        )


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


_VALIDATE = "validate_backup"
_CLEANUP = "cleanup_old_backups"
# The dump each type of backup takes (a drill takes none).
_TAKEN = {"full": "backup_database_full", "incremental": "backup_database_incremental"}
_Held = tuple[tuple[str, object, str], ...]


def _no_dump(kind: str) -> str:
    if kind == "drill":
        return "the job says --type drill: it proves the newest backup, it takes none"
    return f"the job says --type {kind}: it takes a {kind} backup and no other"


def _held_params(
    job: dict[str, Any], taken: str | None
) -> tuple[dict[str, _Held], dict[str, tuple[str, frozenset[str], str, str]]]:
    """The params a draft's steps must give as the job does, and those that must come
    from the steps before them: the backup validated is the one taken (a drill's, the
    newest found), an incremental one chains from the newest verified backup."""
    quick = bool(job.get("quick")) and job["type"] != "drill"
    shown = "--quick" if quick else "no --quick"
    required: dict[str, _Held] = {
        _VALIDATE: (
            (
                "quick",
                quick,
                f"the job says {shown}: give validate_backup quick {str(quick).lower()}",
            ),
        ),
    }
    verified = job["type"] != "drill"  # a drill proves the newest backup, verified or not
    required["find_last_backup"] = (
        (
            "verified_only",
            verified,
            f"the {job['type']} backup job finds the newest "
            f"{'verified ' if verified else ''}backup: give verified_only {str(verified).lower()}",
        ),
    )
    source = frozenset({taken} if taken else {"find_last_backup"})
    fed = {
        _VALIDATE: (
            "backup_path",
            source,
            "backup_path",
            f"the validation must check the backup of {' or '.join(sorted(source))} before it: "
            "give backup_path as that step's ${step_N.output.backup_path}",
        ),
    }
    if taken == "backup_database_incremental":
        fed[taken] = (
            "parent",
            frozenset({"find_last_backup"}),
            "backup_path",
            "an incremental backup chains from the newest verified backup: give parent as "
            "find_last_backup's ${step_N.output.backup_path}",
        )
    if taken:
        wait = job.get("lock_wait_seconds")
        why = (
            f"the job says --lock-wait {exact(wait)}: give {taken} lock_wait_seconds {exact(wait)}"
            if wait is not None
            else "the job gives no --lock-wait: a drafted backup may not give lock_wait_seconds"
        )
        required[taken] = (("lock_wait_seconds", wait, why),)
    return required, fed


def _cleanup_limits(job: dict[str, Any]) -> _Held | None:
    """The cleanup's settings a draft must give as the job does (None: no cleanup)."""
    if not job.get("cleanup"):
        return None
    return tuple(
        (
            key,
            job[key],
            f"the job says {flag} {exact(job[key])}: give cleanup_old_backups {key} "
            f"{exact(job[key])}",
        )
        for key, flag in (("retention_days", "--retention-days"), ("keep_last", "--keep-last"))
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
