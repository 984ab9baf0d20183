"""Connections to the databases aishell maintains: engines, session guards, catalog checks."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
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
        except TargetSilent:
            raise
        except DBAPIError as exc:
            raise TargetUnreachable(
                f"Cannot connect to target '{self.name}': {_connect_failure(self, exc)}"
            ) from None
        # Maintenance statements (VACUUM, REINDEX, ANALYZE) run outside a transaction;
        # each tool commits its own work.
        return conn.execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        self.engine.dispose()

    def try_lock(self, key: str) -> RunLock | None:
        """Take the server's own lock for key (the database's identity), or None if held.

        PostgreSQL: a session advisory lock; MySQL/MariaDB: GET_LOCK; SQLite: a lock
        file beside the database's real path. Held on a connection of its own until
        released; the server (or the kernel) lets go when this process dies.
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
            # GET_LOCK names are server-wide and at most 64 characters; the key names
            # the schema, so two databases on one server never block each other.
            name = f"aishell:{digest}"
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
    # The lease row's key in the state store: the database's identity.
    lease: str = ""


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
        engine = _server_engine(url, dialect, target_config, read_only, target_name)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"Target '{target_name}': database driver not installed ({exc})"
        ) from None
    return Target(target_name, target_config, engine, dialect, read_only)


APPLICATION_NAME = "aishell"


