"""The audit of a step's statements: each passes the guard and is recorded before it runs."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from aishell.errors import REFUSED_BY_GUARD, StatementRefused, StepFailed, StepInterrupted
from aishell.executor.context import RunContext
from aishell.guard.connection import Guard, shapes_for
from aishell.guard.hidden import HiddenWriters
from aishell.guard.memory import GuardMemory
from aishell.guard.strays import left_running, watched, watching
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
    one is recorded with why, and never sent. `quick`: a short step (small tables).
    `side`: a second session of the step's (tool/side.py), which the tool opens
    meanwhile through ctx.side_session, and what it is for."""
    # A write's audit row is durable before the write is sent (the server may commit it
    # after aishell died); a read's, and in a quick step a repeatable write's (sent
    # again if lost), rides with the step's next commit.
    open_ids: list[int | Read] = []
    conn = side[0] if side is not None else ctx.connection
    after_stop = side is not None and side[1].after_stop
    dialect, paramstyle, guard.connection = run.target.dialect, conn.dialect.paramstyle, conn
    store, stopping, records = run.store, run.stopping, _Records()

    def before(cursor: Any, statement: str, parameters: Any) -> None:
        if stopping.signal and not after_stop:  # no new statement once a signal came
            raise StepInterrupted(f"interrupted by {stopping.signal}")
        why, found = guard.verdict(statement, cursor, dialect, paramstyle)
        if why is None and found.writes and not records.here():
            why = "it writes, from a thread whose statements cannot be recorded before they run"
        if why is not None:
            guard.refused.append(why)
            key = (run.run_id, index, attempt, statement, parameters)
            records.write(partial(_refused, store, key, why))
            raise StatementRefused(f"{guard.label}: statement refused: {why}")
        if found.writes:
            ctx.writes_sent += 1
        if found.writes and not (quick and found.repeatable):
            records.flush()
            open_ids.append(
                store.statement_started(run.run_id, index, attempt, statement, parameters)
            )
        else:
            open_ids.append(Read(run.run_id, index, attempt, statement, parameters))

    def after(cursor: Any) -> None:
        guard.sent(cursor)
        rows = cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else None
        records.write(partial(_finished, store, open_ids.pop(), rows, None))

    opens = None if side else partial(_side_session, run, ctx, index, attempt, guard)
    listening = _listening(conn, (before, after), run, not after_stop)
    with listening, _offering(ctx, opens, guard.label) as left:
        try:
            yield
        except BaseException as exc:
            records.failed(store, open_ids, exc)
            raise
        finally:
            records.flush()
    _ended(guard, attempt, left)


class _Records:
    """The audit's rows, written by the run's thread (the state store is its own). What
    another thread sends on the connection (a count beside a dump, on the session that
    holds its snapshot) is kept until the run's thread writes it: so it may only read."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.kept: list[Callable[[], None]] = []  # append and pop(0) are atomic

    def here(self) -> bool:
        return threading.get_ident() == self.owner

    def write(self, record: Callable[[], None]) -> None:
        if self.here():
            self.flush()
            record()
        else:
            self.kept.append(record)

    def flush(self) -> None:
        while self.kept:
            self.kept.pop(0)()

    def failed(self, store: StateStore, sent: list[int | Read], exc: BaseException) -> None:
        """The statements still open when the block failed, completed with its error."""
        for statement in sent:
            self.write(partial(_finished, store, statement, None, _error_text(exc)))


def _refused(store: StateStore, key: tuple[str, int, int, str, Any], why: str) -> None:
    refused = store.statement_started(*key)
    store.statement_finished(refused, None, f"{REFUSED_BY_GUARD}: {why}")


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
def _offering(
    ctx: ToolContext, opens: Callable[[Side], Any] | None, label: str
) -> Iterator[list[str]]:
    """ctx.side_session opens a second session audited by this block meanwhile (none
    for a block that audits a second session: it does not open another, and is watched
    from its connect on, by _side_session). The tool's code reaches the target through
    these alone (guard/strays.py); yields the threads of its code it left running."""
    if opens is None:
        yield []
        return
    before = ctx.open_side
    ctx.open_side = opens
    try:
        with watching(ctx.connection, label) as left:
            yield left
    finally:
        ctx.open_side = before


def _ended(guard: Guard, attempt: int, left: list[str]) -> None:
    """The block's end: a refusal the code swallowed raised again, the session checked,
    and a tool whose code left a thread running failed, naming the code."""
    guard.raise_if_refused()
    guard.ended(ask=attempt > 0)  # a preparation (attempt 0) is asked at its run's end
    if left:
        raise StepFailed(left_running(f"{guard.label}: its tool's code", left))


@contextmanager
def _side_session(
    run: RunContext, ctx: ToolContext, index: int, attempt: int, step_guard: Guard, side: Side
) -> Iterator[Connection]:
    """A second session of the step on the target (tool/side.py): reads, and the
    writes `side` declares with its own names filled in; audited with the step."""
    engine = own = None
    if side.database is not None:
        engine = own = run.target.engine_on(side.database)
    conn = (engine or ctx.connection.engine).connect()
    try:
        # Watched from here: its set-up is aishell's, not a tool's own connection.
        with watched(conn):
            if side.isolation_level is not None:
                conn = conn.execution_options(isolation_level=side.isolation_level)
            writes = bool(side.writes or side.exact)
            # A pooled session planning left read-only writes again, or the reverse.
            read_only = side.read_only or not writes
            session_access(conn, read_only, run.target.read_only, side.limit_seconds)
            if conn.in_transaction():  # the tool begins its own (a snapshot's)
                conn.commit()
            names = {k: quote_identifier(conn.dialect, v) for k, v in side.names.items()}
            memory = run.guard_memory
            if not side.reads_checked:
                memory = GuardMemory(
                    hidden=HiddenWriters(), trusted=memory.trusted, hidden_given=True
                )
            guard = Guard(
                shapes=shapes_for(side.writes, side.exact, conn, names) if writes else None,
                writes=writes,
                risk=max(step_guard.risk, side.risk, key=lambda r: r.rank),
                label=f"{step_guard.label}, its session for {side.purpose}",
                memory=memory,
                runs_code=step_guard.runs_code,
            )
            with audited(run, ctx, index, attempt, guard, side=(conn, side)):
                yield conn
    finally:
        conn.close()
        if own is not None:
            own.dispose()


def _finished(store: StateStore, sent: int | Read, rows: int | None, error: str | None) -> None:
    if isinstance(sent, Read):
        store.statement_read(sent, rows, error)
    else:
        store.statement_finished(sent, rows, error)


def _error_text(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__
