"""A target's circuit breaker stays open its whole cool-down, to the millisecond (kept to
whole seconds, a cool-down of one second could end at once), and its count of failed
connections in a row outlasts the cool-down: only a good connection ends it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aishell.state.store import StateStore


def test_the_breaker_stays_open_its_whole_cool_down(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        for attempt in range(5):  # at different fractions of a second
            before = datetime.now(UTC)
            assert store.connection_failed("db", "refused", 1, 1.0) == attempt + 1
            opened = store.breaker_open_until("db")
            assert opened is not None
            until, failures, error = opened
            assert until - before >= timedelta(milliseconds=999), (before, until)
            assert (failures, error) == (attempt + 1, "refused")
            time.sleep(0.13)


def test_failures_in_a_row_outlast_the_cool_down(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert store.failed_in_a_row("db") == (None, 0, "")
        store.connection_failed("db", "timed out", 1, 0.01)
        time.sleep(0.05)
        assert store.breaker_open_until("db") is None
        until, failures, error = store.failed_in_a_row("db")
        assert until is not None and until < datetime.now(UTC)
        assert (failures, error) == (1, "timed out")
        store.connection_succeeded("db")
        assert store.failed_in_a_row("db") == (None, 0, "")
