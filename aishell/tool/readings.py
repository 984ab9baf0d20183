"""What a run's steps measured of each table, for the next step on the same table.

A full maintenance measures a table's indexes (their list from the catalog, each one's
pgstatindex) to report its fragmentation, and the next step measures them again to
choose what to rebuild. A reading is kept for the steps that follow until a step that
may write runs (on that table, or naming none, on any), and for at most MAX_AGE_SECONDS:
what the application writes meanwhile changes a table's figures slowly, a rebuild or a
VACUUM at once. A step that writes may leave what it read after its last write (a
table's size after its rebuild) for the next step, once it has succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar, cast

T = TypeVar("T")

MAX_AGE_SECONDS = 60.0


class TableReadings:
    """Readings by table and key, each with when (time.monotonic()) it was made."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_table: dict[str, dict[Hashable, tuple[float, object]]] = {}
        self._after: list[tuple[str, Hashable, float, object]] = []

    def get(self, table: str, key: Hashable, compute: Callable[[], T]) -> T:
        """The reading of `key` on `table` a recent earlier step made, else compute()'s."""
        now = self._clock()
        kept = self._by_table.get(table, {}).get(key)
        if kept is not None and now - kept[0] <= MAX_AGE_SECONDS:
            return cast(T, kept[1])
        value = compute()
        self._by_table.setdefault(table, {})[key] = (now, value)
        return value

    def after_writes(self, table: str, key: Hashable, value: object) -> None:
        """What the running step read after its last write: kept for the next steps
        once it ends well (see step_ended)."""
        self._after.append((table, key, self._clock(), value))

    def step_starts(self, tables: Iterable[str]) -> None:
        """A step that may write to these tables (naming none: to any) begins."""
        self._after.clear()
        self._forget(tables)

    def step_ended(self, tables: Iterable[str], succeeded: bool) -> None:
        """It ended: what it read before a write is gone, what it read after its last
        one stays if it succeeded."""
        self._forget(tables)
        if succeeded:
            for table, key, when, value in self._after:
                self._by_table.setdefault(table, {})[key] = (when, value)
        self._after.clear()

    def _forget(self, tables: Iterable[str]) -> None:
        names = list(tables)
        if not names:
            self._by_table.clear()
        for name in names:
            self._by_table.pop(name, None)
