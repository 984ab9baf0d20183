"""The backup catalog and restoring a catalogued backup into a target."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from aishell.agents.backup import BackupAgent
from aishell.commands.breaker import circuit_breaker
from aishell.commands.starting import start_run
from aishell.commands.tools import load_catalog
from aishell.config.dburl import resolve_url
from aishell.config.models import Config
from aishell.errors import PlanError, StateTampered, UsageError
from aishell.executor import Observer, RunResult
from aishell.handlers.backup.elsewhere import not_here
from aishell.plan.model import Plan, validate_plan
from aishell.policy.approvers import Approver
from aishell.state.backups import DECODED, in_place, on_disk, proof_of, refused
from aishell.state.reached import Restorable
from aishell.state.store import checking_store, signed_store
from aishell.targets.engines import open_target


def list_backups(config: Config, target: str | None = None) -> list[dict[str, Any]]:
    """The backup catalog, newest first; each with whether it was proven restorable, how
    (`proof`: restored, or only decoded by a quick validation), and whether its file is
    still there (`file`: on disk, missing, or elsewhere: on the host that took it), and
    `seal_error`: why restore, validation and retention refuse it, its row not being what
    the home's key signed."""
    if target is not None:
        config.target(target)
    with checking_store(config) as store:
        rows = store.list_backups(target)
    for row in rows:
        row["proof"] = proof_of(row["verification"])
        row["file"] = _file_state(row)
    return rows


def _file_state(row: dict[str, Any]) -> str:
    """Where a catalogued backup's file is: "on disk" here whole, "elsewhere" (on the
    host that took it, out of this machine's sight), or "missing" (gone, moved, or not
    the size the catalog recorded)."""
    if on_disk(row["path"], row["size_bytes"]):
        return "on disk"
    return "elsewhere" if in_place(row["path"], row["size_bytes"], row.get("host")) else "missing"


def backup_catalog(config: Config, target: str | None = None) -> dict[str, Any]:
    """The backups (newest first) and, per target (the one asked for, else every one
    configured or catalogued), the newest proven restorable of the database it reaches
    now (backup_freshness)."""
    rows = list_backups(config, target)
    names = [target] if target else sorted({*config.main.targets, *(r["target"] for r in rows)})
    # With the home's key: a row not signed as it is vouches for no backup's age.
    with checking_store(config) as store:
        found = store.newest_restorable(config, names)
    return {"backups": rows, "newest_restorable": backup_freshness(found)}


def backup_freshness(found: Mapping[str, Restorable]) -> dict[str, dict[str, Any]]:
    """Per target, as newest_restorable judged it: the newest backup proven restorable,
    still in place, of the database the target reaches now (`database`; None: unknown),
    under whichever target name it was taken (`taken_as`), and how old it is; without
    one, null figures and `reason`, one phrase saying why no age is vouched."""
    now = datetime.now(UTC)
    summary: dict[str, dict[str, Any]] = {}
    for name, newest in found.items():
        age = newest.age_seconds(now)
        backup = newest.backup or {}
        summary[name] = {
            "backup_id": backup.get("id"),
            "taken_as": backup.get("target"),
            "created_at": newest.created_at,
            "age_hours": None if age is None else round(age / 3600, 1),
            # Whole seconds, as `fleet status` gives a proven backup's age: what the
            # human line reads in words (12 min, 5.2 h, 3.1 d).
            "age_seconds": None if age is None else round(age),
            "database": newest.database,
            "reason": newest.reason,
        }
    return summary


def show_backup(config: Config, backup_id: int) -> dict[str, Any]:
    for backup in list_backups(config):
        if backup["id"] == backup_id:
            return backup
    raise UsageError(f"No backup with id {backup_id}; `aishell backups list` shows them")


def restore(
    config: Config,
    backup_id: int,
    to: str,
    *,
    replace: bool = False,
    approver: Approver | None = None,
    observer: Observer | None = None,
    lock_wait: float | None = None,
    create: bool = False,
) -> RunResult:
    """Restore a catalogued backup into a target: a critical step, always approved first.
    `lock_wait`: the longest it may wait for a table lock (None: the tool's default);
    `create`: make the target's database first if it does not exist (empty; it stays
    if the restore is then declined)."""
    backup = show_backup(config, backup_id)
    if refused(backup) is not None:
        raise StateTampered(str(refused(backup)))
    away = not_here(backup)
    if away is not None:
        raise UsageError(away)
    if not backup["verified_at"]:
        how = (
            "was only decoded by a quick validation (--quick), never restored"
            if proof_of(backup["verification"]) == DECODED
            else "was never proven restorable"
        )
        raise UsageError(
            f"Backup {backup_id} {how}; validate it first (aishell run backup validates "
            "what it takes; `aishell run backup --type drill` restores the newest)"
        )
    name, _ = config.target(to)
    _database_for(config, name, backup_id, create)
    registry = load_catalog(config)
    handle = open_target(config, name, read_only=True)
    try:
        dialect = handle.dialect
    finally:
        handle.close()
    job, steps = BackupAgent().plan_restore(backup, name, replace=replace, lock_wait=lock_wait)
    plan = Plan(
        agent="backup",
        target=name,
        dialect=dialect,
        job=job,
        steps=tuple(steps),
        tool_fingerprints={s.tool: registry.get(s.tool).fingerprint for s in steps},
    )
    problems = validate_plan(plan, registry, config.agent("backup").capabilities)
    if problems:
        raise PlanError("; ".join(problems))
    with signed_store(config) as store, circuit_breaker(config, store, name):
        return start_run(config, store, registry, plan, approver=approver, observer=observer)


def _database_for(config: Config, name: str, backup_id: int, create: bool) -> None:
    """The target's database exists, or is made now with `create`; else one line saying
    how to make it."""
    from aishell.targets.creation import create_database, missing_database

    _names_a_database(config, name)
    missing = missing_database(config, name)
    if missing is None:
        return
    if not create:
        raise UsageError(
            f"Target '{name}': its database {missing} does not exist; "
            f"`aishell restore {backup_id} --to {name} --create` makes it, empty, first"
        )
    try:
        create_database(config, name)
    except DBAPIError as exc:
        said = str(exc.orig or exc).strip().splitlines()
        denied = _denied(exc)
        how = f"; {denied}, or make it empty yourself and restore without --create"
        raise UsageError(
            f"Target '{name}': its database {missing} cannot be made"
            + (f" ({said[0]})" if said else "")
            + (how if denied else "")
        ) from None


def _names_a_database(config: Config, name: str) -> None:
    """A server target restored into must name its database (its URL, or the service
    file it reads): one that names none would log in to the server's default one, not
    a database anyone chose to overwrite."""
    from aishell.targets.engines import open_server

    url = make_url(resolve_url(config.target(name)[1].url, config.home))
    if url.get_backend_name() == "sqlite":
        return
    server, database = open_server(config, name)
    server.close()
    if not database:
        raise UsageError(
            f"Target '{name}' names no database, and a restore writes into the one it "
            "names; give its URL a database (.../NAME) or its service a dbname"
        )


def _denied(exc: DBAPIError) -> str | None:
    """The privilege a refused CREATE DATABASE lacks, and what grants it; None when the
    server refused it for another reason."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "42501":
        return "the target's role needs CREATEDB (ALTER ROLE ... CREATEDB)"
    code = orig.args[0] if orig is not None and orig.args else None
    if code in (1044, 1227):
        return "the target's login needs CREATE on that database (GRANT CREATE ON `db`.* TO ...)"
    return None
