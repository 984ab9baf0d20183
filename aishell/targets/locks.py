"""Run locks: the server's own lock on a database, held while a run uses it."""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from aishell.dialects import family
from aishell.errors import TargetError, TargetLocked, TargetUnreachable
from aishell.files import kind_of
from aishell.sqltext import text
from aishell.targets.identity import database_identity
from aishell.targets.limits import OUTSIDE_STEPS_OPTION
from aishell.units import took


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
    # socket turned readable (the server's goodbye, or EOF), seen without a round trip;
    # or until the file descriptor given (if any) turns readable, which ends the wait at
    # once with False. True: look with holds(). None: nothing to watch (SQLite's file
    # lock, which no other process can end).
    stirred: Callable[[float, int | None], bool] | None = None
    # The lease row's key in the state store: the database's identity.
    lease: str = ""
    # Once holds() said False because the server stopped answering: for how long and
    # what the last wait said (its setting named); None for any other loss.
    silence: Callable[[], str | None] = lambda: None
    # False for a liveness watch (heartbeat()): no lock is held, holds() is False only
    # once the server stopped answering.
    held: bool = True


def try_lock(
    key: str,
    dialect: str,
    connect: Callable[[], Connection],
    sqlite_path: Path | None,
    patience: float = math.inf,
) -> RunLock | None:
    """Take the server's own lock for key (the database's identity), or None if held.

    PostgreSQL: a session advisory lock; MySQL/MariaDB: GET_LOCK; SQLite: a lock
    file beside the database's real path. Held on a connection of its own until
    released; the server (or the kernel) lets go when this process dies. patience: how
    long the lock's session may be gone with the server not answering before the lock
    counts as lost (the target's read_timeout_seconds).
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
    return _session_lock(_Lease(connect, name, take, unlock, patience))


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
    if family(conn.dialect.name) != "mysql":
        return ""
    return mysql_lock_name(run_lock_key(database_identity(conn)))


def _file_lock(path: Path) -> RunLock | None:
    """A lock file, removed when the lock is let go. Whoever takes the lock checks that
    the file it locked is still the one at `path`: a holder removes it as it lets go,
    and a lock on the removed file would be no lock at all."""
    while True:
        fd = _open_lock_file(path)
        handle = os.fdopen(fd, "a+")  # held until release
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


def _open_lock_file(path: Path) -> int:
    """The lock file, its owner's alone whatever the umask. Never through a link put in
    its place, nor anything but a regular file: the folder may be others' to write in,
    and a link would have aishell make (or lock) whatever file it names."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise TargetError(f"Run lock file {path}: {_lock_file_problem(path, exc)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise TargetError(f"Run lock file {path} is {kind_of(mode)}, not a file; remove it")
    return fd


def _lock_file_problem(path: Path, exc: OSError) -> str:
    try:
        what = kind_of(os.lstat(path).st_mode)
    except OSError:
        return f"cannot be made: {exc.strerror}"
    if what == "a symbolic link":
        return "is a symbolic link, which aishell does not follow there; remove it"
    return f"is {what} and cannot be opened ({exc.strerror}); remove it"


def _session_lock(lease: _Lease) -> RunLock | None:
    """A server lock held by a session of its own, which is watched: once that session
    is gone, so is the lock (unless the server itself restarted: see _Lease.holds)."""
    conn = lease.take()
    if conn is None:
        return None
    lease.conn, lease.started = conn, _server_started(conn)
    return RunLock(
        release=lease.release, holds=lease.holds, stirred=lease.stirred, silence=lease.said
    )


class _Lease:
    """The session holding a run lock, looked at from the watcher's thread and let go
    from the run's: one at a time, so that a socket is never polled after it was
    closed (its number may be reused)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        name: str,
        take_sql: str,
        unlock: str,
        patience: float,
    ) -> None:
        self.connect, self.name, self.take_sql, self.unlock = connect, name, take_sql, unlock
        self.patience = patience
        # Since when (time.monotonic()) the lock's session is gone and the lock not
        # taken again: the server did not answer meanwhile.
        self.gone_since: float | None = None
        self.conn: Connection | None = None
        self.started = 0.0
        self.lost = self.released = False
        self.using = threading.Lock()
        # Why the lock counts as lost, when it is the server's silence (said()).
        self.silent: str | None = None

    def said(self) -> str | None:
        return self.silent

    def take(self) -> Connection | None:
        # Its round trips wait read_timeout_seconds at most, whatever step runs: the
        # watcher must see a silent server while a step's statement waits on it.
        conn = self.connect().execution_options(**{OUTSIDE_STEPS_OPTION: True})
        try:
            if conn.execute(text(self.take_sql), {"k": self.name}).scalar() in (True, 1):
                return conn
        except BaseException:
            conn.close()
            raise
        conn.close()
        return None

    def holds(self) -> bool:
        """Whether the lock is still ours. A session the server ended while it ran on
        (a terminated backend, a KILL, an idle timeout) took the lock with it for good:
        another run may have used the database since. A server that went down took
        every session with it, the run's own too: the lock is taken again once the
        server answers, if nobody took it first."""
        with self.using:
            if self.lost or self.released:
                return not self.lost
            if self.conn is not None:
                # A check the server leaves unanswered ends read_timeout_seconds later:
                # the silence counts from its start, not from its end.
                asked = time.monotonic()
                try:
                    self.conn.execute(text("SELECT 1")).scalar()
                    return True
                except SQLAlchemyError:
                    with suppress(SQLAlchemyError):
                        self.conn.close()
                    self.conn = None
                    self.gone_since = asked
            try:
                taken = self.take_after_restart()
            except (TargetUnreachable, TargetLocked, SQLAlchemyError) as exc:
                # The server is down (or, SQLite, its file held): nothing of the run
                # reaches it; look again. A server silent past the patience may be a
                # network that froze with the run's statement still running on it,
                # without the lock: lost.
                gone = self.gone_since if self.gone_since is not None else time.monotonic()
                self.lost = time.monotonic() - gone >= self.patience
                if self.lost:
                    self.silent = _silent_for(time.monotonic() - gone, exc)
                return not self.lost
            if taken is None:
                self.lost = True
                return False
            self.conn, self.started = taken
            self.gone_since = None
            return True

    def take_after_restart(self) -> tuple[Connection, float] | None:
        """The lock taken again on a new session, with the server's start time, if the
        server restarted since it was taken (a restart ended every session, so nobody
        held it); None if it did not, and the session that held it is simply gone."""
        conn = self.connect().execution_options(**{OUTSIDE_STEPS_OPTION: True})
        try:
            # MariaDB's start time is derived from its uptime, to within a second.
            slack = 0.0 if conn.dialect.name == "postgresql" else 1.5
            restarted = _server_started(conn) > self.started + slack
        finally:
            conn.close()
        if not restarted:
            return None
        fresh = self.take()
        if fresh is None:
            return None
        try:
            # Asked on the session that holds the lock: the server it reaches now.
            return fresh, _server_started(fresh)
        except BaseException:
            # Silent again before it answered: the lock goes with the session.
            fresh.close()
            raise

    def stirred(self, seconds: float, wake: int | None = None) -> bool:
        with self.using:
            if self.lost or self.released:
                return self.lost
            return _stirred(self.conn, seconds, wake)

    def release(self) -> None:
        with self.using:
            if self.released:
                return
            self.released = True
            if self.conn is None:
                return
            if not self.lost:
                with suppress(SQLAlchemyError):
                    self.conn.execute(text(self.unlock), {"k": self.name})
            with suppress(SQLAlchemyError):
                self.conn.close()


def _server_started(conn: Connection) -> float:
    """When the server conn reaches last started, as a Unix time."""
    if conn.dialect.name == "postgresql":
        query = "SELECT EXTRACT(EPOCH FROM pg_catalog.pg_postmaster_start_time())"
    else:
        query = (
            "SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
            "WHERE VARIABLE_NAME = 'UPTIME'"
        )
    return float(conn.execute(text(query)).scalar() or 0.0)


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


def _stirred(conn: Connection | None, seconds: float, wake: int | None) -> bool:
    """Waits up to seconds for conn's idle socket to turn readable (see RunLock.stirred)."""
    fd = _socket_of(conn) if conn is not None else None
    if fd is None:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    if wake is not None:
        # The run is over: its end need not wait out the poll (nor release it).
        poll.register(wake, select.POLLIN)
    # The session is idle: nothing arrives unless the server ends it.
    return any(ready == fd for ready, _event in poll.poll(int(seconds * 1000)))


def _silent_for(seconds: float, last: BaseException) -> str:
    """The server's silence as a loss says it: for how long, and what the last wait
    said (which names its setting)."""
    said = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    return f"the server stopped answering for {took(seconds, 0)} (last: {said})"


def heartbeat(connect: Callable[[], Connection], patience: float) -> RunLock:
    """A liveness watch for a run that holds no lock (a dry run): RunLock's holds() by a
    round trip on a session of its own, False only once the server has answered
    nothing, neither that round trip nor a new connection, for `patience` seconds (the
    target's read_timeout_seconds). A session the server ended is opened again."""
    beat = _Heartbeat(connect, patience)
    return RunLock(
        release=beat.release, holds=beat.holds, stirred=beat.stirred, silence=beat.said, held=False
    )


class _Heartbeat:
    """The session of a liveness watch; used one call at a time, as _Lease's is."""

    def __init__(self, connect: Callable[[], Connection], patience: float) -> None:
        self.connect, self.patience = connect, patience
        self.conn: Connection | None = None
        # Since when (time.monotonic()) nothing the server was asked was answered.
        self.silent_since: float | None = None
        self.silent: str | None = None
        self.released = False
        self.using = threading.Lock()

    def said(self) -> str | None:
        return self.silent

    def holds(self) -> bool:
        with self.using:
            if self.silent is not None or self.released:
                return self.silent is None
            asked = time.monotonic()
            try:
                if self.conn is None:
                    self.conn = self.connect().execution_options(**{OUTSIDE_STEPS_OPTION: True})
                self.conn.execute(text("SELECT 1")).scalar()
            except (TargetUnreachable, SQLAlchemyError) as exc:
                self._close()
                if not isinstance(exc, TargetUnreachable):
                    self.silent_since = None  # an answer (an error, a session ended)
                    return True
                since = self.silent_since = self.silent_since or asked
                if time.monotonic() - since >= self.patience:
                    self.silent = _silent_for(time.monotonic() - since, exc)
                return self.silent is None
            self.silent_since = None
            return True

    def stirred(self, seconds: float, wake: int | None = None) -> bool:
        with self.using:
            if self.silent is not None or self.released:
                return self.silent is not None
            return _stirred(self.conn, seconds, wake)

    def release(self) -> None:
        with self.using:
            self.released = True
            self._close()

    def _close(self) -> None:
        if self.conn is not None:
            with suppress(SQLAlchemyError):
                self.conn.close()
            self.conn = None
