"""Connections to the databases aishell maintains: engines, session guards, catalog checks."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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

    def try_lock(self, key: str) -> RunLock | None:
        """Take the server's own lock for key (a target and agent), or None if held.

        PostgreSQL: a session advisory lock; MySQL/MariaDB: GET_LOCK; SQLite: a lock
        file beside the database. Held on a connection of its own until released.
        """
        digest = hashlib.sha1(key.encode()).hexdigest()
        if self.dialect == "sqlite":
            assert self.sqlite_path is not None
            path = self.sqlite_path.with_name(f"{self.sqlite_path.name}.aishell-{digest[:12]}.lock")
            handle = open(path, "a+")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return None
            return RunLock(release=handle.close)
        conn = self.connect()
        if self.dialect == "postgresql":
            taken = conn.execute(
                text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": key}
            ).scalar()
            unlock = "SELECT pg_advisory_unlock(hashtextextended(:k, 0))"
            name = key
        else:
            # GET_LOCK names are server-wide and at most 64 characters: the schema is
            # part of the name, so one name on two databases never blocks the other.
            scoped = f"{self.engine.url.database}/{key}"
            name = f"aishell:{hashlib.sha1(scoped.encode()).hexdigest()}"
            taken = conn.execute(text("SELECT GET_LOCK(:k, 0)"), {"k": name}).scalar() == 1
            unlock = "SELECT RELEASE_LOCK(:k)"
        if not taken:
            conn.close()
            return None

        def release() -> None:
            with suppress(DBAPIError):
                conn.execute(text(unlock), {"k": name})
            conn.close()

        return RunLock(release=release)


@dataclass
class RunLock:
    """A held server lock; release() gives it back (the server also does when we die)."""

    release: Callable[[], None]


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
    if target_config.password_env:
        password = os.environ.get(target_config.password_env)
        if password is None:
            raise ConfigError(
                f"Target '{target_name}': the environment variable "
                f"{target_config.password_env} (password_env) is not set"
            )
        url = url.set(password=password)
    try:
        engine = _server_engine(url, dialect, target_config, read_only)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"Target '{target_name}': database driver not installed ({exc})"
        ) from None
    return Target(target_name, target_config, engine, dialect, read_only)


APPLICATION_NAME = "aishell"


def _server_engine(url: Any, dialect: str, target: TargetConfig, read_only: bool) -> Engine:
    """An engine whose every connection carries aishell's session guards."""
    lock_ms = target.lock_timeout_ms
    if dialect == "postgresql":
        options = [f"-c lock_timeout={lock_ms}ms", "-c idle_in_transaction_session_timeout=600s"]
        if read_only:
            options.append("-c default_transaction_read_only=on")
        connect_args: dict[str, Any] = {
            "application_name": APPLICATION_NAME,
            "connect_timeout": target.connect_timeout_seconds,
            "options": " ".join(options),
            # A lost network is only noticed through keepalives.
            "keepalives": 1,
            "keepalives_idle": 30,
        }
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    lock_seconds = max(1, round(lock_ms / 1000))
    engine = create_engine(
        url,
        connect_args={
            "charset": "utf8mb4",
            "connect_timeout": target.connect_timeout_seconds,
            "program_name": APPLICATION_NAME,
        },
        pool_pre_ping=True,
    )

    @event.listens_for(engine, "connect")
    def _guard(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"SET SESSION lock_wait_timeout = {lock_seconds}")
        cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {lock_seconds}")
        if read_only:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()

    return engine


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
    """Bound a step by `seconds`: on the server where it can, and from the client too."""
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        interrupt(conn)

    _server_timeout(conn, seconds)
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if timed_out.is_set() or _is_server_timeout(exc):
            raise StepTimeout(
                f"{label} exceeded its time limit of {seconds:g}s and was interrupted"
            ) from exc
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise StepTimeout(f"{label} exceeded its time limit of {seconds:g}s")


def _server_timeout(conn: Connection, seconds: float) -> None:
    """Set the server's own statement limit for this step (only when it changes: a
    round trip saved per step); the next step sets its own."""
    dialect = conn.dialect
    if dialect.name == "postgresql":
        statement = f"SET statement_timeout = {int(seconds * 1000)}"
    elif dialect.name in ("mysql", "mariadb"):
        if getattr(dialect, "is_mariadb", False):
            statement = f"SET SESSION max_statement_time = {float(seconds)}"
        else:
            statement = f"SET SESSION max_execution_time = {int(seconds * 1000)}"
    else:
        return
    if conn.info.get("aishell_statement_limit") != statement:
        conn.execute(text(statement))
        conn.info["aishell_statement_limit"] = statement


_SESSION_ACCESS = {
    "postgresql": (
        "SET default_transaction_read_only = on",
        "SET default_transaction_read_only = off",
    ),
    "mysql": ("SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION READ WRITE"),
    "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
}


