"""The backup catalog: the newest backup on disk, and the retention that deletes old
backups while keeping the newest, the newest verified one, the young ones, and every
backup a kept incremental builds on. It deletes only what it proves a backup aishell
made under backup_dir (see `unproven`), never whatever path a catalog row holds.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aishell.errors import StepFailed
from aishell.files import kind_of
from aishell.handlers.backup.elsewhere import not_here, taken_on, this_host
from aishell.handlers.backup.manifest import manifest_of, remove_backup
from aishell.tool.context import ToolContext


def last_backup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    every = ctx.backup_catalog()
    if params.get("verified_only", True):
        every = [b for b in every if b["verified_at"]]
    catalog = [b for b in every if Path(b["path"]).is_file()]
    if not catalog:
        which = "verified backup" if params.get("verified_only", True) else "backup"
        away = not_here(max(every, key=lambda b: b["created_at"])) if every else None
        raise StepFailed(
            f"Target '{ctx.target}' has no {which} on disk here; the newest: {away}"
            if away
            else f"Target '{ctx.target}' has no {which} on disk; "
            "take one with `aishell run backup --type full`"
        )
    newest = max(catalog, key=lambda b: b["created_at"])
    return {
        "backup_id": newest["id"],
        "backup_path": newest["path"],
        "kind": newest["kind"],
        "created_at": newest["created_at"],
        "verified_at": newest["verified_at"],
    }


def _taken_at(created_at: str) -> float:
    """A catalog time as a Unix time: stored in UTC with its offset (an older row
    without one is UTC too, never the local time of whoever runs the cleanup)."""
    moment = datetime.fromisoformat(created_at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def choose_deletions(
    catalog: list[dict[str, Any]], retention_days: float, keep_last: int, now: float
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """What retention deletes, and why each other backup stays."""
    newest_first = sorted(catalog, key=lambda b: b["created_at"], reverse=True)
    keep: dict[int, str] = {}
    for b in newest_first[:keep_last]:
        keep[b["id"]] = f"one of the newest {keep_last}"
    verified = [b for b in newest_first if b["verified_at"]]
    if verified:
        keep.setdefault(verified[0]["id"], "the newest verified backup")
    for b in newest_first:
        taken = _taken_at(b["created_at"])
        if now - taken < retention_days * 86400:
            keep.setdefault(b["id"], f"younger than {retention_days:g} days")
    # A kept incremental needs its whole chain.
    by_path = {b["path"]: b for b in catalog}
    for b in list(newest_first):
        if b["id"] in keep:
            parent = (b.get("manifest") or {}).get("parent")
            while parent and parent in by_path:
                keep.setdefault(by_path[parent]["id"], f"a kept backup depends on it ({b['id']})")
                parent = (by_path[parent].get("manifest") or {}).get("parent")
    return [b for b in newest_first if b["id"] not in keep], keep


def cleanup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Delete what retention chose, each only once proven a backup aishell made under
    backup_dir; any other path is left alone and reported as skipped, with the reason.

    A skip does not fail the step: the backups that are proven are still cleaned, and a
    row that names another path (another home's backup, any file) is not this home's to
    remove. Its catalog row stays, so the skip is reported again on every run until a
    person looks at it."""
    catalog = ctx.backup_catalog()
    delete, keep = choose_deletions(
        catalog, params.get("retention_days", 30), params.get("keep_last", 3), time.time()
    )
    deleted, skipped = [], []
    for b in delete:
        why = unproven(b, ctx)
        if why is not None:
            skipped.append({"backup_id": b["id"], "path": b["path"], "why": why})
            continue
        remove_backup(Path(b["path"]))
        deleted.append(b["path"])
    return {
        "deleted_backups": deleted,
        "skipped": skipped,
        "kept": [{"backup_id": i, "why": why} for i, why in sorted(keep.items())],
    }


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
    delete, keep = choose_deletions(
        ctx.backup_catalog(),
        params.get("retention_days", 30),
        params.get("keep_last", 3),
        time.time(),
    )
    proven, skipped = [], {}
    for b in delete:
        why = unproven(b, ctx)
        if why is None:
            proven.append(b)
        else:
            skipped[b["path"]] = why
    return {
        "backups_to_delete": [b["path"] for b in proven],
        "bytes_to_free": sum(b["size_bytes"] or 0 for b in proven),
        "kept": {str(i): why for i, why in keep.items()},
        "skipped": skipped,
    }


def render_cleanup(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    estimate = cleanup_estimate(params, ctx)
    lines = [f"-- delete {p}" for p in estimate["backups_to_delete"]]
    lines += [f"-- leave {p}: {why}" for p, why in estimate["skipped"].items()]
    return lines or ["-- nothing to delete"]
