"""Target locks: one run at a time per target; the lock of a process that is gone is
taken over."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from aishell.errors import TargetLocked
from aishell.state.core import StoreCore
from aishell.state.processes import process_alive
from aishell.state.schema import runs, target_locks
from aishell.state.values import now


class LockRepository(StoreCore):
    """Rows of target_locks."""

    def acquire_lock(self, target: str, run_id: str, *, held_by_server: bool = False) -> None:
        """Take the target's lock for run_id; a lock whose process is gone is taken over.
        held_by_server: the caller holds the database's own run lock, which the server
        frees when its holder dies: a row naming anyone else is then stale, even one from
        another host (whose processes cannot be seen from here)."""
        me = {"pid": os.getpid(), "hostname": socket.gethostname()}
        for _ in range(2):
            try:
                with self._tx() as conn:
                    conn.execute(
                        insert(target_locks).values(
                            target=target, run_id=run_id, acquired_at=now(), **me
                        )
                    )
                return
            except IntegrityError:
                held = self._conn.execute(
                    select(target_locks).where(target_locks.c.target == target)
                ).first()
                self._conn.rollback()
                if held is None:
                    continue
                if not held_by_server and process_alive(held.pid, held.hostname):
                    raise TargetLocked(
                        f"Target '{target}' is locked by run {held.run_id} "
                        f"(pid {held.pid} on {held.hostname}, since {held.acquired_at})"
                    ) from None
                with self._tx() as conn:
                    conn.execute(
                        delete(target_locks).where(
                            (target_locks.c.target == target)
                            & (target_locks.c.run_id == held.run_id)
                        )
                    )
                    self._event(
                        conn, run_id, None, "stale_lock_taken_over", {"previous_run": held.run_id}
                    )
                    if held.run_id != run_id:
                        self._ended_elsewhere(conn, held)
        raise TargetLocked(f"Target '{target}' lock is contended; try again")

    def _ended_elsewhere(self, conn: Connection, held: Any) -> None:
        """The run whose lock was taken over, still stored running, is interrupted: its
        process is gone (or on another host, its server session), so every machine
        lists it so, not only the one that could see the process was gone."""
        reason = (
            f"its process (pid {held.pid} on {held.hostname}) is gone: its target's lock was "
            "taken over"
        )
        changed = conn.execute(
            update(runs)
            .where((runs.c.run_id == held.run_id) & (runs.c.status == "running"))
            .values(status="interrupted", finished_at=now(), error=reason)
        ).rowcount
        if changed:
            self._event(conn, held.run_id, None, "run_interrupted", {"reason": reason})

    def lock_holder(self, target: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            select(target_locks).where(target_locks.c.target == target)
        ).first()
        self._conn.rollback()
        return dict(row._mapping) if row else None

    def release_lock(self, target: str, run_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                delete(target_locks).where(
                    (target_locks.c.target == target) & (target_locks.c.run_id == run_id)
                )
            )
