"""A step's deadline, kept by the server and the client, and cancelling a running statement."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection, Engine

from aishell.errors import StepTimeout
from aishell.targets.limits import (
    IN_FLIGHT_KEY,
    LIMITS_KEY,
    STATEMENT_LIMIT_KEY,
    Limits,
    TargetSilent,
    limits_of,
    set_statement_limit,
    sever,
    statement_limit,
)
from aishell.targets.sqlitewait import waiting_mark
from aishell.targets.watchdog import Watchdog
from aishell.units import took

# How often a stop sends its cancel again while the statement it cancels still runs.
RECANCEL_SECONDS = 1.0
# Every step's deadline, kept by one thread: a thread started per step cost more than
# the step's checkpoints.
_DEADLINES = Watchdog()


@contextmanager
def step_deadline(
    conn: Connection, seconds: float, label: str, said: str | None = None
) -> Iterator[None]:
    """Bound a step by `seconds` (`said`: the error when that is not max_execution_time):
    on the server where it can, and from the client too.

    At the limit the running statement is cancelled; a server that answers neither the
    statement nor the cancel is cut off read_timeout_seconds later (see engines._server_engine).
    """
    timed_out = threading.Event()
    finished = threading.Event()
    ending = threading.Lock()
    limits: Limits | None = conn.info.get(LIMITS_KEY)
    expiring: list[threading.Thread] = []

    def ring() -> None:
        # On the watchdog's thread, which must not wait on a server: the cancel gets a
        # thread of its own, which the step's end waits for.
        with ending:
            if not finished.is_set():
                expiring.append(
                    threading.Thread(target=expire, name="aishell-step-deadline", daemon=True)
                )
                expiring[0].start()

    def expire() -> None:
        timed_out.set()
        # Each statement's own watch severs too; this one also covers what the step
        # sends past the cursor events (the guard's catalog lookups).
        cancel_then_sever(
            conn,
            finished.wait,
            ends,
            lambda lim: lim.silence(seconds + lim.read_timeout),
            ending,
        )

    _server_timeout(conn, seconds)
    ends = time.monotonic() + seconds
    if limits is not None:
        limits.step_ends = ends
    alarm = _DEADLINES.arm(seconds, ring)
    try:
        yield
    except Exception as exc:
        if timed_out.is_set() or _is_server_timeout(exc):
            why = f"; {exc}" if isinstance(exc, TargetSilent) else " and was interrupted"
            raise StepTimeout(f"{said or _over_limit(label, seconds)}{why}") from exc
        raise
    finally:
        if limits is not None:
            limits.step_ends = None
        with ending:
            finished.set()
        _DEADLINES.disarm(alarm)
        # A cancel on its way must land before the next statement, or it could cancel that.
        for thread in expiring:
            thread.join()
    if timed_out.is_set():
        raise StepTimeout(said or _over_limit(label, seconds))


def _over_limit(label: str, seconds: float) -> str:
    """What a step past its max_execution_time is stopped with."""
    return f"{label} exceeded its time limit of {took(seconds, None)} (max_execution_time)"


def _server_timeout(conn: Connection, seconds: float) -> None:
    """Set the server's own statement limit for this step (only when it changes: a
    round trip saved per step); the next step sets its own."""
    dialect = conn.dialect
    statement = statement_limit(dialect.name, getattr(dialect, "is_mariadb", False), seconds)
    if statement is not None and conn.info.get(STATEMENT_LIMIT_KEY) != statement:
        conn.info[STATEMENT_LIMIT_KEY] = set_statement_limit(conn, seconds)


def _is_server_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "57014" and "statement timeout" in str(orig):
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in (1969, 3024)


def cancel_then_sever(
    conn: Connection,
    ended: Callable[[float], bool],
    counts_from: float,
    said: Callable[[Limits], str],
    ending: AbstractContextManager[Any] | None = None,
) -> None:
    """Cancel what runs on conn; if it has not ended read_timeout_seconds after
    counts_from (a time.monotonic()), close the connection's socket under it: for a
    server that answers neither the statement nor the cancel.

    ended(seconds) waits up to seconds for what runs to end and says whether it did;
    said(limits) is the error the statement then ends with; ending, held while the
    socket is closed, keeps what runs from ending meanwhile. The cancel runs on a thread
    of its own, so a cancel that waits on the silent server (MariaDB's goes over a new
    connection) never delays the close; it is waited for before this returns, so that
    it lands before the connection's next statement. Each of its waits is bounded (the
    target's connect and read timeouts).
    """
    found = _driver(conn)
    cancellers = [_cancelling(conn)]
    try:
        if found is None:
            return
        dbapi, limits = found
        until = counts_from + limits.read_timeout if limits is not None else math.inf
        while not ended(max(min(RECANCEL_SECONDS, until - time.monotonic()), 0)):
            if time.monotonic() >= until:
                assert limits is not None
                with ending or nullcontext():
                    if not ended(0):
                        limits.fired[id(dbapi)] = said(limits)
                        sever(dbapi)
                return
            # A cancel that reached the server before its statement did (sent between
            # the stop's last look and the statement) cancelled nothing: again, while
            # a statement still waits.
            if not cancellers[-1].is_alive() and _statement_waits(conn, dbapi):
                cancellers.append(_cancelling(conn))
    finally:
        for canceller in cancellers:
            canceller.join()


def _cancelling(conn: Connection) -> threading.Thread:
    canceller = threading.Thread(target=interrupt, args=(conn,), name="aishell-cancel", daemon=True)
    canceller.start()
    return canceller


def _statement_waits(conn: Connection, dbapi: Any) -> bool:
    """Whether a statement of conn waits for its answer now: a cancel would end it."""
    if isinstance(dbapi, sqlite3.Connection):
        # In-process: an interrupt while no statement runs is a no-op.
        return True
    return in_flight(conn) is not None


def stop_statement(conn: Connection, ended: Callable[[float], bool]) -> None:
    """A run stops (a signal, its time limit, the run lock lost): cancel what runs on
    conn, and close its socket if that is not over within read_timeout_seconds. No
    statement of the target then waits longer than read_timeout_seconds for its answer,
    whatever is left of the step's limit (a purge's is a day), nor a connect longer
    than connecting.STOPPED_CONNECT_SECONDS."""
    found = _driver(conn)
    # Found by the engine too: a connection lost meanwhile (a purge reconnecting) has no
    # pool entry, and its connect, not a statement, is what waits on the server.
    limits = limits_of(conn.engine) or (found[1] if found is not None else None)
    if limits is not None:
        limits.stop()
        hold_to_read_timeout(limits, besides=found[0] if found is not None else None)
    cancel_then_sever(conn, ended, time.monotonic(), Limits.unanswered_cancel)


def cut_if_unanswered(conn: Connection, ended: Callable[[float], bool]) -> None:
    """What runs on conn is given the target's read_timeout_seconds more to end, then its
    connection's socket is closed under it: a wait that a limit reached (planning's,
    see planninglimit.planning_limit) ends within that bound, also on a server that stopped
    answering, and an answering server's statement is left to end (no cancel)."""
    found = _driver(conn)
    if found is None:
        return
    dbapi, limits = found
    if limits is not None and not ended(limits.read_timeout):
        limits.fired[id(dbapi)] = limits.silence(limits.read_timeout)
        sever(dbapi)


