"""The one retry policy: waits grow and are jittered within their bounds, attempts and
time both end the retrying, each retry reaches the caller's hook before its wait, and
what is not worth another try ends it at once; the same through `retrying` (a call)
and through `tries` (a loop of attempts, the executor's)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from aishell.retry.policy import Backoff, Retry, retrying, tries


class Flaky:
    """Fails with OSError `failures` times, then answers "ok"."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(f"failure {self.calls}")
        return "ok"


def looped(backoff: Backoff, **options: Any) -> Callable[[Callable[[], Any]], Any]:
    """`tries` as a call: the function tried in a loop of attempts, as the executor does."""

    def call(fn: Callable[[], Any]) -> Any:
        for trying in tries(backoff, **options):
            with trying:
                return fn()
        raise AssertionError("the loop ended without an answer or an error")

    return call


# Each policy test runs through both ways in.
WAYS = pytest.mark.parametrize("way", [retrying, looped], ids=["retrying", "tries"])


@WAYS
def test_waits_grow_and_are_jittered_within_half_and_all_of_the_exponential_wait(way: Any) -> None:
    random.seed(7)
    slept: list[float] = []
    heard: list[Retry] = []
    backoff = Backoff(first_wait=1.0, attempts=6)
    answer = way(
        backoff,
        on_error=lambda e: isinstance(e, OSError),
        on_retry=heard.append,
        sleep=slept.append,
    )(Flaky(5))
    assert answer == "ok"
    assert len(slept) == 5
    for n, wait in enumerate(slept):
        assert 2**n / 2 <= wait <= 2**n
    # Jittered: not the same fraction of the exponential wait every time.
    assert len({round(wait / 2**n, 6) for n, wait in enumerate(slept)}) > 1
    # Each retry is heard before its wait, with the attempt, its error and the wait.
    assert [r.attempt for r in heard] == [1, 2, 3, 4, 5]
    assert [r.delay for r in heard] == slept
    assert [str(r.error) for r in heard] == [f"failure {n}" for n in range(1, 6)]


@WAYS
def test_the_longest_wait_caps_every_wait_and_keeps_its_jitter(way: Any) -> None:
    slept: list[float] = []
    backoff = Backoff(first_wait=1.0, max_wait=3.0, attempts=8)
    way(backoff, on_error=lambda e: True, sleep=slept.append)(Flaky(7))
    assert all(1.5 <= wait <= 3.0 for wait in slept[2:])
    assert max(slept) <= 3.0


@WAYS
def test_out_of_attempts_the_last_error_is_raised(way: Any) -> None:
    flaky = Flaky(10)
    with pytest.raises(OSError, match="failure 3"):
        way(Backoff(0.0, attempts=3), on_error=lambda e: True, sleep=lambda _s: None)(flaky)
    assert flaky.calls == 3


@WAYS
def test_the_time_bound_ends_retries_before_a_wait_would_pass_it(way: Any) -> None:
    flaky = Flaky(1000)
    ends: list[float] = []

    def sleep(wait: float) -> None:
        ends.append(time.monotonic() + wait)
        time.sleep(wait)

    began = time.monotonic()
    with pytest.raises(OSError):
        way(Backoff(0.02, max_wait=0.08, seconds=0.3), on_error=lambda e: True, sleep=sleep)(flaky)
    # No wait was begun that would end past the bound (give or take the moment between
    # the bound's check and the sleep's start, however loaded the machine).
    assert ends and max(ends) <= began + 0.3 + 0.02, [e - began for e in ends]
    assert 3 <= flaky.calls < 20


@WAYS
def test_a_bound_already_past_allows_the_first_attempt_only(way: Any) -> None:
    flaky = Flaky(5)
    with pytest.raises(OSError, match="failure 1"):
        way(Backoff(1.0, seconds=-5.0), on_error=lambda e: True)(flaky)
    assert flaky.calls == 1


@WAYS
def test_an_error_not_worth_another_try_ends_it_at_once(way: Any) -> None:
    def refuses() -> None:
        raise ValueError("no")

    heard: list[Retry] = []
    with pytest.raises(ValueError, match="no"):
        way(
            Backoff(1.0, attempts=5),
            on_error=lambda e: isinstance(e, OSError),
            on_retry=heard.append,
        )(refuses)
    assert heard == []


def test_a_result_may_ask_for_another_try_and_the_last_is_returned() -> None:
    answers = iter(["busy", "busy", "busy", "busy"])
    heard: list[Retry] = []
    last = retrying(
        Backoff(0.0, attempts=3),
        on_result=lambda answer: answer == "busy",
        on_retry=heard.append,
        sleep=lambda _s: None,
    )(lambda: next(answers))
    assert last == "busy"
    assert [(r.attempt, r.error, r.result) for r in heard] == [(1, None, "busy"), (2, None, "busy")]


@WAYS
def test_the_hook_can_end_the_retrying(way: Any) -> None:
    def stop(_retry: Retry) -> None:
        raise KeyboardInterrupt

    flaky = Flaky(5)
    with pytest.raises(KeyboardInterrupt):
        way(Backoff(0.0, attempts=5), on_error=lambda e: True, on_retry=stop)(flaky)
    assert flaky.calls == 1


def test_a_loop_of_tries_numbers_its_attempts_and_ends_after_one_that_raised_nothing() -> None:
    flaky = Flaky(2)
    seen: list[int] = []
    for trying in tries(Backoff(0.0, attempts=5), on_error=lambda e: True, sleep=lambda _s: None):
        with trying:
            seen.append(trying.attempt)
            flaky()
    assert seen == [1, 2, 3]
    assert flaky.calls == 3


def test_a_loop_of_tries_lets_an_interrupt_through_at_once() -> None:
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        for trying in tries(Backoff(0.0, attempts=5), on_error=lambda e: True):
            with trying:
                seen.append(trying.attempt)
                raise KeyboardInterrupt
    assert seen == [1]
