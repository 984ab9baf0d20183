"""What a step did besides its output: backups made, validated or deleted go into the
target's backup catalog, also from a step that failed partway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.executor.context import RunContext


def record_effects(run: RunContext, output: Mapping[str, Any]) -> None:
    """Backups a step made, and validations it ran, go into the backup catalog."""
    record = output.get("backup_record")
    if record:
        run.store.record_backup(target=run.target.name, run_id=run.run_id, **record)
    verified = output.get("verified_backup")
    if verified:
        run.store.backup_verified(verified["path"], verified, bool(verified["ok"]))
    for path in output.get("deleted_backups") or []:
        run.store.backup_deleted(path)