def session_access(conn: Connection, read_only: bool, target_read_only: bool) -> None:
    """Make the session read-only for a step that only reads, so the database itself
    refuses a write the guard missed; back to read-write for the next step that writes
    (never on a target opened read-only). Sent only when it changes."""
    wanted = read_only or target_read_only
    if conn.info.get("aishell_read_only", target_read_only) == wanted:
        return
    name = "mysql" if conn.dialect.name in ("mysql", "mariadb") else conn.dialect.name
    on, off = _SESSION_ACCESS[name]
    conn.execute(text(on if wanted else off))
    conn.info["aishell_read_only"] = wanted


def _is_server_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == "57014" and "statement timeout" in str(orig):
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in (1969, 3024)


def describe_server(conn: Connection) -> dict[str, Any]:
    """Server version, the privileges that matter for maintenance, extensions, warnings."""
    dialect = conn.dialect.name
    warnings: list[str] = []
    if dialect == "postgresql":
        version = conn.execute(text("SHOW server_version")).scalar()
        role = (
            conn.execute(
                text(
                    "SELECT rolname, rolsuper, rolcreaterole, rolbypassrls "
                    "FROM pg_roles WHERE rolname = current_user"
                )
            )
            .mappings()
            .one()
        )
        # pg_maintain (PostgreSQL 17+) is the role made for exactly this work.
        maintain = _pg_has_role(conn, "pg_maintain") and bool(
            conn.execute(text("SELECT pg_has_role(current_user, 'pg_maintain', 'member')")).scalar()
        )
        extensions = sorted(r[0] for r in conn.execute(text("SELECT extname FROM pg_extension")))
        available = sorted(
            r[0]
            for r in conn.execute(
                text(
                    "SELECT name FROM pg_available_extensions "
                    "WHERE name IN ('pgstattuple', 'amcheck') AND installed_version IS NULL"
                )
            )
        )
        privileges = {
            "role": role["rolname"],
            "superuser": role["rolsuper"],
            "createrole": role["rolcreaterole"],
            "bypassrls": role["rolbypassrls"],
            "pg_maintain": maintain,
        }
        if role["rolsuper"]:
            warnings.append(
                f"role {role['rolname']} is a superuser: give aishell a role that owns the "
                "tables (or has pg_maintain on PostgreSQL 17+) instead"
            )
        elif role["rolcreaterole"] or role["rolbypassrls"]:
            warnings.append(f"role {role['rolname']} has more than maintenance needs")
        for name in available:
            warnings.append(f"extension {name} is available but not installed")
        return {
            "server_version": version,
            "privileges": privileges,
            "extensions": extensions,
            "warnings": warnings,
        }
    if dialect in ("mysql", "mariadb"):
        version = conn.execute(text("SELECT VERSION()")).scalar()
        grants = [r[0] for r in conn.execute(text("SHOW GRANTS"))]
        if any("ALL PRIVILEGES ON *.*" in g or "SUPER" in g for g in grants):
            warnings.append(
                "the account has ALL PRIVILEGES or SUPER on *.*: maintenance needs "
                "SELECT, INSERT, ALTER, LOCK TABLES and PROCESS on its own database"
            )
        return {
            "server_version": version,
            "privileges": {"grants": grants},
            "extensions": [],
            "warnings": warnings,
        }
    version = conn.execute(text("SELECT sqlite_version()")).scalar()
    options = {r[0] for r in conn.execute(text("PRAGMA compile_options"))}
    if "ENABLE_DBSTAT_VTAB" not in options:
        warnings.append("this SQLite has no dbstat table: fragmentation is only estimated")
    return {
        "server_version": f"SQLite {version}",
        "privileges": {},
        "extensions": sorted(o for o in options if o.startswith("ENABLE_")),
        "warnings": warnings,
    }


def _pg_has_role(conn: Connection, role: str) -> bool:
    return bool(
        conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
    )


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
    "describe_server",
    "interrupt",
    "is_transient",
    "open_target",
    "row_estimate",
    "step_deadline",
    "table_bytes",
    "user_tables",
]


def database_identity(conn: Connection) -> str:
    """Which database conn reaches, read-only: the same for every URL that names it.

    SQLite: the resolved file path. PostgreSQL: the cluster's system identifier, the
    database's name and oid (a dropped and re-created database gets a new oid).
    MariaDB/MySQL: the server's hostname and port, and the database.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        name, oid = conn.execute(
            text("SELECT datname, oid FROM pg_database WHERE datname = current_database()")
        ).one()
        try:
            system = conn.execute(
                text("SELECT system_identifier FROM pg_control_system()")
            ).scalar()
        except DBAPIError:
            # A server that keeps pg_control_system() from this role: the address then.
            if conn.in_transaction():
                conn.rollback()
            system = conn.execute(
                text(
                    "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || "
                    "coalesce(inet_server_port()::text, '')"
                )
            ).scalar()
        return f"postgresql:{system}/{name}/{oid}"
    if dialect in ("mysql", "mariadb"):
        host, port, name = conn.execute(text("SELECT @@hostname, @@port, DATABASE()")).one()
        return f"mysql:{host}:{port}/{name}"
    for _seq, schema_name, file in conn.execute(text("PRAGMA database_list")):
        if schema_name == "main":
            return f"sqlite:{Path(file).resolve() if file else ':memory:'}"
    return "sqlite::memory:"
