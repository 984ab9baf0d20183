"""One thread that calls each armed callback unless it is disarmed by its deadline: what
bounds a statement's wait for its answer (limits.py) and a step's time (deadlines.py)."""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress


class Watchdog:
    """One thread that calls each watch's callback unless it is disarmed by its deadline:
    a thread per statement would cost about a millisecond each, several times the round
    trip of a short statement. The thread ends when idle; the next watch starts another."""

    def __init__(self) -> None:
        self._reset()
        _WATCHDOGS.add(self)

    def _reset(self) -> None:
        # Also in a forked child, which has none of its parent's threads (this one's
        # said it was running) and may have inherited the lock held.
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._tokens = itertools.count(1)
        self._wakes_at = math.inf
        self._running = False

    def arm(self, seconds: float, expire: Callable[[], None]) -> int:
        deadline = time.monotonic() + seconds
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (deadline, expire)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="aishell-watchdog", daemon=True).start()
            elif deadline < self._wakes_at:
                self._cond.notify()
        return token

    def disarm(self, token: int | None) -> None:
        with self._cond:
            self._armed.pop(token or 0, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [token for token, (deadline, _) in self._armed.items() if deadline <= now]
                expired = [self._armed.pop(token)[1] for token in due]
                if not expired:
                    if not self._armed:
                        self._wakes_at = math.inf
                        self._cond.wait(30)
                        if not self._armed:
                            self._running = False
                            return
                        continue
                    self._wakes_at = min(deadline for deadline, _ in self._armed.values())
                    self._cond.wait(self._wakes_at - now)
                    continue
            for expire in expired:
                with suppress(Exception):
                    expire()


_WATCHDOGS: weakref.WeakSet[Watchdog] = weakref.WeakSet()


def _reset_in_child() -> None:
    for watchdog in list(_WATCHDOGS):
        watchdog._reset()


os.register_at_fork(after_in_child=_reset_in_child)


# Every target's statements are watched by one thread: one per target would leave a
# thread behind for every target a long-lived process (the scheduler) has used lately.
STATEMENTS = Watchdog()
