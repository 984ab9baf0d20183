"""Opening a target: its engine, with aishell's session guards and limits on every connection."""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from aishell.config.dburl import DRIVERS, resolve_url, url_fingerprint
from aishell.config.models import Config, TargetConfig
from aishell.config.options import MAX_PARALLEL_STEPS
from aishell.dialects import FAMILIES, mysql_lock_wait_seconds
from aishell.errors import ConfigError, TargetError, TargetLocked, TargetUnreachable
from aishell.sqltext import quote_identifier, text
from aishell.targets.access import ACCESS_KEY, session_access
from aishell.targets.isolationreset import name_isolation_silence
from aishell.targets.limits import (
    LIMITS_KEY,
    Limits,
    TargetSilent,
    bound_setup,
    inherit_step_limit,
    mysql_read_timeout,
    pymysql_timed_out,
    stoppable_connect,
    watch_statements,
)
from aishell.targets.locks import RunLock, try_lock
from aishell.targets.logins import Login, resolve_login
from aishell.targets.ownsessions import keep_track
from aishell.targets.searchpath import NATIVE_HSTORE, pin_search_path
from aishell.targets.servermessage import server_message
from aishell.targets.sqlitefiles import SQLITE_HELD, WalFiles, held_by, name_holders, open_problem
from aishell.terminal import printable
from aishell.units import took

if TYPE_CHECKING:
    import sqlite3

APPLICATION_NAME = "aishell"
# Connections a server's pool may open past its five: a parallel group's steps each
# hold one (up to MAX_PARALLEL_STEPS), beside the run's own, its lock's and a replica's.
POOL_OVERFLOW = int(MAX_PARALLEL_STEPS.maximum or 16) + 10


@dataclass
class Target:
    """One configured database, opened read-write or (for a dry run) read-only."""

    name: str
    config: TargetConfig
    engine: Engine
    dialect: str
    read_only: bool
    sqlite_path: Path | None = None
    # A read-only view of a read-write target (reading()): its connections, taken from
    # the same pool, are made read-only by a session setting instead.
    session_read_only: bool = False
    # Who it logs in as and where the password came from (servers only).
    login: Login | None = None
    # SQLite: the same file through a pool of no connections kept, for the steps of a
    # parallel group (connect_apart).
    apart_engine: Engine | None = None
    # SQLite opened read-only: the WAL files its reads may make, removed at close().
    wal_files: WalFiles | None = None
    # Its URL as open_target resolved it, without secrets, hashed (url_fingerprint):
    # recorded with the database a run reaches, so that a listing can tell, without
    # connecting, whether the config still points where it did.
    fingerprint: str = ""

    def reading(self) -> Target:
        """This target for reading only, sharing its engine: planning and then running
        a plan open one pool, and the run starts on the connection planning used.
        Close the target itself, not this view."""
        if self.read_only:
            return self
        return replace(self, read_only=True, session_read_only=True)

    def quote(self, name: str) -> str:
        return quote_identifier(self.engine.dialect, name)

    def engine_on(self, database: str) -> Engine:
        """An engine on another database of the target's server (a validation's scratch
        copy), whose sessions have every setting and limit this target's have: the same
        login, timeouts, lock waits, messages' language and search path. Dispose of it."""
        if self.dialect == "sqlite":
            raise ValueError("a SQLite target has no other database on its server")
        url = self.engine.url.set(database=database)
        return _server_engine(url, self.dialect, self.config, self.read_only, self.name)

    def connect(self) -> Connection:
        return self._connect(self.engine)

    def connect_apart(self) -> Connection:
        """A connection of its own, like connect()'s, for a step that runs beside others
        (a parallel group, executor/parallel.py). A server's pool gives each its own;
        SQLite's keeps one per thread and closes the oldest past five, so a SQLite step
        connects outside it."""
        return self._connect(self.apart_engine or self.engine)

    def _connect(self, engine: Engine) -> Connection:
        conn: Connection | None = None
        try:
            conn = engine.connect()
            if self.dialect == "sqlite":
                # SQLite opens files lazily; read the schema so a damaged or foreign
                # file fails here, as a connection failure, not in the middle of a step.
                conn.execute(text("SELECT count(*) FROM sqlite_schema")).scalar_one()
                conn.rollback()
            # Maintenance statements (VACUUM, REINDEX, ANALYZE) run outside a
            # transaction; each tool commits its own work. Inside the try: a server
            # silent from here on fails the connection like one silent at its start.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if self.session_read_only:
                session_access(conn, read_only=True, target_read_only=False)
            elif self.read_only:
                # Read-only from its start (PostgreSQL's default_transaction_read_only,
                # MariaDB's SET SESSION TRANSACTION READ ONLY, SQLite's query_only, each
                # set as it connects): what the guard holds it to, and checks at the
                # end of a step that only reads (guard/connection.py, Guard.ended).
                conn.info.setdefault(ACCESS_KEY, True)
        except TargetSilent:
            raise
        except Exception as raised:
            exc = _as_dbapi_error(engine, raised)
            if exc is None:
                raise
            if conn is not None:
                with suppress(Exception):
                    conn.invalidate()
            if _file_held(self, exc):
                # Another connection holds the file: the target answered, and is busy. Not
                # a failure to connect, which the circuit breaker counts (three of them
                # would keep every run, a scheduled one too, away for minutes).
                raise TargetLocked(
                    f"Target '{self.name}' is locked: another connection held its database "
                    f"file {self._held()}; try again once it is released"
                ) from None
            raise TargetUnreachable(
                f"Cannot connect to target '{self.name}': {_connect_failure(self, exc)}"
            ) from None
        return conn

    def _held(self) -> str:
        """The held SQLite file, the setting that bounded the wait, and its holders."""
        path = self.sqlite_path
        assert path is not None
        setting = f"targets.{self.name}.busy_timeout_ms"
        return f"{path} past {setting} ({self.config.busy_timeout_ms} ms): {held_by(path)}"

    def close(self) -> None:
        self.engine.dispose()
        if self.apart_engine is not None:
            self.apart_engine.dispose()
        if self.wal_files is not None:
            self.wal_files.remove_made()

    def try_lock(self, key: str) -> RunLock | None:
        """Take the server's own lock for key (the database's identity), or None if held
        (see locks.try_lock). Its session gone and the server silent for
        read_timeout_seconds, the lock counts as lost."""
        return try_lock(
            key,
            self.dialect,
            self.connect,
            self.sqlite_path,
            patience=float(self.config.read_timeout_seconds),
        )


