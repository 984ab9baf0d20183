"""The sessions this process has open on each MySQL/MariaDB server, so that a message
naming who holds a lock never names aishell's own: MariaDB cannot say who holds a
metadata lock, so every other session on the database is a candidate (lockholders.py),
and a run has several of its own (a side session, the catalog's reads, a parallel
step's). Its connection ids only grow, so an id kept a moment past its close names no
other session. PostgreSQL says who holds each lock, so no lock holder is left out
there; a restore's list of the other sessions on its database leaves out this process's
backends (their pids are this process's while it holds them open)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

_LOCK = threading.Lock()
# host:port -> the connection ids this process holds there.
_OPEN: dict[str, set[int]] = {}
_KEY = "aishell_own_session"


def _server(engine: Engine) -> str:
    return f"{engine.url.host}:{engine.url.port}"


def keep_track(engine: Engine) -> None:
    """Each connection the engine opens is this process's own until it is closed."""
    server = _server(engine)

    @event.listens_for(engine, "connect")
    def _opened(dbapi_conn: Any, record: Any) -> None:
        session = session_id(dbapi_conn)
        if session is None:
            return
        record.info[_KEY] = session
        with _LOCK:
            _OPEN.setdefault(server, set()).add(session)

    @event.listens_for(engine, "close")
    def _closed(_dbapi_conn: Any, record: Any) -> None:
        session = record.info.pop(_KEY, None)
        with _LOCK:
            _OPEN.get(server, set()).discard(session)


def session_id(dbapi: Any) -> int | None:
    """The server's id of a DBAPI connection's session, read from the driver without a
    round trip: psycopg's backend pid, PyMySQL's thread id; None for any other."""
    pid = getattr(getattr(dbapi, "info", None), "backend_pid", None)
    if isinstance(pid, int):
        return pid
    thread_id = getattr(dbapi, "thread_id", None)
    if callable(thread_id):
        try:
            return int(thread_id())
        except (TypeError, ValueError, AttributeError):
            return None
    return None


def own_sessions(conn: Connection) -> list[int]:
    """The connection ids this process holds on conn's server (0 when none is known)."""
    with _LOCK:
        return sorted(_OPEN.get(_server(conn.engine), ())) or [0]
