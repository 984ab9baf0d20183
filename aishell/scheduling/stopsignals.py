"""SIGTERM and SIGINT while `schedule serve` runs: each sets its stop, so that serve
ends as a service manager expects (running steps end resumably first)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aishell.signalrelay import relayed

logger = logging.getLogger("aishell.scheduling.serve")


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` while inside (in the main thread only).

    Not from a Python handler: the main thread sleeps in `stop.wait()`, and a signal the
    kernel gives another thread would not wake it to run one; nor could a handler set
    the Event safely, whose lock the main thread may hold inside its own wait. The
    signal reaches the stop through the wakeup fd (signalrelay)."""

    def handler(_signum: int, _frame: Any) -> None:
        """The wakeup fd carried it to the relay already."""

    def stopping(signum: int, _leaving: threading.Event) -> None:
        logger.info("%s received", signal.Signals(signum).name)
        stop.set()

    with relayed((signal.SIGTERM, signal.SIGINT), handler, stopping, "aishell-stop-signals"):
        yield