def open_target(config: Config, name: str | None, *, read_only: bool = False) -> Target:
    """The named target (or the default); a missing SQLite file is an error, never created."""
    target_name, target_config = config.target(name)
    url_text = resolve_url(target_config.url, config.home)
    try:
        url = make_url(url_text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"{config.path}: targets.{target_name}.url: not a valid database URL"
        ) from None
    dialect = FAMILIES.get(url.get_backend_name())
    if dialect is None:
        raise ConfigError(
            f"{config.path}: targets.{target_name}.url: unsupported database "
            f"'{url.get_backend_name()}'; use sqlite, postgresql or mysql"
        )
    if dialect == "sqlite":
        target = _open_sqlite(target_name, target_config, url.database, read_only, config.path)
        target.fingerprint = url_fingerprint(url_text)
        return target
    # One login for the driver and the client programs, found as the clients find it.
    login = resolve_login(url, target_config, target_name, config.path)
    url = login.applied(url)
    try:
        engine = _server_engine(url, dialect, target_config, read_only, target_name)
    except (NoSuchModuleError, ImportError) as exc:
        ours = DRIVERS.get(url.get_backend_name(), dialect)
        raise ConfigError(
            f"Target '{target_name}': database driver not installed ({exc}); aishell "
            f"connects with {ours}: write {ours}:// in targets.{target_name}.url in "
            f"{config.path}"
        ) from None
    return Target(
        target_name,
        target_config,
        engine,
        dialect,
        read_only,
        login=login,
        fingerprint=url_fingerprint(url_text),
    )


def open_server(config: Config, name: str) -> tuple[Target, str | None]:
    """Target `name`'s server outside its database, with the target's login, guards and
    limits, and that database's name: for making the database (from the maintenance
    database `postgres` on PostgreSQL, from none on MySQL/MariaDB)."""
    target_name, target_config = config.target(name)
    url = make_url(resolve_url(target_config.url, config.home))
    dialect = FAMILIES.get(url.get_backend_name())
    if dialect not in ("postgresql", "mysql"):
        raise ConfigError(f"Target '{target_name}' is not on a database server")
    login = resolve_login(url, target_config, target_name, config.path)
    url = login.applied(url)
    # set() leaves a key it is given None unchanged: MySQL's "no database" is a _replace.
    outside = url._replace(database="postgres" if dialect == "postgresql" else None)
    engine = _server_engine(outside, dialect, target_config, False, target_name)
    return Target(target_name, target_config, engine, dialect, False, login=login), url.database


