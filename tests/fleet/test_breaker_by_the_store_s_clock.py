"""A target's circuit breaker, opened by one worker and read by every other sharing the
state store, is timed by the store server's clock: a worker whose own clock is an hour
off opens it for its cool-down as every other worker sees it, neither an hour more (the
target left alone by the whole fleet) nor none at all.

Before, the breaker's end was the opening machine's clock plus the cool-down, judged by
each reader's own clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aishell.state import breaker
from aishell.state.store import StateStore
from tests.services import scratch_mysql, scratch_postgresql

SCRATCH = {"postgresql": scratch_postgresql, "mysql": scratch_mysql}
COOL_DOWN = 60.0


@pytest.fixture(params=["postgresql", "mysql"])
def state_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A state store of the test's own on the local server, which every worker shares."""
    made: AbstractContextManager[str] = SCRATCH[request.param]()
    with made as url:
        yield url


def _host_clock(skew: timedelta) -> type[datetime]:
    """The clock of a worker's machine `skew` off the others'."""

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + skew

    return Skewed


@pytest.mark.parametrize("hours", [1, -1], ids=["ahead", "behind"])
def test_a_breaker_opened_by_a_skewed_worker_lasts_its_cool_down_for_every_worker(
    state_url: str, monkeypatch: pytest.MonkeyPatch, hours: int
) -> None:
    key = "pg-orders 0123456789ab"
    with StateStore(state_url) as store:
        with monkeypatch.context() as skewed:
            skewed.setattr(breaker, "datetime", _host_clock(timedelta(hours=hours)))
            assert store.connection_failed(key, "connection refused", 1, COOL_DOWN) == 1
        # Another worker, its clock right, asks whether it may connect.
        opened = store.breaker_open_until(key)
    assert opened is not None, "the breaker a worker opened is closed for the others"
    until, failures, _ = opened
    left = (until - datetime.now(UTC)).total_seconds()
    assert failures == 1
    assert 0 < left <= COOL_DOWN + 5, f"left alone {left:.0f}s, not its {COOL_DOWN:.0f}s"
