"""What every part of the state store shares: its one connection, its transactions,
the writes queued for the next commit, and the event log.

The repositories (runs.py, steps.py, ...) are mixins over StoreCore; StateStore
(store.py) puts them together and opens the connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from operator import itemgetter
from typing import Any

from sqlalchemy import Insert, Select, Update, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StateError
from aishell.state.faults import is_fault, state_error
from aishell.state.identity import FileIdentity
from aishell.state.schema import events
from aishell.state.seals import check, seal, step_seal
from aishell.state.serverstore import Silenced, connect_timed_out
from aishell.state.signing import SigningKey
from aishell.state.values import dumps, now

_SQLITE = sqlite.dialect()


class Hot:
    """A statement on the path of every step, built once.

    Elsewhere SQLAlchemy runs it (reusing its compiled form); on a SQLite store it goes
    to the driver as compiled here, from the same statement: SQLAlchemy's own work for
    one of these one-row writes took ten times sqlite's, and a step makes seven of them.
    """

    def __init__(
        self, statement: Insert | Update | Select[Any], columns: Sequence[str] | None = None
    ) -> None:
        self.statement = statement
        # `columns`: what an INSERT is given, as SQLAlchemy would learn from the values.
        compiled = statement.compile(dialect=_SQLITE, column_keys=columns)
        self.sqlite = compiled.string
        self.names = tuple(compiled.positiontup or ())
        # Values written into the statement itself (status="running").
        self.fixed = {
            name: compiled.binds[name].value
            for name in self.names
            if not compiled.binds[name].required
        }
        pick = itemgetter(*self.names)
        self._pick: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            pick if len(self.names) > 1 else lambda params: (pick(params),)
        )

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The statement's parameters in the order of its placeholders."""
        return self._pick({**params, **self.fixed} if self.fixed else params)


EVENT = Hot(insert(events), ("run_id", "step_idx", "at", "kind", "data"))