def _server_engine(
    url: URL, dialect: str, target: TargetConfig, read_only: bool, name: str = "target"
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
    limits = Limits(name, float(target.read_timeout_seconds))
    if dialect == "postgresql":
        engine = _postgresql_engine(url, target, read_only, limits)
    else:
        engine = _mysql_engine(url, target, read_only, limits)
        name_isolation_silence(engine, limits)
    watch_statements(engine, limits)
    return engine


def _postgresql_engine(url: URL, target: TargetConfig, read_only: bool, limits: Limits) -> Engine:
    options = [
        f"-c lock_timeout={target.lock_timeout_ms}ms",
        "-c idle_in_transaction_session_timeout=600s",
        # Where a string literal ends, as the guard's lexer reads it (sqllex.py).
        "-c standard_conforming_strings=on",
        # aishell's statements are catalog reads and maintenance, which a JIT compile
        # only slows: the server's default compiled the guard's catalog read for 0.3 s
        # to 12 s on a database with a partition, against 11-30 ms without.
        "-c jit=off",
        # A float's every digit, as pg_dump asks: a database or a role may set fewer for
        # every session (ALTER DATABASE ... SET extra_float_digits = -15 sends 3 for
        # 3.14159), and a purge archiving to a file keeps what it was sent.
        "-c extra_float_digits=3",
        # Dates and intervals as psycopg reads them and an archive file keeps them,
        # whatever a database or role set (purge/exactread.py).
        "-c DateStyle=ISO",
        "-c IntervalStyle=postgres",
    ]
    if read_only:
        options.append("-c default_transaction_read_only=on")
    # In the URL, not the connect arguments: a second session of a step on another of
    # the server's databases (a validation's scratch copy) is opened from this engine's
    # URL, and must run with the settings every other session of the run has.
    url = url.update_query_dict({"options": " ".join(options)})
    connect_args: dict[str, Any] = {
        "application_name": APPLICATION_NAME,
        # libpq and psycopg count it for the whole connect: TCP, TLS, the startup
        # and authentication exchange.
        "connect_timeout": target.connect_timeout_seconds,
        # A lost network is noticed through keepalives, and data sent but never
        # acknowledged through tcp_user_timeout; a server that is up but silent only
        # through the watch on each statement (libpq has no read timeout).
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": int(target.write_timeout_seconds * 1000),
    }
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,
        max_overflow=POOL_OVERFLOW,
        use_native_hstore=NATIVE_HSTORE,
    )
    # First of all: SQLAlchemy's own first statements (current_schema()) come after it.
    event.listen(engine, "connect", pin_search_path, insert=True)

    @event.listens_for(engine, "connect")
    def _pg_limits(dbapi_conn: Any, record: Any) -> None:
        record.info[LIMITS_KEY] = limits
        inherit_step_limit(dbapi_conn, record, limits, "postgresql")

    # A restore's list of the sessions on its database leaves this process's out.
    keep_track(engine)
    # Last: the set-up above is held to the connect's own bound.
    seconds = float(target.connect_timeout_seconds)
    bound_setup(engine, limits, seconds, f"targets.{limits.target}.connect_timeout_seconds")
    return engine