def in_flight(conn: Connection) -> object | None:
    """A mark of the statement waiting for its answer on conn now; None: none is."""
    if conn.closed or conn.invalidated:  # see _driver
        return None
    try:
        fairy = conn.connection
        # A SQLite statement is marked while it waits for its file (sqlitewait.py).
        return fairy.info.get(IN_FLIGHT_KEY) or waiting_mark(fairy.driver_connection)
    except Exception:  # closed meanwhile, by the thread running the step
        return None


def _driver(conn: Connection) -> tuple[Any, Limits | None] | None:
    """conn's DBAPI connection and its target's Limits; None once conn is closed."""
    # A closed or invalidated Connection would open a new DBAPI connection on access.
    if conn.closed or conn.invalidated:
        return None
    try:
        fairy = conn.connection
        return fairy.driver_connection, fairy.info.get(LIMITS_KEY)
    except Exception:  # closed meanwhile, by the thread running the step
        return None


def interrupt(conn: Connection) -> None:
    """Cancel the statement running on conn, from another thread or a signal handler.

    Never waits longer than the target's read_timeout_seconds: a cancel goes over a new
    connection to the same server, which may be the one that stopped answering.
    """
    found = _driver(conn)
    if found is None:
        return
    dbapi, limits = found
    if isinstance(dbapi, sqlite3.Connection):
        dbapi.interrupt()
        return
    cancel_on_server(dbapi, limits.read_timeout if limits is not None else 30.0, conn.engine)


def cancel_on_server(dbapi: Any, wait: float, engine: Engine | None = None) -> None:
    """Ask the server to cancel what runs on a DBAPI connection, waiting `wait` seconds
    at most: psycopg's cancel request; MySQL's KILL QUERY over a new connection of
    `engine` (none given: not asked)."""
    cancel_safe = getattr(dbapi, "cancel_safe", None)
    with suppress(Exception):  # psycopg.CancellationTimeout, a refused connection ...
        if callable(cancel_safe):  # psycopg 3.2+
            cancel_safe(timeout=wait)
        elif dbapi is not None and callable(getattr(dbapi, "cancel", None)):
            dbapi.cancel()
        elif engine is not None and callable(getattr(dbapi, "thread_id", None)):
            _kill_query(engine, int(dbapi.thread_id()))


def _kill_query(engine: Engine, thread_id: int) -> None:
    """MySQL/MariaDB's cancel: KILL QUERY from another session of the same account
    (which needs no privilege for its own sessions). The session itself lives on."""
    other = engine.raw_connection()
    try:
        cursor = other.cursor()
        cursor.execute(f"KILL QUERY {thread_id}")  # an int: nothing of a user's text
        cursor.close()
    finally:
        other.close()


def hold_to_read_timeout(limits: Limits, besides: Any = None) -> None:
    """A run stops: every statement of the target still waiting for its answer (a
    backup's second session's, not only the step's own connection's, `besides`, which
    the stop cancels itself) is cancelled where the driver can, and its socket closed if
    it still waits read_timeout_seconds from now, whatever its step's limit left it."""
    for dbapi, info, mark in list(limits.waiting.values()):
        if dbapi is besides:
            continue
        # A cancel request on a thread of its own (psycopg's; a MySQL statement is cut
        # by its socket only, which a cancel over a new connection would not beat).
        threading.Thread(
            target=cancel_on_server,
            args=(dbapi, limits.read_timeout),
            name="aishell-cancel",
            daemon=True,
        ).start()
        expire = partial(_expire_waiting, info, mark, dbapi, limits)
        limits.watchdog.arm(limits.read_timeout, expire)


def _expire_waiting(info: dict[str, Any], mark: object, dbapi: Any, limits: Limits) -> None:
    """A stopped run's statement still waiting read_timeout_seconds after the stop."""
    if info.get(IN_FLIGHT_KEY) is not mark:
        return
    limits.fired[id(dbapi)] = limits.unanswered_cancel()
    sever(dbapi)
