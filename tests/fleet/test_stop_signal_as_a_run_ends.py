"""A stop signal that comes as a run's signal block closes (a fleet worker's SIGTERM as
its task's run ends): the block's handler is not run in the middle of putting the
process's own handlers back, so the worker's handler (Celery's warm shutdown) is back
in place to take the signal passed on to it, and the wakeup fd is the worker's again.

Before, a handler that raised there (the executor's Interrupted) left the block's own
handler on SIGTERM and its closed socket as the wakeup fd: the worker never saw that
SIGTERM nor any after it, took its task again and served on until killed."""

from __future__ import annotations

import signal
import threading
from typing import Any

from aishell import signalrelay
from aishell.signalrelay import relayed


class Stopped(BaseException):
    """What the block's handler raises, as the executor's Interrupted does."""


def test_a_signal_pending_as_the_block_closes_leaves_the_worker_s_handlers_in_place() -> None:
    stops = {signal.SIGINT, signal.SIGTERM}
    worker_handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stops}
    worker_fd = signal.set_wakeup_fd(-1)
    taken = len(signalrelay.TAKEN)

    def handler(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    stopped: list[int] = []
    try:
        try:
            with relayed((signal.SIGINT, signal.SIGTERM), handler, lambda *_: None, "t"):
                # Both come at once: SIGINT's handler raises and ends the block, and
                # SIGTERM is still pending when the block puts the handlers back. Sent
                # to this thread, which blocks them: sent to the process, another thread
                # of it (the suite's own) could take SIGINT before SIGTERM is sent.
                # Unblocked whatever happens: a mask left in place is inherited by
                # every process the suite starts after, which then never ends on them.
                signal.pthread_sigmask(signal.SIG_BLOCK, stops)
                try:
                    signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        except Stopped as exc:
            stopped.append(exc.args[0])
        in_place = {sig: signal.getsignal(sig) for sig in stops}
        fd_after = signal.set_wakeup_fd(-1)
    finally:
        for sig, old in worker_handlers.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(worker_fd)
    assert in_place == {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN}
    assert fd_after == -1
    assert stopped == [signal.SIGINT]  # the run stopped on the first
    assert signalrelay.TAKEN[taken:] == [signal.SIGINT, signal.SIGTERM]  # both passed on
