"""Byte figures for the progress display of a backup, a restore or a validation: bytes
done, of how many expected (when known), and how fast, reported through ctx.report at
most REPORTS_PER_SECOND times a second, so that counting costs nothing on a big dump.

A restore's client program (pg_restore, the mariadb client) reads the backup file
itself; how far it got is its position in that file, which Linux shows in
/proc/PID/fdinfo. Elsewhere only the figures at the end of each file are reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPORTS_PER_SECOND = 5


class ByteProgress:
    """Bytes done of a step's work, reported as figures for its progress display:
    bytes_done, bytes_total (None when not known) and bytes_per_second."""

    def __init__(self, report: Callable[[dict[str, Any]], None], total: int | None) -> None:
        self._report = report
        self.total = total if total else None
        self.done = 0
        self._started = time.monotonic()
        self._next = self._started + 1 / REPORTS_PER_SECOND

    def add(self, count: int) -> None:
        """`count` more bytes done."""
        self.done += count
        now = time.monotonic()
        if now >= self._next:
            self._send(now)

    def reached(self, done: int) -> None:
        """Done up to `done` bytes (never back: a program that seeks back reads again
        what it had counted)."""
        if done > self.done:
            self.done = done
        now = time.monotonic()
        if now >= self._next:
            self._send(now)

    def due(self) -> bool:
        """Whether the next figures would be reported now (to skip measuring them)."""
        return time.monotonic() >= self._next

    def finish(self) -> None:
        """The figures as they stand at the end, whenever the last report was."""
        self._send(time.monotonic())

    def reading(self, path: Path, before: int = 0) -> Callable[[int], None]:
        """For a child process that reads `path` (after `before` bytes of earlier files):
        called with its pid, it marks done as far as the child has read."""
        where = str(path.resolve())
        found: dict[str, int] = {}

        def watch(pid: int) -> None:
            position = read_position(pid, where, found)
            if position is not None:
                self.reached(before + position)

        return watch

    def _send(self, now: float) -> None:
        self._next = now + 1 / REPORTS_PER_SECOND
        elapsed = now - self._started
        self._report(
            {
                "bytes_done": self.done,
                "bytes_total": self.total,
                "bytes_per_second": round(self.done / elapsed) if elapsed > 0 else None,
            }
        )


def read_position(pid: int, path: str, found: dict[str, int]) -> int | None:
    """Where process `pid` is in the file at `path` (resolved), from /proc; None where
    there is no /proc, or the process has not opened the file (or has ended). `found`
    keeps the descriptor once found."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        fd = found.get("fd")
        if fd is None or os.readlink(fds / str(fd)) != path:
            fd = next((int(n) for n in os.listdir(fds) if _points_to(fds / n, path)), None)
            if fd is None:
                return None
            found["fd"] = fd
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("pos:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _points_to(link: Path, path: str) -> bool:
    try:
        return os.readlink(link) == path
    except OSError:
        return False
