"""The one retry policy: waits grow and are jittered within their bounds, attempts and
time both end the retrying, each retry reaches the caller's hook before its wait, and
what is not worth another try ends it at once."""

from __future__ import annotations

import random
import time

import pytest

from aishell.retry.policy import Backoff, Retry, retrying


class Flaky:
    """Fails with OSError `failures` times, then answers "ok"."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(f"failure {self.calls}")
        return "ok"


def test_waits_grow_and_are_jittered_within_half_and_all_of_the_exponential_wait() -> None:
    random.seed(7)
    slept: list[float] = []
    heard: list[Retry] = []
    backoff = Backoff(first_wait=1.0, attempts=6)
    answer = retrying(
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


def test_the_longest_wait_caps_every_wait_and_keeps_its_jitter() -> None:
    slept: list[float] = []
    backoff = Backoff(first_wait=1.0, max_wait=3.0, attempts=8)
    retrying(backoff, on_error=lambda e: True, sleep=slept.append)(Flaky(7))
    assert all(1.5 <= wait <= 3.0 for wait in slept[2:])
    assert max(slept) <= 3.0


def test_out_of_attempts_the_last_error_is_raised() -> None:
    flaky = Flaky(10)
    with pytest.raises(OSError, match="failure 3"):
        retrying(Backoff(0.0, attempts=3), on_error=lambda e: True, sleep=lambda _s: None)(flaky)
    assert flaky.calls == 3


def test_the_time_bound_ends_retries_before_a_wait_would_pass_it() -> None:
    flaky = Flaky(1000)
    began = time.monotonic()
    with pytest.raises(OSError):
        retrying(Backoff(0.02, max_wait=0.08, seconds=0.3), on_error=lambda e: True)(flaky)
    took = time.monotonic() - began
    assert took < 0.3  # no wait was begun that would end past the bound
    assert 3 <= flaky.calls < 20


def test_a_bound_already_past_allows_the_first_attempt_only() -> None:
    flaky = Flaky(5)
    with pytest.raises(OSError, match="failure 1"):
        retrying(Backoff(1.0, seconds=-5.0), on_error=lambda e: True)(flaky)
    assert flaky.calls == 1


def test_an_error_not_worth_another_try_ends_it_at_once() -> None:
    def refuses() -> None:
        raise ValueError("no")

    heard: list[Retry] = []
    with pytest.raises(ValueError, match="no"):
        retrying(
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


def test_the_hook_can_end_the_retrying() -> None:
    def stop(_retry: Retry) -> None:
        raise KeyboardInterrupt

    flaky = Flaky(5)
    with pytest.raises(KeyboardInterrupt):
        retrying(Backoff(0.0, attempts=5), on_error=lambda e: True, on_retry=stop)(flaky)
    assert flaky.calls == 1
