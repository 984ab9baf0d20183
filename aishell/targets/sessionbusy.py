"""Whether the server still works on a session's statement, asked on a session of its own.

A statement whose answer never comes is either still running on the server (a long
VACUUM FULL) or lost on the way (a connection gone silent: a NAT or firewall that
dropped the flow, a pooler that hung), which no wait on its own socket tells apart. The
server's own list of sessions does: the session's process is running a statement, or it
is idle, or it is gone. A server that does not answer the question within the target's
timeouts is silent too. The same list tells a statement that only waits for a lock
another session holds (which has nothing to finish until that session lets go, so a stop
loses nothing by cancelling it) from one that works.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

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

# By dialect: true while the session runs a statement that does not wait for a lock
# (PostgreSQL: a heavyweight lock, wait_event_type 'Lock'; MySQL/MariaDB: a metadata or
# table lock, named in the thread's state, or an InnoDB row lock).
_WORKS = {
    "postgresql": (
        "SELECT state = 'active' AND wait_event_type IS DISTINCT FROM 'Lock' "
        "FROM pg_catalog.pg_stat_activity WHERE pid = :id"
    ),
    "mysql": (
        "SELECT p.COMMAND IN ('Query', 'Execute') "
        "AND COALESCE(p.STATE, '') NOT LIKE 'Waiting for %lock' "
        "AND NOT EXISTS (SELECT 1 FROM information_schema.INNODB_TRX t "
        "WHERE t.trx_mysql_thread_id = p.ID AND t.trx_state = 'LOCK WAIT') "
        "FROM information_schema.PROCESSLIST p WHERE p.ID = :id"
    ),
}
# MySQL/MariaDB's INNODB_TRX needs the PROCESS privilege; without it only the state's
# lock waits are seen (a row lock wait counts as work).
_WORKS_WITHOUT_PROCESS = (
    "SELECT COMMAND IN ('Query', 'Execute') AND COALESCE(STATE, '') NOT LIKE 'Waiting for %lock' "
    "FROM information_schema.PROCESSLIST WHERE ID = :id"
)
# ER_SPECIFIC_ACCESS_DENIED_ERROR: the PROCESS privilege is missing.
_NEEDS_PROCESS = 1227
# The engines whose user lacks it, so that each check is one query.
_WITHOUT_PROCESS: weakref.WeakSet[Engine] = weakref.WeakSet()


def busy_on_server(engine: Engine, dbapi: Any) -> bool:
    """True while the server runs a statement of dbapi's session (or nothing can be
    asked: SQLite, whose statements run in this process, unless one waits for its file
    and has not begun); False when the server runs none of it, has no such session, or
    does not answer within the target's timeouts, which bound the question's connect
    and read as any of the engine's."""
    return _asked(engine, dbapi, _RUNS.get(engine.dialect.name))


def working_on_server(engine: Engine, dbapi: Any) -> bool:
    """As busy_on_server, but False too while the statement waits for a lock another
    session holds."""
    if engine.dialect.name == "mysql" and engine not in _WITHOUT_PROCESS:
        try:
            return _asked(engine, dbapi, _WORKS["mysql"], refused=_NEEDS_PROCESS)
        except _Refused:
            _WITHOUT_PROCESS.add(engine)
    if engine.dialect.name == "mysql":
        return _asked(engine, dbapi, _WORKS_WITHOUT_PROCESS)
    return _asked(engine, dbapi, _WORKS.get(engine.dialect.name))


class _Refused(Exception):
    """The server refused the question with the error number asked about."""


def _asked(engine: Engine, dbapi: Any, asked: str | None, refused: int | None = None) -> bool:
    """The answer to `asked` about dbapi's session (busy_on_server); _Refused when the
    server refuses it with MySQL error number `refused`."""
    if engine.dialect.name == "sqlite":
        return not waits_for_file(dbapi)
    ident = session_id(dbapi)
    if asked is None or ident is None:
        return True
    try:
        with engine.connect() as other:
            row = other.execute(text(asked), {"id": ident}).first()
    except DBAPIError as exc:
        code = getattr(exc.orig, "args", (None,))[:1]
        if refused is not None and code == (refused,):
            raise _Refused from exc
        return False
    except (SQLAlchemyError, AishellError):
        return False
    return bool(row is not None and row[0])


def abandoned(conn: Connection, mark: object) -> bool:
    """Whether the statement marked `mark` (deadlines.in_flight) still waits on conn
    and the server does not run it, or does not answer the question."""
    return _still_waits_and(conn, mark, busy_on_server)


def stoppable(conn: Connection, mark: object) -> bool:
    """Whether a stop may cancel the statement marked `mark` now: it still waits on conn
    and the server does not run it, runs it only to wait for a lock another session
    holds (nothing to finish before that session lets go), or does not answer the
    question. A statement the server works on is let to end."""
    return _still_waits_and(conn, mark, working_on_server)


def _still_waits_and(conn: Connection, mark: object, on_server: Callable[..., bool]) -> bool:
    """Whether the statement marked `mark` still waits on conn and on_server (asked
    about its session) says False."""
    if conn.closed or conn.invalidated:  # either would open a new connection on access
        return False
    try:
        dbapi = conn.connection.driver_connection
    except (SQLAlchemyError, AttributeError):
        return False  # closed meanwhile: what ran on it ended
    busy = on_server(conn.engine, dbapi)
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
