"""Which `schedule serve` serves a state store: the one that holds the scheduler's lock.

On a state store on PostgreSQL the lock is the server's (state/scheduler_lock.py): a
session-level advisory lock that the server frees when the process or its machine
dies, so a standby on another machine takes over; serve checks every few seconds that
it still holds it, and stops serving when it does not. On a SQLite store (one machine),
and on any store not on PostgreSQL, the lock is the lease row alone, taken over once its
process is gone. Either way the
lease row in target_locks says who serves, where and since when.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from aishell.errors import StateError, TargetLocked
from aishell.state.scheduler_lock import AdvisoryLock, takes_advisory_lock
from aishell.state.store import StateStore

LEASE = "(scheduler)"
LEASE_HOLDER = "serve"
# How often a serving scheduler makes sure it still holds the lock, and how often a
# standby asks for it.
CHECK_SECONDS = 2.0
STANDBY_SECONDS = 1.0

logger = logging.getLogger(__name__)


class Leadership:
    """The scheduler's lock, from taking it (or waiting for it) to giving it back."""

    def __init__(self, store: StateStore) -> None:
        self._advisory = (
            AdvisoryLock(store.url, store.location) if takes_advisory_lock(store.url) else None
        )
        self.lost = threading.Event()
        self._taken = False
        self._watcher: threading.Thread | None = None

    def take(self, store: StateStore, standby: bool, stop: threading.Event) -> bool:
        """Hold the lock, or raise TargetLocked naming the holder; with `standby`, wait
        for it instead (said once), until `stop` is set (then False)."""
        said = False
        while not stop.is_set():
            if self._take_once(store):
                self._taken = True
                return True
            holder = _holder_text(store.lock_holder(LEASE))
            if not standby:
                raise TargetLocked(
                    f"A scheduler already serves this state store: {holder} "
                    "(`aishell schedule serve --standby` waits for it to end, then serves)"
                )
            if not said:
                logger.info("standby: a scheduler serves this state store (%s); waiting", holder)
                said = True
            stop.wait(STANDBY_SECONDS)
        return False

    def _take_once(self, store: StateStore) -> bool:
        if self._advisory is None:
            try:
                store.acquire_lock(LEASE, LEASE_HOLDER)
            except TargetLocked:
                return False
            return True
        if not self._advisory.take():
            return False
        # The lock is ours, so whoever the row names no longer serves: it becomes ours.
        previous = store.lock_holder(LEASE)
        if previous is not None:
            store.release_lock(LEASE, previous["run_id"])
            logger.info("taking over from the scheduler %s", _holder_text(previous))
            store.record_event(
                "-", None, "scheduler_taken_over", {"previous": _holder_text(previous)}
            )
        store.acquire_lock(LEASE, LEASE_HOLDER)
        return True

    def watch(self, stop: threading.Event) -> None:
        """Every CHECK_SECONDS, make sure the lock is still held; when it is not, say so
        and set `stop` (a lost lock may already be another scheduler's)."""
        if self._advisory is None:
            return

        def check() -> None:
            while not stop.wait(CHECK_SECONDS):
                if not self.holds():
                    logger.error(
                        "the scheduler's lock on the state store was lost (its connection "
                        "ended); stopping so that another scheduler may serve"
                    )
                    stop.set()

        self._watcher = threading.Thread(target=check, name="scheduler-lock", daemon=True)
        self._watcher.start()

    def holds(self) -> bool:
        """Whether this process still serves; a trigger asks just before it starts."""
        if self.lost.is_set():
            return False
        if self._advisory is not None and not self._advisory.holds():
            self.lost.set()
            return False
        return True

    def release(self, store: StateStore) -> None:
        """The lease row (when it was taken, and still names this process) and the lock."""
        try:
            holder = store.lock_holder(LEASE) if self._taken else None
            if holder is not None and _is_me(holder):
                store.release_lock(LEASE, LEASE_HOLDER)
        finally:
            if self._advisory is not None:
                self._advisory.release()

    def check_kept(self) -> None:
        """After serve stopped: a lost lock is an error of the command (exit 2)."""
        if self.lost.is_set():
            raise StateError(
                "The scheduler's lock on the state store was lost while serving (its "
                "connection to the server ended); serve stopped; start it again"
            )


def _is_me(holder: dict[str, Any]) -> bool:
    return bool(holder["pid"] == os.getpid() and holder["hostname"] == socket.gethostname())


def _holder_text(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "its lease row is not written yet"
    return f"pid {holder['pid']} on {holder['hostname']}, since {holder['acquired_at']}"
