"""Connections to the databases aishell maintains: engines, session guards, catalog checks."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from aishell.catalog import check_column, check_tables, row_estimate, table_bytes, user_tables
from aishell.config import Config, TargetConfig, resolve_url
from aishell.errors import ConfigError, StepTimeout, TargetError, TargetUnreachable
from aishell.sqltext import quote_identifier

_DIALECT_NAMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


@dataclass
class Target:
    """One configured database, opened read-write or (for a dry run) read-only."""

    name: str
    config: TargetConfig
    engine: Engine
    dialect: str
    read_only: bool
    sqlite_path: Path | None = None

    def quote(self, name: str) -> str:
        return quote_identifier(self.engine.dialect, name)

    def connect(self) -> Connection:
        try:
            conn = self.engine.connect()
            if self.dialect == "sqlite":
                # SQLite opens files lazily; read the schema so a damaged or foreign
                # file fails here, as a connection failure, not in the middle of a step.
                conn.execute(text("SELECT count(*) FROM sqlite_schema")).scalar_one()
                conn.rollback()
        except DBAPIError as exc:
            raise TargetUnreachable(
                f"Cannot connect to target '{self.name}': {_first_line(exc)}"
            ) from None
        # Maintenance statements (VACUUM, REINDEX, ANALYZE) run outside a transaction;
        # each tool commits its own work.
        return conn.execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        self.engine.dispose()


def open_target(config: Config, name: str | None, *, read_only: bool = False) -> Target:
    """The named target (or the default); a missing SQLite file is an error, never created."""
    target_name, target_config = config.target(name)
    url_text = resolve_url(target_config.url, config.home)
    try:
        url = make_url(url_text)
    except ArgumentError:
        raise ConfigError(
            f"{config.path}: targets.{target_name}.url: not a valid database URL"
        ) from None
    dialect = _DIALECT_NAMES.get(url.get_backend_name())
    if dialect is None:
        raise ConfigError(
            f"{config.path}: targets.{target_name}.url: unsupported database "
            f"'{url.get_backend_name()}'; use sqlite, postgresql or mysql"
        )
    if dialect == "sqlite":
        return _open_sqlite(target_name, target_config, url.database, read_only)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"Target '{target_name}': database driver not installed ({exc})"
        ) from None
    return Target(target_name, target_config, engine, dialect, read_only)


def _open_sqlite(name: str, target: TargetConfig, database: str | None, read_only: bool) -> Target:
    if not database or database == ":memory:":
        raise ConfigError(f"Target '{name}': a SQLite target needs a file path")
    path = Path(database)
    if not path.is_file():
        hint = "; create it with `aishell demo`" if name == "demo" else ""
        raise TargetError(f"Target '{name}': database file {path} does not exist{hint}")
    # mode=ro makes a dry run read-only in the SQLite library itself; mode=rw refuses
    # to create a new, empty database where a file was expected.
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rw'}"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "connect")
    def _guard(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 5000")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()

    return Target(name, target, engine, "sqlite", read_only, sqlite_path=path.resolve())


@contextmanager
def step_deadline(conn: Connection, seconds: float, label: str) -> Iterator[None]:
    """Interrupt the statement running on conn once `seconds` have passed."""
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        interrupt(conn)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if timed_out.is_set():
            raise StepTimeout(
                f"{label} exceeded its time limit of {seconds:g}s and was interrupted"
            ) from exc
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise StepTimeout(f"{label} exceeded its time limit of {seconds:g}s")


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    return str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__


def interrupt(conn: Connection) -> None:
    """Cancel the statement running on conn, from another thread or a signal handler."""
    dbapi = conn.connection.driver_connection
    if isinstance(dbapi, sqlite3.Connection):
        dbapi.interrupt()
        return
    # psycopg: cancel_safe (3.2+) or cancel; PyMySQL has neither, so its statements
    # are bounded by the server-side limit set in step_deadline.
    cancel = getattr(dbapi, "cancel_safe", None) or getattr(dbapi, "cancel", None)
    if callable(cancel):
        cancel()


# Errors worth a retry: the same statement may well succeed a moment later.
_TRANSIENT_SQLSTATES = {
    "40001",
    "40P01",
    "55P03",
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08003",
    "08006",
}
_TRANSIENT_MYSQL_CODES = {1205, 1213, 2006, 2013}
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_transient(exc: DBAPIError) -> bool:
    """A lost connection, a deadlock, a serialization failure or a lock timeout."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL_CODES:
        return True
    message = str(orig).lower()
    return any(marker in message for marker in _TRANSIENT_SQLITE)


__all__ = [
    "Target",
    "check_column",
    "check_tables",
    "interrupt",
    "is_transient",
    "open_target",
    "row_estimate",
    "step_deadline",
    "table_bytes",
    "user_tables",
]
