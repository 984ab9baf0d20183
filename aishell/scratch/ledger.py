"""Where a run records its scratch things before it makes them (see leftovers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from aishell.scratch.leftovers import FILE, clean, remove_file

if TYPE_CHECKING:
    from aishell.state.store import StateStore


class Ledger:
    """Where a run records its scratch things; without a store it records nothing."""

    def __init__(
        self,
        store: StateStore | None = None,
        run_id: str | None = None,
        target: str | None = None,
    ) -> None:
        self.store, self.run_id, self.target = store, run_id, target

    def record(self, kind: str, name: str, **details: Any) -> int | None:
        if self.store is None:
            return None
        return self.store.record_scratch(
            kind, name, run_id=self.run_id, target=self.target, details=details
        )

    def update(self, entry: int | None, **details: Any) -> None:
        if self.store is not None and entry is not None:
            self.store.update_scratch(entry, details)

    def forget(self, entry: int | None) -> None:
        if self.store is not None and entry is not None:
            self.store.forget_scratch(entry)

    def abandon(self, entry: int | None) -> None:
        """This process could not remove the thing: the next run, or `aishell doctor
        --clean`, removes it as if its maker had died."""
        self.update(entry, abandoned=True)

    @contextmanager
    def file(self, path: Path) -> Iterator[Path]:
        """A scratch file, removed afterwards (with any journal SQLite left beside it)."""
        entry = self.record(FILE, str(path))
        try:
            yield path
        finally:
            if remove_file(path):
                self.forget(entry)
            else:
                self.abandon(entry)

    def clean_dead(self, engine: Engine | None) -> dict[str, Any]:
        """Remove what dead processes left: every file and process, and the scratch
        databases on this run's target (others wait for their own target's next run, or
        `aishell doctor --clean`). Recorded as an event of the run."""
        if self.store is None:
            return {"removed": [], "kept": [], "forgotten": 0}
        outcome = clean(
            self.store,
            lambda name: engine if name == self.target else None,
            quiet_unreachable=True,
        )
        if (outcome["removed"] or outcome["kept"]) and self.run_id is not None:
            self.store.record_event(self.run_id, None, "scratch_cleaned", outcome)
        return outcome
