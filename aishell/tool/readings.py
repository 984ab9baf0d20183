"""What a run's steps measured of each table, for the next step on the same table.

A full maintenance measures a table's indexes (their list from the catalog, each one's
pgstatindex) to report its fragmentation, and the next step measures them again to
choose what to rebuild. A reading is kept for the steps that follow until a step that
may write runs (on that table, or naming none, on any), and for at most MAX_AGE_SECONDS:
what the application writes meanwhile changes a table's figures slowly, a rebuild or a
VACUUM at once. A step that writes may leave what it read after its last write (a
table's size after its rebuild) for the next step, once it has succeeded.

Told the tables its plan names (`plan`), it reads an aspect (a table's indexes, its
bloat estimate) of every one of them in one query, the first time a step asks for one
(`get_each`): a plan of 10,000 tables costs one round trip per aspect, not one per
table. A table the running step writes to is read alone; once that step has ended, the
tables it wrote are read together again, with those no step has asked for yet, when
the next step asks for one of them; so are the readings older than MAX_AGE_SECONDS.

A preview's readings (`keeps_held`) also keep the tables found held by another session
past the lock wait: what a preview reports is the moment it looked, so no later step of
it waits on such a table again, nor does a read of many tables include it. A run's
readings do not: its next step tries again, since the holder may be done by then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from aishell.targets.lockholders import held_exclusive

if TYPE_CHECKING:
    from aishell.targets.tables import TableCatalog

T = TypeVar("T")

MAX_AGE_SECONDS = 60.0
# The key of a table's readings that are its row of the catalog's figures (keep_catalog).
CATALOG_FIGURES = "table_row"


class TableReadings:
    """Readings by table and key, each with when (time.monotonic()) it was made."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, keeps_held: bool = False
    ) -> None:
        self._clock = clock
        self.keeps_held = keeps_held
        # The tables found held past the lock wait, each with the lock's error.
        self._held: dict[str, BaseException] = {}
        self._by_table: dict[str, dict[Hashable, tuple[float, object]]] = {}
        self._after: list[tuple[str, Hashable, float, object]] = []
        # The tables the plan names, in order; by aspect, those a step has asked for
        # (or wrote to) since: the rest are read together.
        self._planned: tuple[str, ...] | None = None
        self._planned_set: frozenset[str] = frozenset()
        self._taken: dict[Hashable, set[str]] = {}
        self._written: set[str] = set()
        self._batched: dict[Hashable, tuple[float, set[str]]] = {}

    @property
    def planned(self) -> tuple[str, ...] | None:
        """The tables `plan` was told, None before."""
        return self._planned

    def plan(self, tables: Iterable[str]) -> None:
        """The tables the plan's steps name: what `get_each` reads together."""
        self._planned = tuple(dict.fromkeys(tables))
        self._planned_set = frozenset(self._planned)

    def get(self, table: str, key: Hashable, compute: Callable[[], T]) -> T:
        """The reading of `key` on `table` a recent earlier step made, else compute()'s."""
        now = self._clock()
        kept = self._fresh(table, key, now)
        if kept is not None:
            return cast(T, kept[1])
        value = compute()
        self._by_table.setdefault(table, {})[key] = (now, value)
        return value

    def get_each(
        self,
        table: str,
        key: Hashable,
        compute: Callable[[], T],
        compute_all: Callable[[Sequence[str]], Mapping[str, T]],
    ) -> T:
        """As `get`, but a table of the plan no step has asked this of yet is read with
        every other such table, in one go (compute_all: {table: reading}; one it leaves
        out, or all when it could not read them, compute() reads alone)."""
        now = self._clock()
        kept = self._fresh(table, key, now)
        taken = self._taken.get(key)
        if taken is None:
            taken = self._taken[key] = set()
        if kept is None and self._together(table, key, now):
            wanted = [
                t
                for t in self._planned or ()
                if t not in taken
                and t not in self._written
                and t not in self._held
                and self._fresh(t, key, now) is None
            ]
            self._batched[key] = (now, set(wanted))
            for name, value in compute_all(wanted).items():
                self._by_table.setdefault(name, {})[key] = (now, value)
            kept = self._fresh(table, key, now)
        taken.add(table)
        if kept is not None:
            return cast(T, kept[1])
        value = compute()
        self._by_table.setdefault(table, {})[key] = (now, value)
        return value

    def _fresh(self, table: str, key: Hashable, now: float) -> tuple[float, object] | None:
        """The reading of `key` on `table` (when, value) if it is at most MAX_AGE_SECONDS
        old, else None."""
        readings = self._by_table.get(table)
        kept = readings.get(key) if readings is not None else None
        return kept if kept is not None and now - kept[0] <= MAX_AGE_SECONDS else None

    def held(self, table: str) -> BaseException | None:
        """The lock's error of a table a preview found held, else None."""
        return self._held.get(table)

    def found_held(self, table: str, error: BaseException) -> None:
        """Another session held `table` past the lock wait (kept by a preview only)."""
        if self.keeps_held:
            self._held.setdefault(table, error)

    def look_for_held(self, conn: Connection) -> None:
        """A preview's look before any wait: the planned tables a read would wait on now
        (lockholders.held_exclusive) are found held at once, as if a lock wait had ended
        on each, so that no step waits on one (a run's readings look at none: its steps
        wait, and the holder may be done by then). A plan of one table waits on it once
        instead, and its steps say what that wait met (a purge's count, in one line)."""
        planned = self._planned or ()
        if not self.keeps_held or len(planned) < 2:
            return
        for table in held_exclusive(conn, planned):
            self.found_held(table, seen_held(table))

    def drop(self, table: str, key: Hashable) -> None:
        """A reading that holds nothing lasting (the table was held past the lock wait):
        the next step to ask reads it again."""
        self._by_table.get(table, {}).pop(key, None)

    def keep_each(
        self, key: Hashable, readings: Mapping[str, object], when: float | None = None
    ) -> None:
        """Readings of another aspect that one query of the plan's tables gave with the
        aspect asked for (a table's statistics estimate, with its indexes): kept as if
        `get_each` had read them together just now (or at `when`, by the clock)."""
        now = self._clock() if when is None else when
        taken = self._taken.get(key, set())
        fresh = {t: v for t, v in readings.items() if t not in taken and t not in self._written}
        for name, value in fresh.items():
            self._by_table.setdefault(name, {})[key] = (now, value)
        self._batched[key] = (now, set(fresh))

    def keep_catalog(self, catalog: TableCatalog) -> None:
        """The server's own figures of each table as the catalog read them, where it did
        (TableFacts.figures: MySQL's row of TABLES), kept as CATALOG_FIGURES readings made
        when it read them: the steps' first look at them costs no read of their own. For
        a plan's preview, made with the catalog it read just before: a run's (and a dry
        run's) steps read them together when the first of them asks, so that a table
        dropped since the run began is found gone."""
        if self._clock is not time.monotonic:  # the catalog's times are time.monotonic()'s
            return
        read_at, figures = catalog.fresh_figures(MAX_AGE_SECONDS)
        if figures:
            self.keep_each(CATALOG_FIGURES, figures, when=read_at)

    def _together(self, table: str, key: Hashable, now: float) -> bool:
        """Whether the table is read with the others: planned, not asked for nor written
        to since, nor in a batch read of this aspect (or tried) within MAX_AGE_SECONDS."""
        if table not in self._planned_set or table in self._written:
            return False
        if table in self._taken.get(key, ()):
            return False
        when, tables = self._batched.get(key, (0.0, set()))
        return not (table in tables and now - when <= MAX_AGE_SECONDS)

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
        one stays if it succeeded. Its writes are over: the next step to ask of one of
        its tables reads every such table with the plan's others, in one query (a step
        of 200 VACUUMs costs the next step one read of their sizes, not 200)."""
        names = list(tables)
        self._forget(names)
        if succeeded:
            for table, key, when, value in self._after:
                self._by_table.setdefault(table, {})[key] = (when, value)
        self._after.clear()
        self._written.difference_update(names)
        for asked in self._taken.values():
            asked.difference_update(names)
        for _when, batched in self._batched.values():
            batched.difference_update(names)

    def _forget(self, tables: Iterable[str]) -> None:
        names = list(tables)
        if not names:
            # Any table may have changed: every one is read again, together.
            self._by_table.clear()
            self._taken.clear()
            self._written.clear()
            self._batched.clear()
        self._written.update(names)
        for name in names:
            self._by_table.pop(name, None)


class _SeenHeld(Exception):
    """What a preview's look at the server's locks saw, as a lock wait's error reads
    (lockholders.is_lock_timeout): PostgreSQL's lock_not_available."""

    sqlstate = "55P03"


def seen_held(table: str) -> DBAPIError:
    return OperationalError(
        "(a look at pg_locks)",
        None,
        _SeenHeld(f"{table} is held ACCESS EXCLUSIVE by another session: not waited for"),
    )