def _mysql_engine(url: URL, target: TargetConfig, read_only: bool, limits: Limits) -> Engine:
    from aishell.targets import mysqltls  # PyMySQL, only for MySQL targets

    lock_seconds = mysql_lock_wait_seconds(target.lock_timeout_ms)
    engine = create_engine(
        url,
        connect_args={
            "charset": mysqltls.SESSION_CHARSET,
            # PyMySQL's connect_timeout covers the TCP connect only; the greeting and
            # authentication are reads, so the read timeout stands in for it until the
            # connection is made.
            "connect_timeout": target.connect_timeout_seconds,
            "read_timeout": target.connect_timeout_seconds,
            "write_timeout": target.write_timeout_seconds,
            "program_name": APPLICATION_NAME,
        },
        pool_pre_ping=True,
        max_overflow=POOL_OVERFLOW,
    )

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return stoppable_connect(
            limits, dialect, partial(mysqltls.connect, dialect, record, cargs, cparams)
        )

    keep_track(engine)

    @event.listens_for(engine, "connect")
    def _guard(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # The server's messages in English, whatever its lc_messages: the text of an
        # error row (CHECK TABLE's, a refusal's) is what aishell reads it by.
        cursor.execute(
            "SET SESSION lock_wait_timeout = %(wait)s, "
            "SESSION innodb_lock_wait_timeout = %(wait)s, SESSION lc_messages = 'en_US'",
            {"wait": lock_seconds},
        )
        if read_only:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()
        mysql_read_timeout(dbapi_conn, limits.read_timeout)
        record.info[LIMITS_KEY] = limits
        inherit_step_limit(dbapi_conn, record, limits, "mysql")

    return engine


def _as_dbapi_error(engine: Engine, raised: BaseException) -> DBAPIError | None:
    """A driver's error as SQLAlchemy wraps one: setting a new session's isolation level
    raises the driver's own (PyMySQL's, when the server stops answering then)."""
    if isinstance(raised, DBAPIError):
        return raised
    dbapi = engine.dialect.loaded_dbapi
    if isinstance(raised, dbapi.Error):
        wrapped = DBAPIError.instance("", None, raised, dbapi.Error)
        return wrapped if isinstance(wrapped, DBAPIError) else None
    return None


# A password the server refused: MySQL's ER_ACCESS_DENIED_ERROR; PostgreSQL's words, as
# psycopg gives a failed connection no SQLSTATE (a missing role or pg_hba.conf entry is
# no password's fault, and not said so).
_LOGIN_REFUSED = 1045
_PG_PASSWORD_REFUSED = ("password authentication failed", "no password supplied")


def _connect_failure(target: Target, exc: DBAPIError) -> str:
    """Why a connection failed, in one line; a timeout names the setting that holds it,
    a refused login where its password came from (a file ignored for its mode too)."""
    orig = exc.orig
    if target.sqlite_path is not None:
        why = open_problem(target.sqlite_path, exc)
        return server_message(exc) + (f": {why}" if why else "")
    timed_out = (orig is not None and pymysql_timed_out(orig)) or "timeout expired" in str(orig)
    if not timed_out:
        said = server_message(exc)
        code = next(iter(getattr(orig, "args", ())), None)
        refused = code == _LOGIN_REFUSED or any(
            words in str(orig) for words in _PG_PASSWORD_REFUSED
        )
        if refused and target.login is not None:
            return f"{said}; password from {target.login.password_from}"
        return said
    url = target.engine.url
    return (
        f"{url.host}:{url.port or ''} did not answer within "
        f"{took(target.config.connect_timeout_seconds, None)} "
        f"(targets.{target.name}.connect_timeout_seconds)"
    )


def _open_sqlite(
    name: str, target: TargetConfig, database: str | None, read_only: bool, where: Path
) -> Target:
    path = _sqlite_file(name, database, where)
    # mode=ro makes a dry run read-only in the SQLite library itself; mode=rw refuses
    # to create a new, empty database where a file was expected.
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rw'}"
    busy_seconds = target.busy_timeout_ms / 1000

    def connect() -> sqlite3.Connection:
        # The driver is imported when a SQLite target is opened, not with this module:
        # `targets list` and the other commands that open no target import no driver.
        from aishell.targets.sqlitewait import connect_waiting

        return connect_waiting(uri, busy_seconds)

    def sqlite_engine(**pooling: Any) -> Engine:
        # Named parameters, bound by SQLite's own tokenizer: in the default positional
        # style SQLAlchemy finds placeholders by a pattern over the whole text, which a
        # table named like one ("pct%(x)s") would match.
        engine = create_engine("sqlite://", creator=connect, paramstyle="named", **pooling)

        @event.listens_for(engine, "connect")
        def _guard(dbapi_conn: Any, _record: Any) -> None:
            if read_only:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA query_only = ON")
                cursor.close()

        setting = f"targets.{name}.busy_timeout_ms"
        name_holders(engine, path.resolve(), setting, target.busy_timeout_ms)
        return engine

    engine = sqlite_engine()
    apart = sqlite_engine(poolclass=NullPool)
    wal = WalFiles.noted(path.resolve(), busy_seconds) if read_only else None
    return Target(
        name,
        target,
        engine,
        "sqlite",
        read_only,
        sqlite_path=path.resolve(),
        apart_engine=apart,
        wal_files=wal,
    )


def _sqlite_file(name: str, database: str | None, where: Path) -> Path:
    """A SQLite target's file as its URL names it: a path SQLite can name, and there;
    `where`: the config file the target is in, named when the file is not there."""
    if not database or database == ":memory:":
        raise ConfigError(f"Target '{name}': a SQLite target needs a file path")
    if "\x00" in database:
        raise ConfigError(f"Target '{name}': its SQLite path holds a NUL character")
    path = Path(database)
    try:
        os.fsencode(path.resolve()).decode("utf-8")
    except UnicodeDecodeError:
        # SQLite reports a file's path as UTF-8 text (the database's identity, attached
        # files); a path of other bytes cannot be read back.
        shown = os.fsencode(path.resolve()).decode("utf-8", "backslashreplace")
        raise ConfigError(
            f"Target '{name}': the path {printable(shown)} is not valid UTF-8; "
            "SQLite names files in UTF-8, so rename the file or its folder"
        ) from None
    if not path.is_file():
        hint = (
            "; create it with `aishell demo`"
            if name == "demo"
            else f"; correct targets.{name}.url in {where}, or `aishell demo --target {name}` "
            "makes a demo database there"
        )
        raise TargetError(f"Target '{name}': database file {path} does not exist{hint}")
    return path


def _file_held(target: Target, exc: DBAPIError) -> bool:
    return target.dialect == "sqlite" and getattr(exc.orig, "sqlite_errorcode", None) in (
        SQLITE_HELD
    )
