"""The backup catalog: the newest backup on disk, and the retention that deletes old
backups while keeping the newest, the newest verified one whose file is there whole
(and a newer one a quick validation decoded), the young ones, and every backup a kept
incremental builds on. It deletes only what it proves a backup aishell made under
backup_dir (see `unproven`), never whatever path a catalog row holds; a row the home's
key did not sign as it is (its `seal_error`) it neither keeps nor deletes.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aishell.errors import StepFailed
from aishell.files import kind_of
from aishell.handlers.backup.decode import decodes
from aishell.handlers.backup.elsewhere import not_here, taken_on, this_host
from aishell.handlers.backup.manifest import manifest_of, remove_backup, sha256_of
from aishell.state.backups import DECODED, RESTORED, database_of, on_disk, proof_of, refused
from aishell.targets.identity import backup_identity
from aishell.tool.context import ToolContext
from aishell.units import exact


def last_backup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    # A row the home's key did not sign as it is is no backup to restore or build on.
    sound = [b for b in ctx.backup_catalog() if refused(b) is None]
    every, others = of_this_database(sound, ctx, legacy=False)
    if params.get("verified_only", True):
        by_path = {b["path"]: b for b in every}
        every = [b for b in every if b["verified_at"]]
        # What was verified is the file of the size recorded, with the backups it builds
        # on: one cut short, or an increment whose parent is gone, is not it.
        catalog = [b for b in every if _there(b, by_path)]
    else:
        # The newest file there, whole or not: a drill of a damaged one says so.
        catalog = [b for b in every if Path(b["path"]).is_file()]
    if not catalog:
        which = "verified backup" if params.get("verified_only", True) else "backup"
        away = not_here(max(every, key=lambda b: b["created_at"])) if every else None
        raise StepFailed(
            f"Target '{ctx.target}' has no {which} on disk here; the newest: {away}"
            if away
            else f"Target '{ctx.target}' has no {which} on disk of the database it reaches "
            f"now{_others_said(others)}; take one with `aishell run backup --type full`"
        )
    newest = max(catalog, key=lambda b: b["created_at"])
    return {
        "backup_id": newest["id"],
        "backup_path": newest["path"],
        "kind": newest["kind"],
        "created_at": newest["created_at"],
        "verified_at": newest["verified_at"],
    }


def of_this_database(
    catalog: list[dict[str, Any]], ctx: ToolContext, *, legacy: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The catalog rows of the database the target reaches now (its backup_identity,
    as each backup's manifest names its own), and the others: backups of another
    database the target's name reached before, or of its SQLite file before it was
    replaced. A row recorded before manifests named the database goes with this
    database's when `legacy` (retention ages it out as before), else with the others."""
    here = backup_identity(ctx.connection)
    mine: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for b in catalog:
        said = database_of(b.get("manifest"))
        (mine if said == here or (said is None and legacy) else others).append(b)
    return mine, others


def _others_said(others: list[dict[str, Any]]) -> str:
    if not others:
        return ""
    return (
        f" ({len(others)} of its backups are of another database it reached before, or "
        "were recorded before aishell noted which database a backup is of)"
    )


def _taken_at(created_at: str) -> float:
    """A catalog time as a Unix time: stored in UTC with its offset (an older row
    without one is UTC too, never the local time of whoever runs the cleanup)."""
    moment = datetime.fromisoformat(created_at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def choose_deletions(
    catalog: list[dict[str, Any]],
    retention_days: float,
    keep_last: int,
    now: float,
    sound: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], dict[Any, str]]:
    """What retention deletes, and why each other backup stays. `sound`: whether a
    backup kept for what it proves still holds the bytes it was proven with (unchecked
    when None)."""
    newest_first = sorted(catalog, key=lambda b: b["created_at"], reverse=True)
    keep: dict[Any, str] = {}
    for b in newest_first[:keep_last]:
        keep[b["id"]] = f"one of the newest {keep_last}"
    _keep_the_best(newest_first, keep, sound)
    for b in newest_first:
        taken = _taken_at(b["created_at"])
        if now - taken < retention_days * 86400:
            keep.setdefault(b["id"], f"younger than {exact(retention_days)} days")
    # A kept incremental needs its whole chain.
    by_path = {b["path"]: b for b in catalog}
    for b in list(newest_first):
        if b["id"] in keep:
            parent = (b.get("manifest") or {}).get("parent")
            while parent and parent in by_path:
                keep.setdefault(by_path[parent]["id"], f"a kept backup depends on it ({b['id']})")
                parent = (by_path[parent].get("manifest") or {}).get("parent")
    return [b for b in newest_first if b["id"] not in keep], keep


