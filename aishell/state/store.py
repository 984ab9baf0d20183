"""The state store: runs, steps, events, approvals and target locks, in state.db.

SQLAlchemy Core over SQLite in WAL mode with synchronous=FULL by default (any
SQLAlchemy URL works, so a team can share one on PostgreSQL). One connection per
process does all the writing: SQLite before 3.51.3 can corrupt a WAL file when two
connections of one process write or checkpoint at once.

StateStore is what every caller uses: it opens the connection, brings the schema to
the newest revision (history.py), and turns failures of the store into StateError;
what it stores is read and written by the repositories it is made of (runs.py,
steps.py, approvals.py, backups.py, schedules.py, locks.py, scratch_ledger.py,
breaker.py, plan_cache.py, alerts.py, fleet.py, fleetreads.py, reached.py).
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from aishell.config.stateurl import display_url
from aishell.errors import StateError
from aishell.retry.policy import Backoff, retrying
from aishell.state import history
from aishell.state.alerts import AlertRepository
from aishell.state.approvals import ApprovalRepository
from aishell.state.backups import BackupCatalog
from aishell.state.beats import BeatRepository
from aishell.state.breaker import BreakerRepository
from aishell.state.core import Hot
from aishell.state.faults import busy_timeout_of, is_fault, raced, sqlite_path
from aishell.state.fleet import FleetRepository
from aishell.state.fleetreads import FleetReadings
from aishell.state.identity import (
    FileIdentity,
    backup_copy,
    check_side_files,
    foreign_store,
    keep_marker,
    marker_of,
    new_private_file,
    refuse_foreign,
    refuse_lost_history,
)
from aishell.state.locks import LockRepository
from aishell.state.plan_cache import PlanCache
from aishell.state.reached import ReachedDatabases
from aishell.state.runs import RunRepository
from aishell.state.schedules import ScheduleRepository
from aishell.state.schema import meta
from aishell.state.scratch_ledger import ScratchLedger
from aishell.state.serverstore import (
    Silenced,
    connect_timed_out,
    server_engine,
    without_timeouts,
)
from aishell.state.signing import SigningKey, load_key
from aishell.state.steps import StepRepository

if TYPE_CHECKING:
    from aishell.config.models import Config

# Openers racing (see _open) look again after a short wait, up to 50 times in all;
# the busy timeout bounds a lock's wait (_fault).
_OPEN_BACKOFF = Backoff(first_wait=0.02, max_wait=0.1, attempts=50)


def _raced(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and raced(exc)


class StateStore(
    RunRepository,
    StepRepository,
    ApprovalRepository,
    BackupCatalog,
    ScheduleRepository,
    LockRepository,
    ScratchLedger,
    BreakerRepository,
    PlanCache,
    AlertRepository,
    FleetRepository,
    FleetReadings,
    BeatRepository,
    ReachedDatabases,
):
    """All reads and writes of run state; every write is one committed transaction."""

    def __init__(self, url: str, key: SigningKey | None = None) -> None:
        self.url = url
        # The home's key: with it, what the store holds about a run is signed as it is
        # written and checked as it is read (seals.py); without it, neither.
        self._key = key
        # What errors and messages show: the URL may hold a password.
        self.location = display_url(without_timeouts(url))
        self._silenced = Silenced()
        self._busy_timeout = busy_timeout_of(url)
        # While set (a time.monotonic() deadline), _open retries what opening
        # processes race on, instead of _fault reporting it.
        self._opening_until: float | None = None
        try:
            self.engine = _make_engine(url, self._busy_timeout, self.location, self._silenced)
        except ArgumentError:
            raise StateError(
                "The state store's URL (state.url) is not a valid database URL; fix it in the "
                "config"
            ) from None
        except (NoSuchModuleError, ImportError) as exc:
            raise StateError(
                f"The state store {self.location} needs a database driver that is not "
                f"installed ({exc}); install it, or set state.url"
            ) from None
        # Every failure of the store (locked, damaged, read-only, full, unreachable) is
        # one StateError saying where the store is and what to do, whichever statement
        # met it.
        event.listen(self.engine, "handle_error", self._fault)
        self._queued: list[tuple[Hot, dict[str, Any]]] = []
        self._committed_at, self._unsaved_start = time.monotonic(), None
        # A SQLite file's identity, checked at every commit (identity.py).
        self._path, self._identity = sqlite_path(url), None
        try:
            if self._path is not None:
                # Before SQLite touches the files: it would map a read-only -shm and
                # die of SIGBUS, and write a header into an emptied file.
                check_side_files(self._path)
                refuse_lost_history(self._path)
                refuse_foreign(self._path)
                new_private_file(self._path)
            self._conn: Connection = self._open()
            if self._path is not None:
                self._identity = FileIdentity(self._path)
                keep_marker(self._path)
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()
            self.engine.dispose()

    def still_its_file(self) -> bool:
        """Whether a SQLite store's path is still the file this store opened (a store on
        a server: always), asked without raising: another reader must not open what
        replaced it (SQLite would join the file to the -wal the old one left)."""
        if self._identity is None:
            return True
        try:
            found = os.stat(self._identity.path)
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == (self._identity.dev, self._identity.ino)

    def backup(self) -> Path:
        """A consistent copy of this SQLite store beside it, mode 0600; its path."""
        driver = self._sqlite()
        if self._path is None or driver is None:
            raise StateError(
                f"The state store {self.location} is not a SQLite file; back it up with its "
                "server's own tools (pg_dump, mariadb-dump)"
            )
        self.flush()
        if self._identity is not None:
            self._identity.check()
        return backup_copy(driver, self._path)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _open(self) -> Connection:
        # Processes opening a new store at once all find tables missing; they take turns
        # making it (history.lock_schema), and each after the first finds it made.
        # SQLite may also answer "locked" at once (switching to WAL): a second look finds
        # what the first one created. A lock held past the busy timeout is no race:
        # _fault reports it.
        self._opening_until = time.monotonic() + self._busy_timeout
        try:
            return retrying(_OPEN_BACKOFF, on_error=_raced)(self._open_once)
        except DBAPIError as exc:
            if raced(exc):  # still racing after every attempt
                raise self._error(exc) from None
            raise
        finally:
            self._opening_until = None

    def _open_once(self) -> Connection:
        """One look at the store, its connection closed again when it fails."""
        conn = None
        try:
            conn = self._conn = self._connect()
            self._migrate()
            return conn
        except (SQLAlchemyError, StateError):
            self._queued.clear()
            if conn is not None:
                with suppress(SQLAlchemyError, StateError):
                    conn.close()
            raise

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except TypeError as exc:
            if self._path is not None:
                raise
            # PyMySQL takes the URL's options as keyword arguments.
            raise StateError(
                f"Cannot use the state store {self.location}: its driver does not take an "
                f"option state.url gives ({exc}); fix state.url in the config"
            ) from None

    def _fault(self, context: ExceptionContext) -> None:
        """The engine's error hook: a failure of the store itself becomes a StateError."""
        exc = context.sqlalchemy_exception
        # A server store that did not answer: every later failure is that one (a
        # reconnect's, the run's end's), said in the same line.
        self._silenced.check()
        if not self.url.startswith("sqlite") and isinstance(exc, DBAPIError):
            silent = connect_timed_out(self.url, self.location, exc)
            if silent is not None:
                self._silenced.error = silent
                raise silent
        if context.connection is None and isinstance(exc, DBAPIError) and self._path is None:
            # A server store not connected to: the store, not a defect, whatever the
            # driver raised (an option of state.url psycopg does not know is a
            # ProgrammingError; PyMySQL's TypeError is met in _open_once).
            raise self._error(exc)
        if context.is_pre_ping or not isinstance(exc, DBAPIError) or not is_fault(exc):
            # The pool reconnects after a failed ping; a defect, or an IntegrityError
            # that acquire_lock reads, stays what it is.
            return
        opening = self._opening_until
        if opening is not None and raced(exc):
            waited_out = "locked" in str(exc.orig).lower() and time.monotonic() >= opening
            if not waited_out:
                return  # _open looks again
        raise self._error(exc)

    def _migrate(self) -> None:
        """Bring the schema to the newest revision (see history.py)."""
        # The marker is looked at before the schema: an opener writes it only after its
        # tables have committed, so a marker seen first means tables this read must see.
        # Seen after, it may be another opener's that made the store since this read.
        marked = self._path is not None and marker_of(self._path).exists()
        found = history.read_schema(self._conn)
        self._conn.rollback()
        ours = found.revision is not None or found.legacy_version > 0
        if marked and self._path is not None:
            refuse_lost_history(self._path, (found.has_tables, ours))
        elif self._path is not None and found.has_tables and not ours:
            # What refuse_foreign could not read before (a journal to roll back first).
            raise foreign_store(self._path, [])
        history.refuse_newer(found, self.location)
        history.refuse_unknown(found, self.location)
        if found.current:
            return
        at_once = history.made_at_once(self._conn, found)
        if not at_once:
            history.prepare()
        try:
            with self._tx() as conn:
                history.lock_schema(conn, self._busy_timeout, self.location)
                # Another opener may have upgraded it while this one waited for the lock.
                found = history.read_schema(conn)
                if not found.current:
                    self._upgrade(conn, found, at_once)
        finally:
            # A failed upgrade's error is the one to tell; the lock ends with the session.
            with suppress(SQLAlchemyError, StateError):
                history.unlock_schema(self._conn)
                self._conn.rollback()

    def _upgrade(self, conn: Connection, found: history.FoundSchema, at_once: bool) -> None:
        if at_once and history.made_at_once(conn, found):
            history.create_current(conn)
        else:
            # Already imported unless the store looked new before the lock (rare).
            history.prepare()
            history.upgrade(conn, found, self.location, sqlite_path(self.url), self._key)
        self._event(
            conn,
            "-",
            None,
            "schema_upgraded",
            {"from": found.described(), "to": history.HEAD_REVISION},
        )

    @property
    def schema_version(self) -> int:
        """meta.schema_version: the history before Alembic kept its number there."""
        row = self._conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        self._conn.rollback()
        return int(row[0]) if row else 0

    @property
    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at."""
        row = self._conn.execute(text("SELECT version_num FROM alembic_version")).first()
        self._conn.rollback()
        return row[0] if row else None


def _make_engine(url: str, busy_timeout: float, location: str, silenced: Silenced) -> Engine:
    if url.startswith("sqlite"):
        # One connection per store object: see the module docstring.
        # Worker threads run tools (see executor._in_worker) and write audit rows
        # through this one connection while the main thread waits.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        busy_ms = max(1, round(busy_timeout * 1000))

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # The busy timeout first: switching to WAL waits for other openers too.
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

        return engine
    return server_engine(url, location, silenced)


def signed_store(config: Config) -> StateStore:
    """The store with the home's key (made on first use, as for plan files): what a run
    writes is signed, and what it reads checked."""
    return StateStore(config.state_url, key=load_key(config.home))


def checking_store(config: Config) -> StateStore:
    """The store with the home's key when it has one (no listing makes it): what it holds
    is checked, and a home without the key checks nothing."""
    return StateStore(config.state_url, key=load_key(config.home, create=False))
