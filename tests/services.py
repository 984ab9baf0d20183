"""Scratch databases on the local PostgreSQL and MariaDB servers.

The suite runs every test, the server tests included. At its start it finds the two
servers or starts them (`start_servers`, as .ci/run does, where this machine has them
installed). A test whose server does not answer (connection refused or timed out)
fails with a one-line reason naming it; skipping instead is opt-in, with
AISHELL_SKIP_SERVICES=1, and every skip is listed with its reason at the end.
AISHELL_REQUIRE_SERVICES=1 (set by .ci/run) forbids skipping even then. Any other
failure to set up (a server that answers but refuses the login, a CREATE DATABASE that
fails) is an error of the test, never a skip.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import NoReturn

import psycopg
import pymysql
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from aishell.targets.mysqltls import preferred_context

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MYSQL_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"
CONNECT_TIMEOUT_SECONDS = 10

# The client errors of a server that does not answer: MySQL's CR_CONNECTION_ERROR and
# CR_CONN_HOST_ERROR (no socket, nothing listening, timed out).
_MYSQL_UNREACHABLE = {2002, 2003}
_UNREACHABLE_WORDS = (
    "connection refused",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "no such file or directory",  # a Unix socket that is not there
)
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}

# PyMySQL's own TLS context for a connection in the preferred mode (no TLS option): a new
# one each time, the system's certificates loaded (about 20 ms of CPU). aishell's sessions
# share one (aishell/targets/mysqltls.py); the sessions the tests open themselves, as the
# application or an admin, share one too (share_preferred_tls), else they cost the suite
# about 5% of its CPU: the same one (preferred_context). A test of aishell's own sharing
# puts PyMySQL's back first.
LIBRARY_TLS_CONTEXT = pymysql.connections.Connection._create_ssl_ctx


def _shared_preferred_tls(connection: pymysql.connections.Connection, sslp: object) -> object:
    if sslp != {}:
        return LIBRARY_TLS_CONTEXT(connection, sslp)
    return preferred_context(lambda: LIBRARY_TLS_CONTEXT(connection, {}))


def share_preferred_tls() -> None:
    """Every PyMySQL session of this process in the preferred mode shares one context."""
    pymysql.connections.Connection._create_ssl_ctx = _shared_preferred_tls


def unreachable(exc: BaseException) -> bool:
    """Whether the error says the server did not answer at all (not: answered no)."""
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # PyMySQL: (code, message)
        return args[0] in _MYSQL_UNREACHABLE and _says_unreachable(str(args[1:]))
    if getattr(orig, "sqlstate", None):  # the server answered (bad login, no database)
        return False
    return _says_unreachable(str(orig))


def _says_unreachable(message: str) -> bool:
    lower = message.lower()
    if any(word in lower for word in _UNREACHABLE_WORDS):
        return True
    return any(f"[errno {n}]" in lower for n in _UNREACHABLE_ERRNOS)


def admin_engine(url: str, what: str) -> Engine:
    """An AUTOCOMMIT engine on the server, checked to answer: an unreachable server skips
    (or fails under AISHELL_REQUIRE_SERVICES=1); any other error is raised."""
    key = "connect_timeout"
    engine = create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={key: CONNECT_TIMEOUT_SECONDS}
    )
    try:
        engine.connect().close()
    except OperationalError as exc:
        engine.dispose()
        if not unreachable(exc):
            raise
        where = make_url(url)
        message = (
            f"{what} is not reachable on {where.host}:{where.port}: "
            f"{str(exc.orig).strip().splitlines()[0]}"
        )
        unavailable(message)
    return engine


def unavailable(message: str) -> NoReturn:
    """A service a test needs is missing: the test fails, or skips when skipping was
    asked for (AISHELL_SKIP_SERVICES=1) and not forbidden (AISHELL_REQUIRE_SERVICES=1)."""
    if os.environ.get("AISHELL_SKIP_SERVICES") == "1" and (
        os.environ.get("AISHELL_REQUIRE_SERVICES") != "1"
    ):
        pytest.skip(message)
    pytest.fail(f"{message} (AISHELL_SKIP_SERVICES=1 skips such tests instead)")


# How this machine's own servers are started when they are installed but not running
# (Debian's packages, as .ci/run starts them).
_STARTERS = {
    5432: ("pg_ctlcluster", "--skip-systemctl-redirect", "{version}", "main", "start"),
    3306: (
        "start-stop-daemon",
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        "/usr/sbin/mariadbd",
    ),
}


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_servers() -> list[str]:
    """Start PostgreSQL and MariaDB where they are installed but not running; returns
    what could not be started, each with why (the tests needing it then say so too)."""
    problems = []
    for port, starter in _STARTERS.items():
        if _port_open(port):
            continue
        versions = sorted(Path("/etc/postgresql").glob("*")) if port == 5432 else [Path("")]
        command = [part.format(version=versions[-1].name if versions else "") for part in starter]
        if shutil.which(command[0]) is None or not versions:
            problems.append(f"nothing listens on 127.0.0.1:{port} and {command[0]} is not here")
            continue
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        for _ in range(60):
            if _port_open(port):
                break
            time.sleep(1)
        else:
            problems.append(
                f"nothing listens on 127.0.0.1:{port} after {' '.join(command)}: "
                f"{(done.stderr or done.stdout).strip()[:200]}"
            )
    return problems


@contextmanager
def scratch_postgresql(admin_url: str = PG_ADMIN, name: str | None = None) -> Iterator[str]:
    """A new database on the local PostgreSQL, dropped afterwards; yields its URL."""
    admin = admin_engine(admin_url, "PostgreSQL")
    try:
        if name is None and admin_url == PG_ADMIN:
            name = READY_DATABASES.take()
        else:
            name = name or f"aishell_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield str(make_url(admin_url).set(database=name).render_as_string(False))
        finally:
            with admin.connect() as conn:
                if admin_url == PG_ADMIN and not _roles_depend_on(conn, name):
                    LATER_DROPS.add(name)
                else:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _roles_depend_on(conn: Connection, database: str) -> bool:
    """Whether a role other than the server's admin owns something in the database or was
    granted something on it: a test that made such a role drops it after the database,
    so that database goes at once."""
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_shdepend s JOIN pg_database d "
                "ON d.datname = :name AND (s.dbid = d.oid OR (s.dbid = 0 "
                "AND s.classid = CAST('pg_database' AS regclass) AND s.objid = d.oid)) "
                "WHERE s.refclassid = CAST('pg_authid' AS regclass) "
                "AND s.refobjid <> (SELECT oid FROM pg_roles WHERE rolname = current_user))"
            ),
            {"name": database},
        ).scalar_one()
    )


class LaterDrops:
    """Drops the shared server's scratch databases on a thread of their own. PostgreSQL
    ends every DROP DATABASE with an immediate checkpoint (0.3 to 1.5 s here, a wait on
    the disk), which a test need not spend: the name is unique and nothing of the test's
    uses it after its end. A private server (stopped with its test) is dropped from at
    once. Each process drains what is left when its session ends."""

    def __init__(self) -> None:
        self._names: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self.failures: list[str] = []

    def add(self, name: str) -> None:
        with self._starting:  # one thread, though tests end their databases from several
            if self._thread is None:
                self._thread = threading.Thread(target=self._drop_each, daemon=True)
                self._thread.start()
            self._names.put(name)

    def drain(self) -> list[str]:
        """Wait for every queued drop; returns the drops that failed, each with why."""
        with self._starting:
            dropping, self._thread = self._thread, None
            if dropping is not None:
                self._names.put(None)
        if dropping is not None:
            dropping.join()
        return self.failures

    def _drop_each(self) -> None:
        while (name := self._names.get()) is not None:
            try:
                _on_admin_session(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # reported when the session ends
                self.failures.append(f"{name}: {str(exc).splitlines()[0]}")


LATER_DROPS = LaterDrops()


class ReadyDatabases:
    """Creates the shared server's next scratch database while the test before runs (a
    CREATE DATABASE writes its template's pages to the log and waits for the disk). A
    name nobody took when the session ends is dropped with the rest."""

    def __init__(self) -> None:
        self._creator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ready-database")
        self._next: Future[str] | None = None
        # Tests make several at once from threads of their own: each name goes to one.
        self._taking = threading.Lock()

    def take(self) -> str:
        with self._taking:
            made = self._next or self._creator.submit(_create_scratch)
            self._next = self._creator.submit(_create_scratch)
        return made.result()

    def release(self) -> None:
        """Hand the one made ahead to LATER_DROPS (a failed creation left nothing)."""
        with self._taking:
            ahead, self._next = self._next, None
        if ahead is not None:
            with suppress(Exception):
                LATER_DROPS.add(ahead.result())


def _create_scratch() -> str:
    name = f"aishell_{uuid.uuid4().hex[:10]}"
    _on_admin_session(f'CREATE DATABASE "{name}"')
    return name


def _on_admin_session(statement: str) -> None:
    """One statement on a session of the shared server's admin, through the driver
    alone: the threads that make and drop databases meanwhile open no SQLAlchemy pool,
    whose events tests count (the connections a command opens and closes)."""
    admin = make_url(PG_ADMIN)
    with psycopg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        dbname=admin.database,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
    ) as conn:
        conn.execute(statement.encode())


READY_DATABASES = ReadyDatabases()


@contextmanager
def scratch_mysql(admin_url: str = MYSQL_ADMIN, name: str | None = None) -> Iterator[str]:
    """A new database on the local MariaDB, dropped afterwards; yields its URL."""
    name = name or f"aishell_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(admin_url, "MariaDB")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield str(make_url(admin_url).set(database=name).render_as_string(False))
        finally:
            _drop_mysql(admin, name)
    finally:
        admin.dispose()


def scratch_server(dialect: str) -> AbstractContextManager[str]:
    """A new database on the dialect's local server ("postgresql" or "mysql"), dropped
    afterwards; yields its URL."""
    return scratch_postgresql() if dialect == "postgresql" else scratch_mysql()


def _drop_mysql(admin: Engine, name: str) -> None:
    """Drop the test's database. A session of the test's left holding a lock in it (a
    test that failed half-way) would hold the DROP for good: past a lock wait, the
    sessions in that database, the test's own as it is the test's alone, are ended."""
    with admin.connect() as conn:
        conn.execute(text("SET SESSION lock_wait_timeout = 15"))
        try:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            return
        except OperationalError:
            pass
        held = conn.execute(
            text(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = :db AND ID <> CONNECTION_ID()"
            ),
            {"db": name},
        ).scalars()
        for session in list(held):
            conn.execute(text(f"KILL {int(session)}"))
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


def engine(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


def stats_reported(conn: Connection) -> None:
    """Send this PostgreSQL session's pending statistics now: a session reports its
    changes up to a second after it commits (later when it sits idle in a pool), so a
    plan read right after could see a table as it was, or a late report land on top of
    a VACUUM's or ANALYZE's count."""
    conn.execute(text("SELECT pg_stat_force_next_flush()"))


def changes_counted(url: str, table: str) -> None:
    """Wait until the statistics count the table's changes since its ANALYZE (a session
    reports them up to a second after it commits)."""
    with engine(url).connect() as conn:
        for _ in range(200):
            found = conn.execute(
                text("SELECT pg_stat_get_mod_since_analyze(CAST(:t AS regclass))"), {"t": table}
            ).scalar_one()
            if found:
                return
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            conn.rollback()
            time.sleep(0.05)
    raise AssertionError(f"the changes to {table} were never counted")
