"""The audit of a step's statements: each passes the guard and is recorded before it runs."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from aishell.errors import REFUSED_BY_GUARD, StatementRefused, StepInterrupted
from aishell.executor.context import RunContext
from aishell.guard.connection import Guard
from aishell.state.steps import Read
from aishell.state.store import StateStore
from aishell.tool.context import ToolContext

Before = Callable[[Any, str, Any], None]
After = Callable[[Any], None]


class _Hooks:
    """The cursor events of one connection, listened to once; each audited block adds
    its handlers for as long as it lasts. (Listening and unlistening per block, twice a
    step, cost more than the step's checkpoints.)"""

    def __init__(self, conn: Connection) -> None:
        self.handlers: list[tuple[Before, After]] = []
        event.listen(conn, "before_cursor_execute", self.before)
        event.listen(conn, "after_cursor_execute", self.after)

    def before(self, _c: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        for before, _after in list(self.handlers):
            before(cursor, statement, parameters)

    def after(self, _c: Any, cursor: Any, *_: Any) -> None:
        for _before, after in list(self.handlers):
            after(cursor)


# A connection is used by one thread at a time (SQLAlchemy's rule), so each key is
# written by one thread only.
_HOOKS: weakref.WeakKeyDictionary[Connection, _Hooks] = weakref.WeakKeyDictionary()


def _hooks(conn: Connection) -> _Hooks:
    hooks = _HOOKS.get(conn)
    if hooks is None:
        hooks = _HOOKS[conn] = _Hooks(conn)
    return hooks


@contextmanager
def audited(
    run: RunContext, ctx: ToolContext, index: int, attempt: int, guard: Guard, quick: bool = False
) -> Iterator[None]:
    """Every statement the tool sends on its connection passes the guard, is recorded
    before it runs and completed after, each write counted (ctx.writes_sent); a refused
    one is recorded with why, and never sent. `quick`: the step is short (small
    tables), so its repeatable writes need no durable row first."""
    # A write's audit row is durable before the write is sent: the server may commit it
    # after aishell died, and its row is what says so. A read changes nothing, and a
    # repeatable write (ANALYZE, a plain VACUUM) is recovered by sending it again, so
    # in a quick step their rows (sent and completed in one) ride with the step's next
    # commit: such a step commits once, at its end. (In a long one, the durable row also
    # tells other processes the step is running.)
    open_ids: list[int | Read] = []
    conn = ctx.connection
    dialect, paramstyle = run.target.dialect, conn.dialect.paramstyle
    guard.connection = conn
    store, stopping = run.store, run.stopping

    def before(cursor: Any, statement: str, parameters: Any) -> None:
        if stopping.signal:  # no new statement once SIGINT or SIGTERM came
            raise StepInterrupted(f"interrupted by {stopping.signal}")
        why, found = guard.verdict(statement, cursor, dialect, paramstyle)
        if why is not None:
            guard.refused.append(why)
            refused = store.statement_started(run.run_id, index, attempt, statement, parameters)
            store.statement_finished(refused, None, f"{REFUSED_BY_GUARD}: {why}")
            raise StatementRefused(f"{guard.label}: statement refused: {why}")
        if found.writes:
            ctx.writes_sent += 1
        if found.writes and not (quick and found.repeatable):
            open_ids.append(
                store.statement_started(run.run_id, index, attempt, statement, parameters)
            )
        else:
            open_ids.append(Read(run.run_id, index, attempt, statement, parameters))

    def after(cursor: Any) -> None:
        guard.sent(cursor)
        rows = cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else None
        _finished(store, open_ids.pop(), rows, None)

    hooks = _hooks(conn)
    handlers = (before, after)
    hooks.handlers.append(handlers)
    stopping.enter(conn)
    try:
        yield
    except BaseException as exc:
        for statement_id in open_ids:
            _finished(store, statement_id, None, _error_text(exc))
        raise
    finally:
        stopping.leave(conn)
        hooks.handlers.remove(handlers)
    guard.raise_if_refused()
    guard.ended()


def _finished(store: StateStore, sent: int | Read, rows: int | None, error: str | None) -> None:
    if isinstance(sent, Read):
        store.statement_read(sent, rows, error)
    else:
        store.statement_finished(sent, rows, error)


def _error_text(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__
