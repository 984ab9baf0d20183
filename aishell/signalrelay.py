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
    read together); `leaving` is set once the block closes, before the handlers are put
    back: nothing should be sent on to the main thread after it. Only in the main thread,
    where Python takes handlers; elsewhere nothing is set."""
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
        # Closing, the block is over: a signal is noted for the process's own handler
        # (TAKEN), not acted on. A handler raising here, in the middle of putting things
        # back, would leave the block's handlers and its closed wakeup fd in place for good.
        if not leaving.is_set():
            handler(signum, frame)

    # Set up inside the try: a signal may come while the relay's thread starts (a wait,
    # long on a loaded machine) or as a handler is set, and the handler raise there.
    previous: dict[int, Any] = {}
    try:
        relaying.start()
        for sig in signals:
            previous[sig] = signal.signal(sig, noted)
        yield
    finally:
        leaving.set()
        try:
            _put_back(previous, previous_fd)
        finally:
            writer.close()
            with suppress(OSError):  # wakes the relay's read, whatever state the pair is in
                reader.shutdown(socket.SHUT_RDWR)
            if relaying.ident is not None:
                relaying.join(1)
            reader.close()


def _put_back(previous: dict[int, Any], previous_fd: int) -> None:
    """Every handler and the wakeup fd as they were before the block. signal.signal()
    first runs the handler of a signal still pending, which may raise (one put back
    already, as SIGINT's KeyboardInterrupt): each is put back all the same, then the
    first such error is raised."""
    raised: BaseException | None = None
    for sig, old in previous.items():
        try:
            signal.signal(sig, old)
        except BaseException as exc:  # the pending signal was taken: the next call sets
            raised = raised or exc
            signal.signal(sig, old)
    signal.set_wakeup_fd(previous_fd)
    if raised is not None:
        raise raised
