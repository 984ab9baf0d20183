"""The one retry policy, over tenacity: a caller says what is worth another try, how
long the first wait is, and what bounds it (attempts, time, a longest wait); every
retry waits exponentially longer with jitter, and each wait is reported to the caller's
hook before it is slept.

The jitter is "equal jitter": the wait before attempt n+1 is between half and all of
first_wait * 2**(n-1) (capped at max_wait), so runs failing at the same moment do not
retry in step, yet every wait still grows. Out of attempts or time, the last attempt's
exception is raised, or its result returned when a result asked for the retry."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.retry import retry_base, retry_never
from tenacity.stop import stop_base
from tenacity.wait import wait_base


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts and when to give up.

    first_wait: seconds before the second attempt (at most; at least half of it);
    max_wait: the longest single wait (its upper end; waits there are jittered too);
    attempts: attempts in all, the first included; None for no count;
    seconds: no wait may end this many seconds or more after the first attempt began
    (a deadline given as its distance from now); None for no bound in time.
    """

    first_wait: float
    max_wait: float = math.inf
    attempts: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Retry:
    """One failed attempt about to be tried again, as the hook sees it."""

    attempt: int  # the attempt that failed, counting from 1
    delay: float  # seconds to wait before the next
    error: BaseException | None  # what it raised; None when its result asked again
    result: Any = None


def wait_of(backoff: Backoff) -> wait_base:
    """The waits: a fixed half of the exponential wait plus a random part up to the other
    half, both halves capped at half of max_wait."""
    half, cap = backoff.first_wait / 2, backoff.max_wait / 2
    return wait_exponential(multiplier=half, max=cap) + wait_random_exponential(
        multiplier=half, max=cap
    )


def stop_of(backoff: Backoff) -> stop_base:
    """When to stop: the attempt count or the time bound, whichever comes first."""
    stop: stop_base = stop_never
    if backoff.attempts is not None:
        stop = stop | stop_after_attempt(backoff.attempts)
    if backoff.seconds is not None:
        # Checked with the coming wait: no attempt is begun past the bound.
        stop = stop | stop_before_delay(max(0.0, backoff.seconds))
    return stop


def retrying(
    backoff: Backoff,
    *,
    on_error: Callable[[BaseException], bool] | None = None,
    on_result: Callable[[Any], bool] | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Retrying:
    """A tenacity Retrying under the policy: an exception on_error accepts, or a result
    on_result accepts, is tried again; anything else ends it at once. Call it with the
    function to try (`retrying(...)(fn)`) or iterate over it. on_retry hears of each
    retry before its wait (an exception it raises ends the retrying); sleep waits."""
    retry: retry_base = retry_never
    if on_error is not None:
        retry = retry | retry_if_exception(on_error)
    if on_result is not None:
        retry = retry | retry_if_result(on_result)
    return Retrying(
        wait=wait_of(backoff),
        stop=stop_of(backoff),
        retry=retry,
        before_sleep=_reporter(on_retry),
        sleep=sleep,
        retry_error_callback=_last_outcome,
    )


def _reporter(on_retry: Callable[[Retry], None] | None) -> Callable[[RetryCallState], None]:
    def report(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None:
            return
        outcome, delay = state.outcome, state.upcoming_sleep
        if outcome.failed:
            on_retry(Retry(state.attempt_number, delay, outcome.exception()))
        else:
            on_retry(Retry(state.attempt_number, delay, None, outcome.result()))

    return report


def _last_outcome(state: RetryCallState) -> Any:
    """Out of attempts or time: the last attempt's exception raised, or its result."""
    assert state.outcome is not None
    return state.outcome.result()


class Try:
    """One attempt of `tries`: `with` it around the work; an Exception it raises is kept
    for the loop to judge, anything else (KeyboardInterrupt, SystemExit) goes on up."""

    __slots__ = ("attempt", "error")

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt  # counting from 1
        self.error: Exception | None = None

    def __enter__(self) -> Try:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any
    ) -> bool:
        if isinstance(error, Exception):
            self.error = error
            return True
        return False


def tries(
    backoff: Backoff,
    *,
    on_error: Callable[[BaseException], bool],
    on_retry: Callable[[Retry], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Try]:
    """The attempts of a block, under the same policy as `retrying` (its waits, its
    bounds, its hook), for callers that iterate:

        for trying in tries(backoff, on_error=worth):
            with trying:
                work(trying.attempt)

    The loop ends after an attempt that raised nothing. An error on_error refuses, or
    the last one allowed, is raised from the loop. Made for the executor's every step:
    no tenacity state is built unless an attempt fails."""
    started = time.monotonic()
    attempt = 1
    while True:
        trying = Try(attempt)
        yield trying
        error = trying.error
        if error is None:
            return
        if not on_error(error):
            raise error
        # The state tenacity would hold here, for the policy's own wait and stop.
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.start_time, state.outcome_timestamp = started, time.monotonic()
        state.attempt_number = attempt
        state.upcoming_sleep = delay = wait_of(backoff)(state)
        if stop_of(backoff)(state):
            raise error
        if on_retry is not None:
            on_retry(Retry(attempt, delay, error))
        sleep(delay)
        attempt += 1
