"""The audit of a step's statements: each passes the guard and is recorded before it runs."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from aishell.errors import REFUSED_BY_GUARD, StatementRefused, StepInterrupted
from aishell.executor.context import RunContext
from aishell.guard.connection import Guard, shapes_for
from aishell.sqltext import quote_identifier
from aishell.state.steps import Read
from aishell.state.store import StateStore
from aishell.targets.access import session_access
from aishell.tool.context import ToolContext
from aishell.tool.side import Side

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
    run: RunContext,
    ctx: ToolContext,
    index: int,
    attempt: int,
    guard: Guard,
    quick: bool = False,
    side: tuple[Connection, Side] | None = None,
) -> Iterator[None]:
    """Every statement the tool sends on its connection passes the guard, is recorded
    before it runs and completed after, each write counted (ctx.writes_sent); a refused
    one is recorded with why, and never sent. `quick`: the step is short (small
    tables), so its repeatable writes need no durable row first. `side`: a second
    session of the step's (tool/side.py) and what it is for, audited the same way; the
    tool opens one meanwhile through ctx.side_session."""
    # A write's audit row is durable before the write is sent: the server may commit it
    # after aishell died, and its row says so. A read changes nothing, and a repeatable
    # write (ANALYZE, a plain VACUUM) is recovered by sending it again, so in a quick
    # step their rows ride with the step's next commit, once, at its end.
    open_ids: list[int | Read] = []
    conn = side[0] if side is not None else ctx.connection
    after_stop = side is not None and side[1].after_stop
    dialect, paramstyle = run.target.dialect, conn.dialect.paramstyle
    guard.connection = conn
    store, stopping = run.store, run.stopping

    def before(cursor: Any, statement: str, parameters: Any) -> None:
        if stopping.signal and not after_stop:  # no new statement once a signal came
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

    opens = None if side else partial(_side_session, run, ctx, index, attempt, guard)
    with _listening(conn, (before, after), run, not after_stop), _offering(ctx, opens):
        try:
            yield
        except BaseException as exc:
            for statement_id in open_ids:
                _finished(store, statement_id, None, _error_text(exc))
            raise
    guard.raise_if_refused()
    guard.ended()


@contextmanager
def _listening(
    conn: Connection, handlers: tuple[Before, After], run: RunContext, cancellable: bool
) -> Iterator[None]:
    """The handlers on conn's cursor events meanwhile; with `cancellable`, what runs on
    conn is cancelled by a stop (not the cleaning up a stop needs)."""
    hooks = _hooks(conn)
    hooks.handlers.append(handlers)
    if cancellable:
        run.stopping.enter(conn)
    try:
        yield
    finally:
        run.stopping.leave(conn)
        hooks.handlers.remove(handlers)


@contextmanager
def _offering(ctx: ToolContext, opens: Callable[[Side], Any] | None) -> Iterator[None]:
    """ctx.side_session opens a second session audited by this block meanwhile (none
    for a block that audits a second session: it does not open another)."""
    if opens is None:
        yield
        return
    before = ctx.open_side
    ctx.open_side = opens
    try:
        yield
    finally:
        ctx.open_side = before


@contextmanager
def _side_session(
    run: RunContext, ctx: ToolContext, index: int, attempt: int, step_guard: Guard, side: Side
) -> Iterator[Connection]:
    """A second session of the step on the target (tool/side.py): reads, and the
    writes `side` declares with its own names filled in; audited with the step."""
    conn = ctx.connection.engine.connect()
    try:
        if side.isolation_level is not None:
            conn = conn.execution_options(isolation_level=side.isolation_level)
        writes = bool(side.writes)
        # A pooled session planning left read-only writes again, or the reverse.
        read_only = side.read_only or not writes
        session_access(conn, read_only, run.target.read_only, side.limit_seconds)
        if conn.in_transaction():  # the tool begins its own (a snapshot's)
            conn.commit()
        names = {k: quote_identifier(conn.dialect, v) for k, v in side.names.items()}
        risk = max(step_guard.risk, side.risk, key=lambda r: r.rank)
        guard = Guard(
            shapes=shapes_for(side.writes, (), conn, names) if writes else None,
            writes=writes,
            risk=risk,
            label=f"{step_guard.label}, its session for {side.purpose}",
            memory=run.guard_memory,
        )
        with audited(run, ctx, index, attempt, guard, side=(conn, side)):
            yield conn
    finally:
        conn.close()


def _finished(store: StateStore, sent: int | Read, rows: int | None, error: str | None) -> None:
    if isinstance(sent, Read):
        store.statement_read(sent, rows, error)
    else:
        store.statement_finished(sent, rows, error)


def _error_text(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__
