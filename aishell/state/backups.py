"""The backups catalog: backups taken, verified and deleted, which
`backup_required` and the tools that choose among backups read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from aishell.state.core import StoreCore
from aishell.state.schema import backups, runs
from aishell.state.values import dumps, loads, new_id, now

# A backup that a restore has proven (a passing validate_backup): what `backup_required`,
# the backup_stale alert and the backup age metric count.
PROVEN = backups.c.verified_at.is_not(None)


class BackupCatalog(StoreCore):
    """Rows of the backups table."""

    def record_backup(
        self,
        *,
        target: str,
        kind: str,
        path: str,
        run_id: str | None = None,
        created_at: str | None = None,
        verified_at: str | None = None,
        verification: Any = None,
        sha256: str | None = None,
        size_bytes: int | None = None,
        manifest: Any = None,
    ) -> int:
        with self._tx() as conn:
            result = conn.execute(
                insert(backups).values(
                    target=target,
                    run_id=run_id,
                    kind=kind,
                    path=path,
                    sha256=sha256,
                    size_bytes=size_bytes,
                    manifest=None if manifest is None else dumps(manifest),
                    created_at=created_at or now(),
                    verified_at=verified_at,
                    verification=None if verification is None else dumps(verification),
                )
            )
            return new_id(result)

    def backup_verified(self, path: str, verification: Any, ok: bool) -> None:
        """Store a validation's result with the backup; only a passing one marks it verified."""
        with self._tx() as conn:
            conn.execute(
                update(backups)
                .where(backups.c.path == path)
                .values(
                    verification=dumps(verification),
                    verified_at=now() if ok else None,
                )
            )

    def backup_deleted(self, path: str) -> None:
        with self._tx() as conn:
            conn.execute(update(backups).where(backups.c.path == path).values(deleted_at=now()))

    def list_backups(self, target: str | None = None) -> list[dict[str, Any]]:
        """Backups not deleted, newest first; each with `host`, the machine that took it
        (its manifest says; a backup from before manifests did, its run's host)."""
        query = (
            select(backups, runs.c.hostname.label("run_host"))
            .outerjoin(runs, runs.c.run_id == backups.c.run_id)
            .where(backups.c.deleted_at.is_(None))
            .order_by(backups.c.created_at.desc())
        )
        if target:
            query = query.where(backups.c.target == target)
        rows = [_backup_row(r._mapping) for r in self._conn.execute(query)]
        self._conn.rollback()
        return rows

    def last_verified_backup(self, target: str) -> datetime | None:
        """When the newest verified backup of a target was taken."""
        row = self._conn.execute(
            select(backups.c.created_at)
            .where((backups.c.target == target) & PROVEN)
            .order_by(backups.c.created_at.desc())
            .limit(1)
        ).first()
        self._conn.rollback()
        return datetime.fromisoformat(row[0]) if row else None


def _backup_row(row: Any) -> dict[str, Any]:
    found = {k: v for k, v in row.items() if k not in ("manifest", "verification", "run_host")}
    manifest = loads(row["manifest"])
    said = manifest.get("hostname") if isinstance(manifest, dict) else None
    return {
        **found,
        "manifest": manifest,
        "verification": loads(row["verification"]),
        "host": said or row["run_host"],
    }
