"""A SQLite target's wait for its file, in slices that a stop or a limit ends.

SQLite's busy handler sleeps inside the library for up to the target's busy_timeout_ms
while another connection holds the file, and does not look at sqlite3_interrupt() while
it sleeps: a step behind another process's writer went on waiting past `aishell stop`,
its max_execution_time, the maintenance window's end and Ctrl-C, until the writer let go.
Python's sqlite3 takes no busy handler of ours, so the library's own waits one slice
(SLICE_SECONDS), and the connection sends the same statement (or COMMIT) again, on the
same cursor, after each slice SQLite gave up on, until busy_timeout_ms has passed. After
each slice an interrupt asked meanwhile (deadlines.interrupt: a stop, a limit, a signal)
ends the statement as SQLite ends an interrupted one. What is sent again is exactly what
the guard checked: a statement SQLite gave up on did nothing (it is undone whole), and
a COMMIT that could not get the file keeps its transaction.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

# How long the library itself waits for the file before a stop is looked for.
SLICE_SECONDS = 0.25
# What sqlite3's backup() sleeps between two tries of a held file (its default).
BACKUP_SLEEP_SECONDS = 0.25
# SQLite's primary result code for a file another connection holds.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_INTERRUPT = 9

_T = TypeVar("_T")
# What sqlite3's backup() reports after each step: its status, pages left, pages in all.
BackupProgress = Callable[[int, int, int], object]


class FileWaitingConnection(sqlite3.Connection):
    """A target's SQLite connection whose waits for its file end at an interrupt.

    Made by sqlite3.connect(..., factory=FileWaitingConnection, timeout=SLICE_SECONDS);
    `wait_up_to` then sets the whole wait, the target's busy_timeout_ms in seconds.
    """

    busy_seconds: float = SLICE_SECONDS
    slice: float = SLICE_SECONDS
    # When aishell last asked to interrupt what runs (time.monotonic()).
    interrupted_at: float = -math.inf
    # While a statement waits for the file: its mark (deadlines.in_flight) and when its
    # current try began.
    waiting: tuple[object, float] | None = None

    def wait_up_to(self, seconds: float) -> None:
        self.busy_seconds = seconds
        self.slice = min(SLICE_SECONDS, seconds)

    def interrupt(self) -> None:
        self.interrupted_at = time.monotonic()
        super().interrupt()

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or FileWaitingCursor)

    # Connection.execute makes its cursor with cursor() but runs it in C, past the
    # cursor's own execute: so each is the cursor's here.
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def commit(self) -> None:
        self.waited(super().commit)

    def waited(self, attempt: Callable[[], _T], many: bool = False) -> _T:
        """attempt() again after each slice SQLite waited for the file in vain, until
        busy_timeout_ms; an interrupt asked meanwhile ends it. `many`: an executemany,
        tried again only while none of its rows was kept (outside a transaction each
        row commits on its own)."""
        started = time.monotonic()
        mark = object()
        try:
            while True:
                tried, changes = time.monotonic(), self.total_changes
                try:
                    return attempt()
                except sqlite3.OperationalError as exc:
                    now = time.monotonic()
                    # A BUSY SQLite gives at once (well within the slice its handler
                    # sleeps through) is one it did not wait out (a deadlock, which no
                    # wait ends): said at once, as it was.
                    if (
                        getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY
                        or now - tried < self.slice / 2
                        or now - started >= self.busy_seconds
                        or (many and self.total_changes != changes)
                    ):
                        raise
                    if self.interrupted_at >= started:
                        raise _interrupted() from exc
                    self.waiting = (mark, time.monotonic())
        finally:
            self.waiting = None


def _interrupted() -> sqlite3.OperationalError:
    """The error SQLite ends an interrupted statement with."""
    return _sqlite_error("interrupted", _SQLITE_INTERRUPT, "SQLITE_INTERRUPT")


def _sqlite_error(message: str, code: int, name: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    error.sqlite_errorname = name
    return error


@contextmanager
def heeding_waits(conn: Any, progress: BackupProgress | None = None) -> Iterator[BackupProgress]:
    """A progress callback for sqlite3's backup() with `conn` on one side, which ends its
    wait for conn's file as a statement's ends: at an interrupt, or once the file was held
    busy_timeout_ms; meanwhile the wait is marked as a statement's is (waiting_mark).
    Python's backup() tries a held file again for ever (each step waits one slice in the
    library, then it sleeps BACKUP_SLEEP_SECONDS and tries again), heeding neither. A
    connection that is not a target's (a scratch copy's) waits as before; `progress` is
    called on after each step."""
    if not isinstance(conn, FileWaitingConnection):
        yield progress or _ignored
        return
    started, mark = time.monotonic(), object()
    held_since: list[float] = []

    def look(status: int, remaining: int, total: int) -> None:
        if status in (_SQLITE_BUSY, _SQLITE_LOCKED):
            now = time.monotonic()
            held_since[:] = held_since or [now]
            if conn.interrupted_at >= started:
                raise _interrupted()
            if now - held_since[0] >= conn.busy_seconds:
                raise _sqlite_error("database is locked", _SQLITE_BUSY, "SQLITE_BUSY")
            # Its next try begins after backup()'s sleep.
            conn.waiting = (mark, now + BACKUP_SLEEP_SECONDS)
        else:
            held_since.clear()
            conn.waiting = None
        if progress is not None:
            progress(status, remaining, total)

    try:
        yield look
    finally:
        conn.waiting = None


def _ignored(_status: int, _remaining: int, _total: int) -> None:
    return None


def connect_waiting(uri: str, busy_seconds: float) -> FileWaitingConnection:
    """A target's connection to the file at `uri`, which waits `busy_seconds` for it in
    slices. timeout: SQLite's own wait, set by the driver (no number in a PRAGMA's text)."""
    conn = sqlite3.connect(
        uri,
        uri=True,
        check_same_thread=False,
        timeout=min(busy_seconds, SLICE_SECONDS),
        factory=FileWaitingConnection,
    )
    assert isinstance(conn, FileWaitingConnection)
    conn.wait_up_to(busy_seconds)
    return conn


class FileWaitingCursor(sqlite3.Cursor):
    """A cursor of a FileWaitingConnection: its statements wait for the file in slices."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return _waited(self, lambda: sqlite3.Cursor.execute(self, sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        rows = list(parameters)  # sent again whole if the first row waited in vain
        return _waited(self, lambda: sqlite3.Cursor.executemany(self, sql, rows), many=True)


def _waited(cursor: sqlite3.Cursor, attempt: Callable[[], _T], many: bool = False) -> _T:
    conn = cursor.connection
    if isinstance(conn, FileWaitingConnection):
        return conn.waited(attempt, many)
    return attempt()


def waiting_mark(dbapi: Any) -> object | None:
    """The mark of the statement waiting for dbapi's file now; None: none waits."""
    waiting = getattr(dbapi, "waiting", None) if isinstance(dbapi, FileWaitingConnection) else None
    return waiting[0] if waiting is not None else None


def waits_for_file(dbapi: Any) -> bool:
    """Whether a statement of dbapi waits for its file now, not yet running: its try began
    less than two slices ago (SQLite gives a try that waits up after one slice; one that
    lasts longer got the file and runs)."""
    if not isinstance(dbapi, FileWaitingConnection):
        return False
    waiting = dbapi.waiting
    return waiting is not None and time.monotonic() - waiting[1] < 2 * dbapi.slice
