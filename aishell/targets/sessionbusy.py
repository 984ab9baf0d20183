"""Whether the server still works on a session's statement, asked on a session of its own.

A statement whose answer never comes is either still running on the server (a long
VACUUM FULL) or lost on the way (a connection gone silent: a NAT or firewall that
dropped the flow, a pooler that hung), which no wait on its own socket tells apart. The
server's own list of sessions does: the session's process is running a statement, or it
is idle, or it is gone. A server that does not answer the question within the target's
timeouts is silent too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aishell.errors import AishellError
from aishell.sqltext import text
from aishell.targets.deadlines import cancel_then_sever, in_flight
from aishell.targets.limits import LIMITS_KEY, Limits
from aishell.targets.ownsessions import session_id
from aishell.targets.sqlitewait import waits_for_file
from aishell.targets.watchdog import Watchdog

# How long a statement waits before the server is asked about it: one just sent may not
# have reached the server yet, which would then show its session idle.
LOOK_SECONDS = 1.0
# Every purge's deadline, kept by one thread: a thread per batch would cost more than
# a short batch.
_PAST = Watchdog()

# By dialect: true while the session (its server process or thread id) runs a statement.
# A session sees its own role's other sessions in both lists without any privilege.
_RUNS = {
    "postgresql": "SELECT state = 'active' FROM pg_catalog.pg_stat_activity WHERE pid = :id",
    "mysql": (
        "SELECT COMMAND IN ('Query', 'Execute') FROM information_schema.PROCESSLIST WHERE ID = :id"
    ),
}


def busy_on_server(engine: Engine, dbapi: Any) -> bool:
    """True while the server runs a statement of dbapi's session (or nothing can be
    asked: SQLite, whose statements run in this process, unless one waits for its file
    and has not begun); False when the server runs none of it, has no such session, or
    does not answer within the target's timeouts, which bound the question's connect
    and read as any of the engine's."""
    if engine.dialect.name == "sqlite":
        return not waits_for_file(dbapi)
    asked = _RUNS.get(engine.dialect.name)
    ident = session_id(dbapi)
    if asked is None or ident is None:
        return True
    try:
        with engine.connect() as other:
            row = other.execute(text(asked), {"id": ident}).first()
    except (SQLAlchemyError, AishellError):
        return False
    return bool(row is not None and row[0])


def abandoned(conn: Connection, mark: object) -> bool:
    """Whether the statement marked `mark` (deadlines.in_flight) still waits on conn
    and the server does not run it, or does not answer the question."""
    if conn.closed or conn.invalidated:  # either would open a new connection on access
        return False
    try:
        dbapi = conn.connection.driver_connection
    except (SQLAlchemyError, AttributeError):
        return False  # closed meanwhile: what ran on it ended
    busy = busy_on_server(conn.engine, dbapi)
    return not busy and in_flight(conn) is mark


def read_timeout_of(conn: Connection) -> float:
    """The target's read_timeout_seconds on conn (LOOK_SECONDS where it has none): how
    long a statement the server runs goes on before it is asked about again."""
    if conn.closed or conn.invalidated:
        return LOOK_SECONDS
    try:
        limits: Limits | None = conn.connection.info.get(LIMITS_KEY)
    except (SQLAlchemyError, AttributeError):
        limits = None
    return float(limits.read_timeout) if limits is not None else LOOK_SECONDS


@contextmanager
def cut_if_abandoned_past(conn: Connection, at: float | None) -> Iterator[None]:
    """While the block runs, from `at` (a time.monotonic(); None: never) on: a statement
    of conn that still waits and that the server does not run (or a server that does not
    answer the question) is cancelled and its socket closed; one the server runs is let
    to end, asked about again each read_timeout_seconds. What a soft deadline (a purge's
    maintenance window or run time, checked between batches) needs on a connection gone
    silent, where the step's own limit may be a day away."""
    if at is None:
        yield
        return
    finished = threading.Event()
    ending = threading.Lock()
    cutters: list[threading.Thread] = []

    def ring() -> None:
        # On the watchdog's thread, which must not wait on a server.
        with ending:
            if not finished.is_set():
                cutter = threading.Thread(
                    target=_cut_when_abandoned,
                    args=(conn, finished, ending),
                    name="aishell-past-deadline",
                    daemon=True,
                )
                cutters.append(cutter)
                cutter.start()

    alarm = _PAST.arm(max(at - time.monotonic(), 0.0), ring)
    try:
        yield
    finally:
        with ending:
            finished.set()
        _PAST.disarm(alarm)
        # A cancel on its way must land before the connection's next statement.
        for cutter in cutters:
            cutter.join()


def _cut_when_abandoned(conn: Connection, finished: threading.Event, ending: Any) -> None:
    seen: object | None = None
    while not finished.wait(LOOK_SECONDS):
        mark = in_flight(conn)
        if mark is None or mark is not seen:
            seen = mark  # none waits, or one only just sent: looked at next time
            continue
        if abandoned(conn, mark):
            cancel_then_sever(
                conn, finished.wait, time.monotonic(), Limits.unanswered_cancel, ending
            )
            return
        finished.wait(read_timeout_of(conn))
