"""An agent's own code within the run's time limit. Planning counts towards the limit;
what planning waits for on the server is cut off there (executor/stopping.py), but a
plugin's Python (a loop, a sleep, a call to a service that never answers) cannot be
cancelled. So while a limit is set, each call into an agent's code runs on a thread of
its own, and the run stops waiting for it at the limit: nothing was recorded yet, and
the thread, left behind, dies with the process."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from aishell.errors import PlanningStopped

T = TypeVar("T")

# When the planning of this thread's run must end (time.monotonic()), and how to say so.
_DEADLINE: contextvars.ContextVar[tuple[float, str] | None] = contextvars.ContextVar(
    "aishell_planning_deadline", default=None
)
# How often the waiting thread wakes: signals (SIGTERM, Ctrl-C) are handled between.
_POLL_SECONDS = 0.2


@contextmanager
def planning_deadline(at: float, stopped: str) -> Iterator[None]:
    """Calls of agents' code in the block end by `at` (time.monotonic()); `stopped` says
    by what limit, as the error starts."""
    token = _DEADLINE.set((at, stopped))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def within_deadline(call: Callable[[], T], who: str) -> T:
    """call(), or PlanningStopped naming `who` when the planning deadline comes first;
    what call raises is raised here. With no deadline set, call() as it is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return call()
    at, stopped = deadline
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc

    # Its context copied: what the caller set for this run holds in the agent's code too.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(work,), name="aishell-agent", daemon=True)
    thread.start()
    while thread.is_alive() and time.monotonic() < at:
        thread.join(min(_POLL_SECONDS, max(at - time.monotonic(), 0.0)))
    if thread.is_alive():
        raise PlanningStopped(
            f"{stopped}, before any run was recorded: nothing was changed; {who} was still planning"
        )
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])