class StoreCore:
    """The connection and transactions the repositories write through; every write is
    one committed transaction."""

    # Set by StateStore.__init__.
    url: str
    location: str
    _busy_timeout: float
    _key: SigningKey | None
    _conn: Connection
    # Writes that need not be durable on their own: they commit with the next
    # transaction, which always comes before anything that depends on them.
    _queued: list[tuple[Hot, dict[str, Any]]]
    # When the last commit ended (time.monotonic()), and the step whose start is queued
    # but not committed yet: nothing of it is in the store.
    _committed_at: float
    _unsaved_start: tuple[str, int] | None
    # A SQLite store's file as it was opened; None elsewhere, and while it opens.
    _identity: FileIdentity | None
    # A server store's silence, once met: every later use fails with its line.
    _silenced: Silenced

    def _error(self, exc: DBAPIError) -> StateError:
        return state_error(self.location, self.url, exc, self._busy_timeout)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        self._silenced.check()
        try:
            with self._conn.begin():
                for statement, params in self._queued:
                    self._send(statement, params)
                yield self._conn
                self._same_file()
        except DBAPIError as exc:
            # A reconnect meets the engine's error hook only in part (SQLAlchemy's
            # revalidation): a server store that did not answer is said here too.
            silent = self._unanswered(exc)
            if silent is None:
                raise
            raise silent from None
        self._committed()

    def _unanswered(self, exc: DBAPIError) -> StateError | None:
        """The one line for a server store that did not answer (see serverstore.py)."""
        if isinstance(exc.orig, StateError):  # raised under the driver's connect
            return exc.orig
        if self._silenced.error is None and not self.url.startswith("sqlite"):
            self._silenced.error = connect_timed_out(self.url, self.location, exc)
        return self._silenced.error

    @contextmanager
    def _hot_tx(self, durable: bool = True) -> Iterator[None]:
        """A transaction of hot statements only (_send). On SQLite, the driver's own:
        begun by its first write and committed here, without SQLAlchemy's bookkeeping.

        Not `durable`: the commit does not wait for the disk: on SQLite synchronous=NORMAL
        for it alone, on PostgreSQL synchronous_commit off for its transaction alone. It
        is in the WAL once it returns, so a crash of this process keeps it; the store's
        next durable commit syncs it with its own, and a crash of the machine before
        that loses it. Only for what losing repeats harmless work. (MySQL's equivalent,
        innodb_flush_log_at_trx_commit, is the server's alone: its commits stay durable.)"""
        driver = self._sqlite()
        if driver is None or self._conn.in_transaction():
            unsynced = not durable and not self._conn.in_transaction()
            with self._tx() as conn:
                if unsynced and conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield
            return
        # SQLite changes its safety level only outside a transaction.
        unsynced = not durable and not driver.in_transaction
        if unsynced:
            driver.execute("PRAGMA synchronous = NORMAL")
        try:
            for statement, params in self._queued:
                self._send(statement, params)
            yield
            self._same_file()
            try:
                driver.commit()
            except sqlite3.Error as exc:
                raise self._failed("COMMIT", exc) from exc
        except BaseException:
            with suppress(sqlite3.Error):
                driver.rollback()
            raise
        finally:
            if unsynced:
                self._synced_again(driver)
        self._committed()

    def _synced_again(self, driver: sqlite3.Connection) -> None:
        """Every later commit durable again (store.py opens the store at FULL)."""
        try:
            driver.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise self._failed("PRAGMA synchronous = FULL", exc) from exc

    def _same_file(self) -> None:
        """Before a commit: the store's file is still the one opened (identity.py), or
        nothing more is written to a file no one will read."""
        if self._identity is not None:
            self._identity.check()

    def _committed(self) -> None:
        self._queued.clear()
        self._unsaved_start = None
        self._committed_at = time.monotonic()

    def _send(self, statement: Hot, params: Mapping[str, Any]) -> Any:
        """Run a hot statement; what it gives: the sqlite3 cursor, or SQLAlchemy's result.
        Inside a transaction (_tx or _hot_tx) for a write."""
        driver = self._sqlite()
        if driver is None:
            return self._conn.execute(statement.statement, params)
        try:
            return driver.execute(statement.sqlite, statement.values(params))
        except sqlite3.Error as exc:
            raise self._failed(statement.sqlite, exc) from exc

    def _sqlite(self) -> sqlite3.Connection | None:
        if not self.url.startswith("sqlite"):
            return None  # without a look at the connection, which may reconnect
        driver = self._conn.connection.driver_connection
        return driver if isinstance(driver, sqlite3.Connection) else None

    def _failed(self, sql: str, exc: sqlite3.Error) -> Exception:
        """What the engine's error hook makes of a failure, as for every other statement:
        a fault of the store is a StateError; anything else, SQLAlchemy's error."""
        wrapped = DBAPIError.instance(sql, None, exc, sqlite3.Error)
        if isinstance(wrapped, DBAPIError) and is_fault(wrapped):
            return self._error(wrapped)
        return wrapped

    def _sealed(self, kind: str, run_id: str, row: Mapping[Any, Any]) -> str | None:
        """The row's signature with the home's key; None for a store opened without it."""
        return None if self._key is None else seal(self._key, kind, run_id, row)

    def _verify(
        self, kind: str, run_id: str, row: Mapping[Any, Any], what: str, **again: str
    ) -> None:
        """Refuse a row the home's key did not sign as it is (a store with the key)."""
        if self._key is not None:
            check(self._key, kind, run_id, row, row.get("seal"), what, **again)

    def _step_seal(self, run_id: str, index: int, field: str, value: str | None) -> str | None:
        """A step's status or output signed with the home's key; None without it."""
        return None if self._key is None else step_seal(self._key, run_id, index, field, value)

    def flush(self) -> None:
        """Commit queued writes now."""
        if self._queued:
            with self._hot_tx():
                pass

    def record_event(self, run_id: str, index: int | None, kind: str, data: dict[str, Any]) -> None:
        with self._hot_tx():
            self._event(self._conn, run_id, index, kind, data)

    def queue_event(self, run_id: str, index: int | None, kind: str, data: dict[str, Any]) -> None:
        """An event that need not outlive a crash on its own: it commits with the next
        commit (a step's end at the latest)."""
        self._queued.append((EVENT, _event_row(run_id, index, kind, data)))

    def _event(
        self, _conn: Connection, run_id: str, index: int | None, kind: str, data: Any
    ) -> None:
        """Inside a transaction (_tx)."""
        self._send(EVENT, _event_row(run_id, index, kind, data))


def _event_row(run_id: str, index: int | None, kind: str, data: Any) -> dict[str, Any]:
    """An event's values, stamped now."""
    return {"run_id": run_id, "step_idx": index, "at": now(), "kind": kind, "data": dumps(data)}
