"""SIGTERM and SIGINT while `schedule serve` runs: each sets its stop, so that serve
ends as a service manager expects (running steps end resumably first)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

logger = logging.getLogger("aishell.scheduling.serve")


def stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """Handlers that set `stop`, in place of the previous ones (returned, to put back);
    none off the main thread, where Python takes no handler."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: Any) -> None:
        logger.info("%s received", signal.Signals(signum).name)
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore_signals(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
