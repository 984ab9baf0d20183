"""A connect that a run's stop gives up: the driver's connect waits its whole connect
timeout on a server that accepts TCP and never answers, and neither libpq nor PyMySQL
hands over a socket to close before the connect returns. So the connect runs on a
thread of its own, and once the run stops (its time limit, a signal, a lost run lock)
no connect is waited for past STOPPED_CONNECT_SECONDS from its start: what a stop's
bookkeeping connects for still gets an answering server's connection, and a silent
server's connect no longer holds the run past its stop. A connection that comes after
it was given up is closed unused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

# How often a caller waiting for a connect looks whether the run stopped: a connect the
# server answers ends the wait at once; this is only how late a stop is seen.
STOP_LOOK_SECONDS = 0.05
# How long a connect may still take once the run stopped: an answering server's takes
# milliseconds.
STOPPED_CONNECT_SECONDS = 2.0


def unless_stopped(
    stopped: threading.Event, connect: Callable[[], Any], refused: Callable[[], BaseException]
) -> Any:
    """connect()'s connection, or its error; `refused()` raised once `stopped` is set
    and it has not returned STOPPED_CONNECT_SECONDS after it began (at once, for one
    that began longer ago)."""
    ended = threading.Event()
    outcome: list[tuple[Any, BaseException | None]] = []
    given_up = threading.Lock()
    abandoned: list[bool] = []

    def run() -> None:
        try:
            made, failure = connect(), None
        except BaseException as exc:  # handed to the caller as it is
            made, failure = None, exc
        with given_up:
            if abandoned:
                if made is not None:
                    with suppress(Exception):
                        made.close()
                return
            outcome.append((made, failure))
            ended.set()

    cut_at = time.monotonic() + STOPPED_CONNECT_SECONDS
    threading.Thread(target=run, name="aishell-connect", daemon=True).start()
    try:
        while not ended.wait(STOP_LOOK_SECONDS):
            if stopped.is_set() and time.monotonic() >= cut_at:
                break
    finally:
        with given_up:
            if not ended.is_set():
                # Stopped, or the caller interrupted (KeyboardInterrupt): the connection
                # that may still come is no one's.
                abandoned.append(True)
    if not outcome:
        raise refused()
    made, failure = outcome[0]
    if failure is not None:
        raise failure
    return made