def _there(backup: dict[str, Any], by_path: Mapping[str, dict[str, Any]]) -> bool:
    """Whether a backup can be kept for what it proves: its file here whole, or it is the
    one this run takes (previewed: it has no file yet), and so is every backup it builds
    on (an incremental whose parent is gone restores nothing)."""
    seen: set[str] = set()
    current: dict[str, Any] | None = backup
    while current is not None:
        if current["id"] != THIS_RUNS_BACKUP and not on_disk(
            current["path"], current.get("size_bytes")
        ):
            return False
        parent = (current.get("manifest") or {}).get("parent")
        if not parent:
            return True
        if parent in seen:
            return False
        seen.add(parent)
        current = by_path.get(parent)
    return False


def _keep_the_best(
    newest_first: list[dict[str, Any]],
    keep: dict[Any, str],
    sound: Callable[[dict[str, Any]], bool] | None,
) -> None:
    """Keep the newest verified backup whose file is there whole with every backup it
    builds on (a verified row whose file, or whose parent's, was moved, deleted, cut
    short or changed keeps nothing safe), and a newer one that a quick validation
    decoded, if any: retention never keeps only backups proven less than those it
    deletes. One found changed is kept too, for a person to look at."""
    by_path = {b["path"]: b for b in newest_first}

    def best(proven: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for b in newest_first:
            if not proven(b) or not _there(b, by_path):
                continue
            if sound is None or sound(b):
                return b
            keep.setdefault(b["id"], CHANGED)
        return None

    verified = best(lambda b: bool(b["verified_at"]))
    if verified is not None:
        keep.setdefault(verified["id"], "the newest verified backup")
    decoded = best(lambda b: proof_of(b.get("verification")) == DECODED)
    if decoded is not None and (
        verified is None or _taken_at(decoded["created_at"]) > _taken_at(verified["created_at"])
    ):
        keep.setdefault(decoded["id"], "the newest backup a quick validation decoded")


# Why a proven backup whose bytes changed since is neither counted as proven nor deleted.
CHANGED = (
    "its file, or one it builds on, no longer has the sha256 the catalog recorded: it "
    "changed since it was proven, so it counts as no good backup and is left for a "
    "person to look at"
)


def unchanged(catalog: list[dict[str, Any]]) -> Callable[[dict[str, Any]], bool]:
    """Whether a backup's file and those it builds on still have the sha256 the catalog
    recorded (a size kept is no proof: bytes may be changed in place); each file read
    at most once."""
    by_path = {b["path"]: b for b in catalog}
    hashed: dict[str, str | None] = {}

    def sound(backup: dict[str, Any]) -> bool:
        current: dict[str, Any] | None = backup
        seen: set[str] = set()
        while current is not None and current["path"] not in seen:
            path, recorded = current["path"], current.get("sha256")
            seen.add(path)
            if current["id"] != THIS_RUNS_BACKUP and recorded:
                if path not in hashed:
                    try:
                        hashed[path] = sha256_of(Path(path))
                    except OSError:
                        hashed[path] = None
                if hashed[path] != recorded:
                    return False
            current = by_path.get((current.get("manifest") or {}).get("parent") or "")
        return True

    return sound


# The tools whose step takes a backup of the target, by the kind it takes, and the tool
# whose passing step marks that backup verified (a failing one stops the run before any
# cleanup): a preview counts the backup its run takes before the cleanup.
_TAKES = {"backup_database_full": "full", "backup_database_incremental": "incremental"}
_PROVES = "validate_backup"
# How a preview names the backup its run takes first (it has no id nor path yet).
THIS_RUNS_BACKUP = "this run's new backup"
# Where a step's render and estimate keep the choice they show, for its run to hold to.
_CHOSEN = "cleanup_choice"


def planned_backup(
    catalog: list[dict[str, Any]],
    previewed_before: tuple[tuple[str, Mapping[str, Any]], ...],
    now: float,
    dialect: str,
) -> dict[str, Any] | None:
    """The catalog row of the backup that steps previewed before a cleanup would add: the
    newest of all; verified when a validation of it follows that restores it, decoded
    (not verified) when it is a quick one that decodes this engine's backups; an
    incremental chained to the newest verified backup on disk (the one find_last_backup
    gives it)."""
    tools = [tool for tool, _ in previewed_before]
    taken = [i for i, tool in enumerate(tools) if tool in _TAKES]
    if not taken:
        return None
    kind = _TAKES[tools[taken[-1]]]
    proofs = [
        DECODED if params.get("quick") and decodes(dialect) else RESTORED
        for tool, params in previewed_before[taken[-1] + 1 :]
        # A validation of the backup just taken names it by the step's output; a path
        # written out is a backup the catalog has already.
        if tool == _PROVES and "${" in str(params.get("backup_path", ""))
    ]
    proof = RESTORED if RESTORED in proofs else (DECODED if proofs else None)
    parent = None
    if kind == "incremental":
        # As find_last_backup chooses: a backup recorded before manifests named their
        # database is none to chain from.
        chained = [
            b
            for b in catalog
            if b["verified_at"]
            and database_of(b.get("manifest"))
            and on_disk(b["path"], b.get("size_bytes"))
        ]
        parent = max(chained, key=lambda b: b["created_at"])["path"] if chained else None
    # Later than every row: it is taken after the preview.
    latest = max((_taken_at(b["created_at"]) for b in catalog), default=now)
    moment = datetime.fromtimestamp(max(now, latest + 0.001), UTC).isoformat(
        timespec="milliseconds"
    )
    return {
        "id": THIS_RUNS_BACKUP,
        "path": THIS_RUNS_BACKUP,
        "kind": kind,
        "created_at": moment,
        "verified_at": moment if proof == RESTORED else None,
        "verification": {"ok": True, "proof": proof} if proof else None,
        "manifest": {"parent": parent},
    }


@dataclass(frozen=True)
class _Choice:
    """What retention deletes now: the backups proven this home's, those left alone
    with why, and why each other backup stays."""

    delete: list[dict[str, Any]]
    skipped: list[tuple[dict[str, Any], str]]
    keep: dict[Any, str]


def _choose(params: Mapping[str, Any], ctx: ToolContext) -> _Choice:
    now = time.time()
    # Retention keeps and deletes among the backups of the database the target reaches
    # now; another database's are not this cleanup's to retire, nor to be kept for it.
    # A row the home's key did not sign as it is is neither kept (it would stand in for a
    # real backup retention then deletes) nor deleted (its path may be any file): skipped,
    # and said on every run.
    listed = ctx.backup_catalog()
    sound = [b for b in listed if refused(b) is None]
    catalog, others = of_this_database(sound, ctx, legacy=True)
    planned = planned_backup(catalog, ctx.previewed_before, now, ctx.dialect)
    rows = catalog + ([planned] if planned else [])
    days, last = params.get("retention_days", 30), params.get("keep_last", 3)
    delete, keep = choose_deletions(rows, days, last, now)
    if delete:
        # Before anything goes, the backup kept for what it proves is read whole: one
        # changed in place since it was proven, at the size recorded, is none.
        delete, keep = choose_deletions(rows, days, last, now, unchanged(rows))
    proven: list[dict[str, Any]] = []
    skipped = [(b, _another_database(b, ctx)) for b in others]
    skipped += [(b, str(refused(b))) for b in listed if refused(b) is not None]
    for b in delete:
        why = unproven(b, ctx)
        if why is None:
            proven.append(b)
        else:
            skipped.append((b, why))
    return _Choice(proven, skipped, keep)


def _another_database(backup: Mapping[str, Any], ctx: ToolContext) -> str:
    said = database_of(backup.get("manifest"))
    return (
        f"it is a backup of another database ({said}) than target '{ctx.target}' reaches "
        "now; a target's cleanup deletes only its own database's backups (delete it by hand "
        "once it is not needed)"
    )


def _chosen(params: Mapping[str, Any], ctx: ToolContext) -> _Choice:
    """The choice this step shows and is judged on, made once for its render and its
    estimate: the run holds what it finds then against it."""
    if _CHOSEN not in ctx.step_cache:
        ctx.step_cache[_CHOSEN] = _choose(params, ctx)
    chosen: _Choice = ctx.step_cache[_CHOSEN]
    return chosen


def cleanup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Delete what retention chose, each only once proven a backup aishell made under
    backup_dir; any other path is left alone and reported as skipped, with the reason.

    What it deletes was named before it runs: by the list the step was judged on, a
    saved plan's preview (`apply`) and the approval it runs under. A backup none of
    them named (one taken since) fails the step before any file goes.

    A skip does not fail the step: the backups that are proven are still cleaned, and a
    row that names another path (another home's backup, any file) is not this home's to
    remove. Its catalog row stays, so the skip is reported again on every run until a
    person looks at it."""
    chosen = _choose(params, ctx)
    going = [b["path"] for b in chosen.delete]
    _as_reviewed(going, ctx)
    deleted = []
    for path in going:
        remove_backup(Path(path))
        deleted.append(path)
    return {
        "deleted_backups": deleted,
        "skipped": [
            {"backup_id": b["id"], "path": b["path"], "why": why} for b, why in chosen.skipped
        ],
        # Catalog ids in order; a preview's new backup (named, not numbered) after them.
        "kept": [
            {"backup_id": i, "why": why}
            for i, why in sorted(
                chosen.keep.items(), key=lambda kept: (str(type(kept[0])), kept[0])
            )
        ],
    }


def _as_reviewed(going: list[str], ctx: ToolContext) -> None:
    """Refuse, before the first file goes, a deletion that what the step was judged on,
    the saved plan's preview or its approval did not name. Fewer is covered: a backup
    named but gone since (an earlier attempt deleted it) is no new deletion."""
    for who, named in _reviews(ctx):
        extra = [path for path in going if path not in named]
        if extra:
            more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
            raise StepFailed(
                f"cleanup_old_backups would delete {extra[0]}{more}, which {who} did not "
                "name; nothing was deleted: preview the cleanup again to review what it "
                "deletes now"
            )


def _reviews(ctx: ToolContext) -> list[tuple[str, set[str]]]:
    """Each list of backups to delete that was shown before the step runs, and by whom."""
    found = []
    chosen = ctx.step_cache.get(_CHOSEN)
    if isinstance(chosen, _Choice):
        found.append(("the list it was judged on", {b["path"] for b in chosen.delete}))
    if ctx.reviewed_estimate is not None:
        found.append(("the saved plan", _named(ctx.reviewed_estimate)))
    approved = [a for a in ctx.step_approvals() if a.get("decision") == "approved"]
    if approved:
        given = approved[-1].get("given_for")
        effect = given.get("effect") if isinstance(given, Mapping) else None
        # An approval that kept no list of what it was given for names none.
        found.append(("its approval", _named(effect if isinstance(effect, Mapping) else {})))
    return found


def _named(estimate: Mapping[str, Any]) -> set[str]:
    listed = estimate.get("backups_to_delete")
    return {str(p) for p in listed} if isinstance(listed, list) else set()


def unproven(backup: Mapping[str, Any], ctx: ToolContext) -> str | None:
    """Why a catalog row's path is not proven a backup this home made, if it is not: it
    must lie under the real backup_dir, in the target's folder, be a regular file, and
    have beside it the manifest that names it, its checksum and its size."""
    if ctx.backup_dir is None:
        return "no backup folder is configured"
    path = Path(str(backup["path"]))
    folder = Path(os.path.realpath(ctx.backup_dir))
    # The folder aishell lays a target's backups in; the file's own name is not followed.
    real = Path(os.path.realpath(path.parent)) / path.name
    if not real.is_relative_to(folder / ctx.target) or path.name in ("", ".", ".."):
        return f"it is not in this home's backup folder for {ctx.target} ({folder / ctx.target})"
    try:
        info = os.lstat(real)
    except FileNotFoundError:
        host = taken_on(backup)
        if host is not None and host != this_host():
            return f"it was taken on host {host} and is not here; its cleanup there removes it"
        return "the file is gone"
    if not stat.S_ISREG(info.st_mode):
        return f"it is {kind_of(info.st_mode)}, not a backup file"
    manifest = manifest_of(real)
    if manifest is None:
        return "no readable manifest beside it names it"
    said = (manifest.get("file"), manifest.get("sha256"), manifest.get("size_bytes"))
    if said != (real.name, backup.get("sha256"), backup.get("size_bytes")):
        return "its manifest does not name this backup (file name, sha256 and size)"
    if manifest.get("target") != ctx.target or info.st_size != backup.get("size_bytes"):
        return "it is not the backup of this target the catalog recorded"
    return None


def cleanup_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    chosen = _chosen(params, ctx)
    return {
        "backups_to_delete": [b["path"] for b in chosen.delete],
        "bytes_to_free": sum(b["size_bytes"] or 0 for b in chosen.delete),
        "kept": {str(i): why for i, why in chosen.keep.items()},
        "skipped": {b["path"]: why for b, why in chosen.skipped},
    }


def render_cleanup(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    chosen = _chosen(params, ctx)
    lines = [f"-- delete {b['path']}" for b in chosen.delete]
    lines += [f"-- leave {b['path']}: {why}" for b, why in chosen.skipped]
    return lines or ["-- nothing to delete"]
