"""A call bounded as a whole.

An HTTP library's timeout bounds each wait for bytes, so a server that sends a byte
now and then (a proxy that drips, a hook that streams slowly) holds a call for as long
as it likes. Here the call runs in a daemon thread and is given up at its deadline;
`abandon` then frees what the thread waits on (closes its client), and the thread ends
at its next read, or at the library's own timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from aishell.units import took

T = TypeVar("T")


class Late(Exception):
    """The call had not returned by its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no whole answer within {took(seconds, None)}")
        self.seconds = seconds


def within(seconds: float, call: Callable[[], T], abandon: Callable[[], None] | None = None) -> T:
    """call()'s result or exception, if it ends within `seconds`; else Late (after
    calling `abandon`, whose own failure is not the caller's)."""
    ended: list[tuple[T | None, BaseException | None]] = []

    def run() -> None:
        try:
            ended.append((call(), None))
        except BaseException as exc:  # handed to the caller's thread as it is
            ended.append((None, exc))

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if not ended:
        if abandon is not None:
            with suppress(Exception):
                abandon()
        raise Late(seconds)
    result, failure = ended[0]
    if failure is not None:
        raise failure
    return result  # type: ignore[return-value]
