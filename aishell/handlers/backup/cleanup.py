"""The backup catalog: the newest backup on disk, and the retention that deletes old
backups while keeping the newest, the newest verified one, the young ones, and every
backup a kept incremental builds on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aishell.errors import StepFailed
from aishell.handlers.backup.manifest import remove_backup
from aishell.toolcontext import ToolContext


def last_backup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    catalog = [b for b in ctx.backup_catalog() if Path(b["path"]).is_file()]
    if params.get("verified_only", True):
        catalog = [b for b in catalog if b["verified_at"]]
    if not catalog:
        which = "verified backup" if params.get("verified_only", True) else "backup"
        raise StepFailed(
            f"Target '{ctx.target}' has no {which} on disk; "
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
        taken = time.mktime(time.strptime(b["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
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
    catalog = ctx.backup_catalog()
    delete, keep = choose_deletions(
        catalog, params.get("retention_days", 30), params.get("keep_last", 3), time.time()
    )
    deleted = []
    for b in delete:
        remove_backup(Path(b["path"]))
        deleted.append(b["path"])
    return {
        "deleted_backups": deleted,
        "kept": [{"backup_id": i, "why": why} for i, why in sorted(keep.items())],
    }


def cleanup_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    delete, keep = choose_deletions(
        ctx.backup_catalog(),
        params.get("retention_days", 30),
        params.get("keep_last", 3),
        time.time(),
    )
    return {
        "backups_to_delete": [b["path"] for b in delete],
        "bytes_to_free": sum(b["size_bytes"] or 0 for b in delete),
        "kept": {str(i): why for i, why in keep.items()},
    }


def render_cleanup(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    return [f"-- delete {p}" for p in cleanup_estimate(params, ctx)["backups_to_delete"]] or [
        "-- nothing to delete"
    ]
