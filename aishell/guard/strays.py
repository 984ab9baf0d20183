"""What a tool's or an agent's code sends to the target besides the sessions the guard
watches. The guard and the statement audit listen on the step's connection and on the
second sessions it opens through `ToolContext.side_session`; a connection the code opens
itself from the same engine (`ctx.connection.engine.connect()`), from its own thread or
from one it starts, or a thread it starts and leaves running after its step ended, would
reach the database under neither. So while such code runs (`watching`), the engine's
statements on any connection not under a guard are refused where a package's code sent
them, on any thread, and a thread of a package's code that it leaves
running is refused every statement of the engine from then on, and named."""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from aishell.config.plugins import PACKAGE_CODE
from aishell.errors import StatementRefused
from aishell.targets.limits import OUTSIDE_STEPS_OPTION

# Whose code runs here under a guard ("": none): a context variable, so that planning
# code run on a thread of its own (agents/bounded.py, which copies the context) counts
# as well.
_INSIDE: ContextVar[str] = ContextVar("aishell_guarded_code", default="")
# The connections a guard watches now (a step's, its second sessions from their connect),
# each with how many blocks watch it: blocks on one connection may nest.
_WATCHED: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
# Threads of a package's code left running after the code that started them returned.
_LEFT: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
# Whose code runs under a guard now, on any thread: a thread that code starts does not
# carry its context (threading.Thread copies none), yet what it sends meanwhile is that
# code's, the thread joined before the call returns or not.
_RUNNING: list[str] = []


@contextmanager
def watching(conn: Connection, who: str) -> Iterator[list[str]]:
    """`who`'s code run meanwhile reaches the target only through `conn` and the
    sessions marked `watched`; yields the list, filled at the end, of the threads of a
    package's code it started and left running (each named with its function), which
    are refused every statement from then on."""
    _listen(conn.engine)
    started = set(threading.enumerate())
    token = _INSIDE.set(who)
    _RUNNING.append(who)
    left: list[str] = []
    try:
        with watched(conn):
            yield left
    finally:
        _INSIDE.reset(token)
        _RUNNING.remove(who)
        for thread in threading.enumerate():
            code = None if thread in started or not thread.is_alive() else _package_code(thread)
            if code is not None:
                _LEFT.add(thread)
                left.append(f"{thread.name} running {code}")


@contextmanager
def watched(conn: Connection) -> Iterator[None]:
    """`conn` is under a guard meanwhile (a second session from its connect on)."""
    _WATCHED[conn] = _WATCHED.get(conn, 0) + 1
    try:
        yield
    finally:
        if _WATCHED[conn] > 1:
            _WATCHED[conn] -= 1
        else:
            del _WATCHED[conn]


def left_running(who: str, left: list[str]) -> str:
    """The one line that names the threads `who` left running ("": none)."""
    if not left:
        return ""
    return (
        f"{who} left a thread running after it returned ({'; '.join(left)}): its "
        "statements are refused; a tool's or an agent's work ends when its call returns"
    )


def _listen(engine: Engine) -> None:
    if not event.contains(engine, "before_cursor_execute", _before):
        event.listen(engine, "before_cursor_execute", _before)


def _before(
    conn: Connection, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
) -> None:
    here = threading.current_thread()
    if here in _LEFT:
        raise StatementRefused(
            f"statement refused: it comes from a thread ({here.name}) a tool's or an "
            "agent's code started and left running after its call returned"
        )
    # A thread without the context: the code running under a guard meanwhile, whose
    # package's frame _caller finds on this thread's stack if it sent the statement.
    running = _RUNNING[-1:]  # a slice: another thread's watch may end meanwhile
    who = _INSIDE.get() or (running[0] if running else "")
    if not who or conn in _WATCHED:
        return
    # aishell's own sessions outside steps (the run lock's) say so; nothing else does.
    if context is not None and context.execution_options.get(OUTSIDE_STEPS_OPTION):
        return
    caller = _caller()
    if caller is None:
        # aishell's own code asked (a lock holder named on a session of its own, a
        # cancel's check): what it sends is its own, not a package's.
        return
    raise StatementRefused(
        f"{who}: statement refused: {caller} sent it on a connection of its own; a "
        "tool reaches the database through ctx.connection and ctx.side_session, which "
        "the guard and the statement audit watch"
    )


def _caller() -> str | None:
    """The package's module whose code sent the statement: the nearest on the stack that
    is a package's or aishell's; None when that is aishell's, or there is none."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if _foreign(module):
            return module
        if module.split(".")[0] == "aishell":
            return None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _package_code(thread: threading.Thread) -> str | None:
    """The dotted name of the function a thread runs, where it is a package's own code
    (neither aishell's nor the standard library's: a pool's worker is the pool's)."""
    run = type(thread).run
    if isinstance(thread, threading.Timer):
        target: Any = thread.function
    elif run is threading.Thread.run:
        target = getattr(thread, "_target", None)
    else:
        target = run
    module = str(getattr(target, "__module__", None) or "")
    if not _foreign(module):
        return None
    return f"{module}.{getattr(target, '__qualname__', '?')}"


def _foreign(module: str) -> bool:
    """Whether a module is a package's own code: under a top-level module an entry point
    or a tool file's handler named (config/plugins.py's PACKAGE_CODE). Threads of
    aishell's, of its libraries' and of the process's other code are not a step's."""
    return bool(module) and module.split(".")[0] in PACKAGE_CODE
