"""SIGTERM and SIGINT while `schedule serve` runs: each sets its stop, so that serve
ends as a service manager expects (running steps end resumably first)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("aishell.scheduling.serve")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` while inside; nothing off the main thread, where
    Python takes no handler.

    The stop is not set by a Python handler: Python runs one only in the main thread,
    once that thread wakes, and the kernel may deliver the signal to another thread
    while the main thread sleeps in `stop.wait()` with nothing to wake it. Nor could a
    handler set an Event safely: it would take the lock the main thread may hold inside
    that Event's own wait. The C-level handler writes the signal's number to a wakeup
    fd at once, whichever thread took it; a thread of its own reads it there and sets
    the stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def relay() -> None:
        while True:
            try:
                data = reader.recv(16)
            except OSError:  # closed on the way out
                return
            if not data:
                return
            for signum in data:
                if signum in SIGNALS:
                    logger.info("%s received", signal.Signals(signum).name)
                    stop.set()

    def handler(_signum: int, _frame: Any) -> None:
        """The wakeup fd carried it to the relay already."""

    relaying = threading.Thread(target=relay, name="aishell-stop-signals", daemon=True)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    relaying.start()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(previous_fd)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        relaying.join(1)
        reader.close()
