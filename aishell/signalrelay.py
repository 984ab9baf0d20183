"""Signals carried at once to a thread of their own, through the wakeup fd.

Python runs a signal's handler only in the main thread, and only once that thread runs
Python again: never while a driver's C call blocks it, nor while it sleeps on a lock
and the kernel gave the signal to another thread (which it may). CPython's C-level
handler still writes the signal's number to the wakeup fd at once, whichever thread
took it; a thread that reads it there acts without waiting for the main one.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

Handler = Callable[[int, Any], None]

# Every signal a `relayed` block took, in order: what a process whose own handler the
# block replaced (a fleet worker's) looks at afterwards, to act on it in its turn.
TAKEN: list[int] = []


@contextmanager
def relayed(
    signals: Sequence[int],
    handler: Handler,
    on_signal: Callable[[int, threading.Event], None],
    name: str,
) -> Iterator[None]:
    """While inside: `handler` is each signal's Python handler, and `on_signal(signum,
    leaving)` runs in a thread called `name` as soon as signals come (the last of those
    read together); `leaving` is set once the handlers are being put back, after which
    nothing should be sent on to the main thread. Only in the main thread, where Python
    takes handlers; elsewhere nothing is set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    leaving = threading.Event()

    def relay() -> None:
        while True:
            try:
                data = reader.recv(16)
            except OSError:  # closed on the way out
                return
            if not data or leaving.is_set():
                return
            on_signal(data[-1], leaving)

    relaying = threading.Thread(target=relay, name=name, daemon=True)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def noted(signum: int, frame: Any) -> None:
        TAKEN.append(signum)
        handler(signum, frame)

    previous = {sig: signal.signal(sig, noted) for sig in signals}
    relaying.start()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(previous_fd)
        leaving.set()
        writer.close()
        with suppress(OSError):  # wakes the relay's read, whatever state the pair is in
            reader.shutdown(socket.SHUT_RDWR)
        relaying.join(1)
        reader.close()