class TargetSilent(TargetUnreachable, DBAPIError):
    """The server stopped answering and aishell closed the connection.

    Also a DBAPIError, so code that copes with a lost connection copes with this one;
    its message names the target, the limit and the setting that holds it.
    """

    def __init__(self, message: str, statement: str | None, params: Any, orig: BaseException):
        DBAPIError.__init__(self, statement, params, orig, connection_invalidated=True)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Watchdog:
    """One thread that calls each watch's callback unless it is disarmed by its deadline:
    a thread per statement would cost about a millisecond each, several times the round
    trip of a short statement. The thread ends when idle; the next watch starts another."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._tokens = itertools.count(1)
        self._wakes_at = math.inf
        self._running = False

    def arm(self, seconds: float, expire: Callable[[], None]) -> int:
        deadline = time.monotonic() + seconds
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (deadline, expire)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="aishell-watchdog", daemon=True).start()
            elif deadline < self._wakes_at:
                self._cond.notify()
        return token

    def disarm(self, token: int | None) -> None:
        with self._cond:
            self._armed.pop(token or 0, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [token for token, (deadline, _) in self._armed.items() if deadline <= now]
                expired = [self._armed.pop(token)[1] for token in due]
                if not expired:
                    if not self._armed:
                        self._wakes_at = math.inf
                        self._cond.wait(30)
                        if not self._armed:
                            self._running = False
                            return
                        continue
                    self._wakes_at = min(deadline for deadline, _ in self._armed.values())
                    self._cond.wait(self._wakes_at - now)
                    continue
            for expire in expired:
                with suppress(Exception):
                    expire()


@dataclass
class _Limits:
    """How long one target's connections wait for the server, shared by its connections.

    A step's limit covers every connection of the target while the step runs (a backup
    reads over a second one), so it is kept here, not on one connection.
    """

    target: str
    read_timeout: float
    step_ends: float | None = None
    # Per DBAPI connection whose socket a watch closed: how long it had waited.
    fired: dict[int, float] = field(default_factory=dict)
    watchdog: _Watchdog = field(default_factory=_Watchdog)

    def bound(self) -> float:
        """How long a statement sent now may wait for its answer."""
        if self.step_ends is None:
            return self.read_timeout
        return max(self.step_ends - time.monotonic(), 0.0) + self.read_timeout

    def silence(self, waited: float) -> str:
        key = f"targets.{self.target}.read_timeout_seconds"
        if waited > self.read_timeout:  # a step's statement, past the step's limit
            return (
                f"target '{self.target}' did not answer for {self.read_timeout:g}s more "
                f"({key}), so its connection was closed"
            )
        return f"Target '{self.target}' did not answer within {waited:g}s ({key})"


_LIMITS = "aishell_limits"


def _server_engine(
    url: Any, dialect: str, target: TargetConfig, read_only: bool, name: str = "target"
) -> Engine:
    """An engine whose every connection carries aishell's session guards and limits.

    No wait on the server is unbounded. Connecting: connect_timeout_seconds, all of it.
    Each statement: outside a step read_timeout_seconds; inside a step, the step's limit
    and then read_timeout_seconds more. The server enforces the step's limit itself
    (statement_timeout, max_statement_time) and aishell cancels at it; the extra
    read_timeout_seconds is only for a server that answers neither. So the socket never
    cuts a step the step's own limit allows (a long VACUUM), and a silent server ends the
    step soon after its limit instead of never.
    """
    lock_ms = target.lock_timeout_ms
    limits = _Limits(name, float(target.read_timeout_seconds))
    if dialect == "postgresql":
        options = [f"-c lock_timeout={lock_ms}ms", "-c idle_in_transaction_session_timeout=600s"]
        if read_only:
            options.append("-c default_transaction_read_only=on")
        connect_args: dict[str, Any] = {
            "application_name": APPLICATION_NAME,
            # libpq and psycopg count it for the whole connect: TCP, TLS, the startup
            # and authentication exchange.
            "connect_timeout": target.connect_timeout_seconds,
            "options": " ".join(options),
            # A lost network is noticed through keepalives, and data sent but never
            # acknowledged through tcp_user_timeout; a server that is up but silent only
            # through the watch on each statement (libpq has no read timeout).
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": int(target.write_timeout_seconds * 1000),
        }
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)

        @event.listens_for(engine, "connect")
        def _pg_limits(_dbapi_conn: Any, record: Any) -> None:
            record.info[_LIMITS] = limits

        _watch_statements(engine, limits)
        return engine
    lock_seconds = max(1, round(lock_ms / 1000))
    engine = create_engine(
        url,
        connect_args={
            "charset": "utf8mb4",
            # PyMySQL's connect_timeout covers the TCP connect only; the greeting and
            # authentication are reads, so the read timeout stands in for it until the
            # connection is made.
            "connect_timeout": target.connect_timeout_seconds,
            "read_timeout": target.connect_timeout_seconds,
            "write_timeout": target.write_timeout_seconds,
            "program_name": APPLICATION_NAME,
        },
        pool_pre_ping=True,
    )

    @event.listens_for(engine, "connect")
    def _guard(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"SET SESSION lock_wait_timeout = {lock_seconds}")
        cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {lock_seconds}")
        if read_only:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()
        _mysql_read_timeout(dbapi_conn, limits.read_timeout)
        record.info[_LIMITS] = limits

    _watch_statements(engine, limits)
    return engine


def _mysql_read_timeout(dbapi_conn: Any, seconds: float) -> None:
    # PyMySQL reads its socket timeout from this attribute before every packet (it
    # has no setter); every PyMySQL release since 0.7 keeps it.
    dbapi_conn._read_timeout = seconds


def _watch_statements(engine: Engine, limits: _Limits) -> None:
    """Bound every statement's wait for its answer by limits.bound().

    PyMySQL: its own socket timeout, set per statement. psycopg: libpq has no read
    timeout, so the watchdog closes the socket of a statement still waiting at its bound.
    """
    is_pg = engine.dialect.name == "postgresql"

    @event.listens_for(engine, "before_cursor_execute")
    def _arm(conn: Connection, cursor: Any, _s: Any, _p: Any, _ctx: Any, _many: Any) -> None:
        dbapi = cursor.connection
        bound = limits.bound()
        limits.fired.pop(id(dbapi), None)
        if not is_pg:
            _mysql_read_timeout(dbapi, bound)
            return
        info, mark = conn.info, object()
        info["aishell_watch"] = mark
        info["aishell_watchdog"] = limits.watchdog.arm(
            bound, lambda: _expire(info, mark, dbapi, limits, bound)
        )

    @event.listens_for(engine, "after_cursor_execute")
    def _disarm(conn: Connection, cursor: Any, *_: Any) -> None:
        _stop_watch(conn.info, limits)
        if not is_pg:
            _mysql_read_timeout(cursor.connection, limits.read_timeout)

    @event.listens_for(engine, "handle_error")
    def _silent(ctx: Any) -> None:
        conn = ctx.connection
        if conn is None or ctx.is_pre_ping:
            return
        _stop_watch(conn.info, limits)
        dbapi = conn.connection.dbapi_connection if not conn.invalidated else None
        orig = ctx.original_exception
        waited = limits.fired.pop(id(dbapi), None) if dbapi is not None else None
        if waited is None and not is_pg and _pymysql_timed_out(orig):
            waited = getattr(dbapi, "_read_timeout", None) or limits.read_timeout
        if not is_pg and dbapi is not None:
            _mysql_read_timeout(dbapi, limits.read_timeout)
        if waited is not None:
            ctx.is_disconnect = True
            raise TargetSilent(limits.silence(waited), ctx.statement, ctx.parameters, orig)

    if is_pg:
        # pool_pre_ping sends its SELECT past the cursor events: bound it the same way.
        ping = engine.dialect.do_ping

        def bounded_ping(dbapi_conn: Any) -> bool:
            wait, mark = limits.read_timeout, object()
            info = {"aishell_watch": mark}
            token = limits.watchdog.arm(wait, lambda: _expire(info, mark, dbapi_conn, limits, wait))
            try:
                return bool(ping(dbapi_conn))
            finally:
                limits.watchdog.disarm(token)
                limits.fired.pop(id(dbapi_conn), None)

        engine.dialect.do_ping = bounded_ping  # type: ignore[method-assign]


def _stop_watch(info: dict[str, Any], limits: _Limits) -> None:
    info.pop("aishell_watch", None)
    limits.watchdog.disarm(info.pop("aishell_watchdog", None))


def _expire(info: dict[str, Any], mark: object, dbapi: Any, limits: _Limits, waited: float) -> None:
    """A statement's wait ran out: close its socket if that statement still waits.

    A watch may fire just as its statement ends: the mark (another statement's, or none)
    and the connection's state (idle) then say to leave it alone.
    """
    from psycopg import pq

    if info.get("aishell_watch") is not mark:
        return
    with suppress(Exception):
        if dbapi.pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
            return
        limits.fired[id(dbapi)] = waited
        _sever(dbapi)


def _sever(dbapi: Any) -> None:
    """Close a DBAPI connection's socket under it, from any thread: the call waiting on
    it returns at once with a lost-connection error. For a server that answers nothing."""
    fd: int | None = None
    with suppress(Exception):
        pgconn = getattr(dbapi, "pgconn", None)
        if pgconn is not None:
            fd = pgconn.socket
        elif getattr(dbapi, "_sock", None) is not None:
            fd = dbapi._sock.fileno()
    if fd is None or fd < 0:
        return
    with suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def _pymysql_timed_out(exc: BaseException) -> bool:
    args = getattr(exc, "args", ())
    return len(args) == 2 and args[0] in (2013, 2003) and "timed out" in str(args[1])


def _connect_failure(target: Target, exc: DBAPIError) -> str:
    """Why a connection failed, in one line; a timeout names the setting that holds it."""
    orig = exc.orig
    timed_out = _pymysql_timed_out(orig) or "timeout expired" in str(orig)
    if not timed_out:
        return _first_line(exc)
    url = target.engine.url
    return (
        f"{url.host}:{url.port or ''} did not answer within "
        f"{target.config.connect_timeout_seconds}s "
        f"(targets.{target.name}.connect_timeout_seconds)"
    )


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

    # Named parameters, bound by SQLite's own tokenizer: in the default positional
    # style SQLAlchemy finds placeholders by a pattern over the whole text, which a
    # table named like one ("pct%(x)s") would match.
    engine = create_engine("sqlite://", creator=connect, paramstyle="named")
    busy_ms = target.busy_timeout_ms

    @event.listens_for(engine, "connect")
    def _guard(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()

    return Target(name, target, engine, "sqlite", read_only, sqlite_path=path.resolve())


@contextmanager
def step_deadline(conn: Connection, seconds: float, label: str) -> Iterator[None]:
    """Bound a step by `seconds`: on the server where it can, and from the client too.

    At the limit the running statement is cancelled; a server that answers neither the
    statement nor the cancel is cut off read_timeout_seconds later (see _server_engine).
    """
    timed_out = threading.Event()
    finished = threading.Event()
    ending = threading.Lock()
    limits: _Limits | None = conn.info.get(_LIMITS)
    dbapi = conn.connection.driver_connection

    def expire() -> None:
        if finished.wait(seconds):
            return
        timed_out.set()
        interrupt(conn)
        if limits is None or finished.wait(max(ends + limits.read_timeout - time.monotonic(), 0)):
            return
        # Each statement's own watch does this too; this one also covers what the step
        # sends past the cursor events (the guard's catalog lookups).
        with ending:
            if not finished.is_set():
                limits.fired[id(dbapi)] = seconds + limits.read_timeout
                _sever(dbapi)

    _server_timeout(conn, seconds)
    ends = time.monotonic() + seconds
    if limits is not None:
        limits.step_ends = ends
    watcher = threading.Thread(target=expire, name="aishell-step-deadline", daemon=True)
    watcher.start()
    try:
        yield
    except Exception as exc:
        if timed_out.is_set() or _is_server_timeout(exc):
            why = f"; {exc}" if isinstance(exc, TargetSilent) else " and was interrupted"
            raise StepTimeout(
                f"{label} exceeded its time limit of {seconds:g}s (max_execution_time){why}"
            ) from exc
        raise
    finally:
        if limits is not None:
            limits.step_ends = None
        with ending:
            finished.set()
        # A cancel on its way must land before the next statement, or it could cancel that.
        watcher.join()
    if timed_out.is_set():
        raise StepTimeout(f"{label} exceeded its time limit of {seconds:g}s (max_execution_time)")


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
    """Server version, the privileges that matter, extensions, warnings; and per agent the
    privileges it needs on this target, each with what is missing (a warning when it is)."""
    info = _describe_server(conn)
    if conn.dialect.name == "postgresql":
        from aishell.handlers.postgresql_maintenance import agent_needs
    elif conn.dialect.name in ("mysql", "mariadb"):
        from aishell.handlers.mysql_maintenance import agent_needs
    else:
        from aishell.handlers.sqlite_maintenance import agent_needs
    info["needs"] = agent_needs(conn)
    for need in info["needs"]:
        state = f"missing: {need['missing']}" if need["missing"] else "ok"
        info["privileges"].setdefault(f"{need['agent']} needs", []).append(
            f"{need['privilege']} ({need['needed_for']}): {state}"
        )
        if need["missing"] and not need.get("optional"):
            info["warnings"].append(
                f"{need['agent']} lacks {need['privilege']}, needed for {need['needed_for']}: "
                f"{need['missing']}"
            )
    return info


def _describe_server(conn: Connection) -> dict[str, Any]:
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
        # SHOW GRANTS carries the account's password hash after IDENTIFIED: never printed.
        grants = [str(r[0]).split(" IDENTIFIED ", 1)[0] for r in conn.execute(text("SHOW GRANTS"))]
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
    """Cancel the statement running on conn, from another thread or a signal handler.

    Never waits longer than the target's read_timeout_seconds: a cancel goes over a new
    connection to the same server, which may be the one that stopped answering.
    """
    # A closed or invalidated Connection would open a new DBAPI connection on access.
    if conn.closed or conn.invalidated:
        return
    try:
        fairy = conn.connection
        dbapi = fairy.driver_connection
        limits: _Limits | None = fairy.info.get(_LIMITS)
    except Exception:  # closed meanwhile, by the thread running the step
        return
    if isinstance(dbapi, sqlite3.Connection):
        dbapi.interrupt()
        return
    wait = limits.read_timeout if limits is not None else 30.0
    # psycopg: cancel_safe (3.2+) or cancel; PyMySQL has neither, so its statements
    # are bounded by the server-side limit set in step_deadline.
    cancel_safe = getattr(dbapi, "cancel_safe", None)
    with suppress(Exception):  # psycopg.CancellationTimeout, a refused connection ...
        if callable(cancel_safe):
            cancel_safe(timeout=wait)
        elif callable(getattr(dbapi, "cancel", None)):
            dbapi.cancel()


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
    "TargetSilent",
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
    """Which database conn reaches, read-only: the same for every URL or path that names it.

    PostgreSQL: the cluster's system identifier and the database's oid (a dropped and
    re-created database gets a new oid). MariaDB/MySQL: the server (MySQL's server_uuid;
    MariaDB has none, so its hostname, port and data directory) and the schema. SQLite:
    the file's device and inode, so a symlink or another spelling of the path is the
    same database.
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
        try:
            server = conn.execute(text("SELECT @@server_uuid")).scalar()
        except DBAPIError:
            if conn.in_transaction():
                conn.rollback()
            host, port, datadir = conn.execute(text("SELECT @@hostname, @@port, @@datadir")).one()
            server = f"{host}:{port}:{datadir}"
        name = conn.execute(text("SELECT DATABASE()")).scalar()
        return f"mysql:{server}/{name}"
    for _seq, schema_name, file in conn.execute(text("PRAGMA database_list")):
        if schema_name == "main" and file:
            status = os.stat(file)
            return f"sqlite:{status.st_dev}:{status.st_ino}"
    return "sqlite::memory:"
