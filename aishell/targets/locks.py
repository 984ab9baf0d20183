"""Run locks: the server's own lock on a database, held while a run uses it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from aishell.sqltext import text
from aishell.targets.identity import database_identity


@dataclass
class RunLock:
    """A held server lock; release() gives it back (the server also does when we die)."""

    release: Callable[[], None]
    # Whether the lock is still ours, by a round trip on its session: a session the
    # server ended (a terminated backend, a KILL, an idle timeout, a restart) took the
    # lock with it, and it is never taken back (another run may have used the database
    # meanwhile). Once False, always False.
    holds: Callable[[], bool] = lambda: True
    # Waits up to the given seconds for a sign that the lock's session ended: its idle
    # socket turned readable (the server's goodbye, or EOF), seen without a round trip.
    # True: look with holds(). None: nothing to watch (SQLite's file lock, which no
    # other process can end).
    stirred: Callable[[float], bool] | None = None
    # The lease row's key in the state store: the database's identity.
    lease: str = ""


def try_lock(
    key: str, dialect: str, connect: Callable[[], Connection], sqlite_path: Path | None
) -> RunLock | None:
    """Take the server's own lock for key (the database's identity), or None if held.

    PostgreSQL: a session advisory lock; MySQL/MariaDB: GET_LOCK; SQLite: a lock
    file beside the database's real path. Held on a connection of its own until
    released; the server (or the kernel) lets go when this process dies.
    """
    digest = hashlib.sha1(key.encode()).hexdigest()
    if dialect == "sqlite":
        assert sqlite_path is not None
        return _file_lock(sqlite_path.with_name(f"{sqlite_path.name}.aishell-{digest[:12]}.lock"))
    if dialect == "postgresql":
        name = key
        take = "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended(:k, 0))"
        unlock = "SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended(:k, 0))"
    else:
        name = mysql_lock_name(key)
        take = "SELECT GET_LOCK(:k, 0)"
        unlock = "SELECT RELEASE_LOCK(:k)"
    return _session_lock(connect, name, take, unlock)


def run_lock_key(identity: str) -> str:
    """The run lock's key for the database of this identity (targets.database_identity)."""
    return f"aishell:{identity}"


def mysql_lock_name(key: str) -> str:
    """The GET_LOCK name of the run lock of the database `key` names (its identity)."""
    # GET_LOCK names are server-wide and at most 64 characters; the key names the
    # schema, so two databases on one server never block each other.
    return f"aishell:{hashlib.sha1(key.encode()).hexdigest()}"


def run_lock_name(conn: Connection) -> str:
    """MySQL/MariaDB: the GET_LOCK name of the run lock of conn's database, so that the
    session holding it is known as aishell's own; elsewhere ''."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return ""
    return mysql_lock_name(run_lock_key(database_identity(conn)))


def _file_lock(path: Path) -> RunLock | None:
    """A lock file, removed when the lock is let go. Whoever takes the lock checks that
    the file it locked is still the one at `path`: a holder removes it as it lets go,
    and a lock on the removed file would be no lock at all."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()  # removed by the holder as it let go: lock the new file

    def release() -> None:
        # Removed while still locked, so nobody can lock it between the two; once only,
        # since the file at `path` may be another holder's afterwards.
        if handle.closed:
            return
        with suppress(FileNotFoundError):
            path.unlink()
        handle.close()

    return RunLock(release=release)


def _session_lock(
    connect: Callable[[], Connection], name: str, take: str, unlock: str
) -> RunLock | None:
    """A server lock held by a session of its own, which is watched: once that session
    is gone, so is the lock."""
    conn = connect()
    try:
        taken = conn.execute(text(take), {"k": name}).scalar() in (True, 1)
    except BaseException:
        conn.close()
        raise
    if not taken:
        conn.close()
        return None
    # The watcher's thread looks while the run's thread may let go: one at a time, so
    # that a socket is never polled after it was closed (its number may be reused).
    using = threading.Lock()
    state = {"lost": False, "released": False}

    def holds() -> bool:
        with using:
            if state["lost"] or state["released"]:
                return not state["lost"]
            try:
                conn.execute(text("SELECT 1")).scalar()
                return True
            except SQLAlchemyError:  # the session is gone, and the lock with it
                state["lost"] = True
                with suppress(SQLAlchemyError):
                    conn.close()
                return False

    def stirred(seconds: float) -> bool:
        with using:
            if state["lost"] or state["released"]:
                return state["lost"]
            fd = _socket_of(conn)
            if fd is None:
                return True
            poll = select.poll()
            poll.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
            # The session is idle: nothing arrives unless the server ends it.
            return bool(poll.poll(int(seconds * 1000)))

    def release() -> None:
        with using:
            if state["released"]:
                return
            state["released"] = True
            if not state["lost"]:
                with suppress(SQLAlchemyError):
                    conn.execute(text(unlock), {"k": name})
            with suppress(SQLAlchemyError):
                conn.close()

    return RunLock(release=release, holds=holds, stirred=stirred)


def _socket_of(conn: Connection) -> int | None:
    """The socket of conn's DBAPI connection (psycopg or PyMySQL), None if closed."""
    if conn.closed or conn.invalidated:  # either would open a new connection on access
        return None
    try:
        dbapi = conn.connection.driver_connection
        pgconn = getattr(dbapi, "pgconn", None)
        if pgconn is not None:
            fd = int(pgconn.socket)
        else:
            sock = getattr(dbapi, "_sock", None)
            fd = sock.fileno() if sock is not None else -1
    except Exception:  # closed: psycopg raises for a closed connection's socket
        return None
    return fd if fd >= 0 else None
