"""The scratch ledger: scratch files, scratch databases and child processes, each
recorded before it is made, so that what a dead process left behind is found and
removed (aishell/scratch/)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from sqlalchemy import delete, insert, select, update

from aishell.state.core import StoreCore
from aishell.state.processes import process_started, recorder_alive
from aishell.state.schema import scratch
from aishell.state.values import dumps, new_id, now


class ScratchLedger(StoreCore):
    """Rows of the scratch table."""

    def record_scratch(
        self,
        kind: str,
        name: str,
        *,
        run_id: str | None = None,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Record a scratch file, database or child process before it is made; durable
        before this returns, so a crash right after still finds it."""
        pid = os.getpid()
        with self._tx() as conn:
            result = conn.execute(
                insert(scratch).values(
                    run_id=run_id,
                    target=target,
                    kind=kind,
                    name=name,
                    details=dumps(details or {}),
                    pid=pid,
                    hostname=socket.gethostname(),
                    pid_started=process_started(pid),
                    created_at=now(),
                )
            )
            return new_id(result)

    def update_scratch(self, entry: int, details: dict[str, Any]) -> None:
        """Add what became known after the thing was made (a child's pid)."""
        row = self._conn.execute(select(scratch.c.details).where(scratch.c.id == entry)).first()
        self._conn.rollback()
        if row is None:
            return
        with self._tx() as conn:
            conn.execute(
                update(scratch)
                .where(scratch.c.id == entry)
                .values(details=dumps({**json.loads(row[0]), **details}))
            )

    def forget_scratch(self, entry: int) -> None:
        """The thing is gone (removed, renamed into place, or never made)."""
        with self._tx() as conn:
            conn.execute(delete(scratch).where(scratch.c.id == entry))

    def scratch_of_dead_runs(self) -> list[dict[str, Any]]:
        """What processes of this host that are gone left behind, and what a live one gave
        up removing (a scheduler lives for weeks), oldest first; another host's entries
        are never listed, since its processes cannot be seen from here."""
        rows = self._conn.execute(select(scratch).order_by(scratch.c.id)).all()
        self._conn.rollback()
        entries = [{**dict(r._mapping), "details": json.loads(r.details)} for r in rows]
        return [
            entry
            for entry in entries
            if entry["details"].get("abandoned")
            or not recorder_alive(entry["pid"], entry["hostname"], entry["pid_started"])
        ]
