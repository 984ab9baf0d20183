"""How long a target's connections wait for the server.

Every statement's wait is bounded (see engines._server_engine): PyMySQL by its own socket
timeout, psycopg by one watchdog thread that closes the socket of a statement still
waiting at its bound. A step's limit covers every connection of the target while the
step runs, also one opened meanwhile (a reconnect, a backup's second session).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import TargetUnreachable
from aishell.sqltext import text
from aishell.targets.connecting import STOPPED_CONNECT_SECONDS, unless_stopped
from aishell.targets.watchdog import STATEMENTS, Watchdog
from aishell.units import took

# Where a connection's Limits are kept (the pool record's info, seen as Connection.info).
LIMITS_KEY = "aishell_limits"
# The statement that set the server's statement limit on a connection, kept in its info.
STATEMENT_LIMIT_KEY = "aishell_statement_limit"
# A mark of the statement in flight on a connection, kept in its info while it waits.
IN_FLIGHT_KEY = "aishell_watch"
# An execution option: this connection's statements are never a step's (the run lock's
# session), so they wait read_timeout_seconds, whatever step runs meanwhile.
OUTSIDE_STEPS_OPTION = "aishell_outside_steps"


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


# The psycopg connections of this process that sent a statement: what drop_waiting()
# looks through.
_PG_CONNECTIONS: weakref.WeakSet[Any] = weakref.WeakSet()


def drop_waiting() -> None:
    """Close every PostgreSQL connection of this process whose statement still waits
    for its answer, at once: SIGINT outside a run's step ends the command (a run's step
    has its own stop, executor/stopping.py). psycopg's own answer to Ctrl-C, a cancel
    request and a wait for its effect (five seconds each, with a warning for each on a
    server that stopped answering), is then skipped: it cancels only on a connection
    still open. Called from the main thread's signal handler, where psycopg waits."""
    import logging

    from psycopg import pq

    # The command is ending: what psycopg says of the connections it finds closed
    # meanwhile is not the user's concern.
    logging.getLogger("psycopg").disabled = True
    for dbapi in list(_PG_CONNECTIONS):
        with suppress(Exception):
            if dbapi.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                dbapi.pgconn.finish()


@dataclass
class Limits:
    """How long one target's connections wait for the server, shared by its connections.

    A step's limit covers every connection of the target while the step runs (a backup
    reads over a second one), so it is kept here, not on one connection.
    """

    target: str
    read_timeout: float
    step_ends: float | None = None
    # Per DBAPI connection whose socket aishell closed: what its statement's error says.
    fired: dict[int, str] = field(default_factory=dict)
    watchdog: Watchdog = field(default_factory=lambda: STATEMENTS)
    # What the messages name: the target by default; the state store names itself
    # and its own setting (see state/store.py).
    who: str = ""
    setting: str = ""
    # What a statement the server left unanswered raises, given its message: TargetSilent
    # by default (None).
    on_silence: Callable[[str], Exception] | None = None
    # Set once the run using the target stops (a signal, its time limit, the run lock
    # lost): from then on no statement waits past read_timeout_seconds, whatever is
    # left of the step's limit, and no connect is waited for (see stop()).
    stopping: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    # How many connects the stop gave up: what a planning stop tells its cause by.
    connects_given_up: int = 0
    # Per thread whose new connection's set-up was cut off (bound_setup): what its
    # connect's error says, and that DBAPI connection's id (its key in `fired`).
    setup_cut: dict[int, tuple[str, int]] = field(default_factory=dict)
    # Per DBAPI connection with a statement waiting for its answer: (the connection,
    # its info, the statement's mark). A stop holds every one of them to
    # read_timeout_seconds (hold_to_read_timeout), not only the step's own.
    waiting: dict[int, tuple[Any, dict[str, Any], object]] = field(default_factory=dict)

    def bound(self) -> float:
        """How long a statement sent now may wait for its answer."""
        if self.step_ends is None or self.stopping:
            return self.read_timeout
        return max(self.step_ends - time.monotonic(), 0.0) + self.read_timeout

    @property
    def key(self) -> str:
        return self.setting or f"targets.{self.target}.read_timeout_seconds"

    def silence(self, waited: float) -> str:
        if waited > self.read_timeout:  # a step's statement, past the step's limit
            return (
                f"target '{self.target}' did not answer for {took(self.read_timeout, None)} more "
                f"({self.key}), so its connection was closed"
            )
        who = self.who or f"Target '{self.target}'"
        return f"{who} did not answer within {took(waited, None)} ({self.key})"

    def stop(self) -> None:
        """The run using the target stops: statements are held to read_timeout_seconds,
        and a connect is waited for only briefly (connecting.py: a silent server's would
        wait its whole connect timeout, past the run's limit)."""
        self.stopping = True
        self.stopped.set()

    def stopped_connecting(self) -> str:
        who = self.who or f"Target '{self.target}'"
        return (
            f"{who} did not answer a connect within {took(STOPPED_CONNECT_SECONDS, None)}, and the "
            "run had stopped, so the connect was given up"
        )

    def unanswered_cancel(self) -> str:
        """Why a stopped run's statement ended: the cancel went unanswered."""
        return (
            f"target '{self.target}' did not answer the cancel within "
            f"{took(self.read_timeout, None)} "
            f"({self.key}), so its connection was closed"
        )


# Each engine's Limits, by its dialect (an engine's own, shared by the views its
# execution_options() makes, kept across dispose()): what a stop finds also for a
# connection lost meanwhile, whose pool entry and its Limits are gone.
_BY_DIALECT: weakref.WeakKeyDictionary[Any, Limits] = weakref.WeakKeyDictionary()


def limits_of(engine: Engine) -> Limits | None:
    """The Limits watch_statements holds engine's connections to; None for none."""
    return _BY_DIALECT.get(engine.dialect)


def stoppable_connect(limits: Limits, dialect: Any, connect: Callable[[], Any]) -> Any:
    """connect()'s connection, given up once the run using the target stops (see
    connecting.py); the driver's OperationalError then says so."""
    error: type[BaseException] = dialect.loaded_dbapi.OperationalError

    def given_up() -> BaseException:
        limits.connects_given_up += 1
        return error(limits.stopped_connecting())

    return unless_stopped(limits.stopped, connect, given_up)


def mysql_read_timeout(dbapi_conn: Any, seconds: float) -> None:
    # PyMySQL reads its socket timeout from this attribute before every packet (it
    # has no setter); every PyMySQL release since 0.7 keeps it.
    dbapi_conn._read_timeout = seconds


def watch_statements(engine: Engine, limits: Limits) -> None:
    """Bound every statement's wait for its answer by limits.bound().

    PyMySQL: its own socket timeout, set per statement. psycopg: libpq has no read
    timeout, so the watchdog closes the socket of a statement still waiting at its bound.
    """
    is_pg = engine.dialect.name == "postgresql"
    _BY_DIALECT[engine.dialect] = limits

    # Armed first on each connection: a connection's own listeners run before the
    # engine's, and the guard's among them sends its catalog lookups (the functions a
    # statement calls, what may make a read write) on a second cursor before the
    # statement. The statement's bound covers them too; armed by the engine, after them,
    # they waited for ever on a PostgreSQL server that stopped answering.
    @event.listens_for(engine, "engine_connect")
    def _arm_first(conn: Connection) -> None:
        event.listen(conn, "before_cursor_execute", _arm, insert=True)

    def _arm(conn: Connection, cursor: Any, _s: Any, _p: Any, ctx: Any, _many: Any) -> None:
        dbapi = cursor.connection
        outside = ctx is not None and ctx.execution_options.get(OUTSIDE_STEPS_OPTION)
        bound = limits.read_timeout if outside else limits.bound()
        limits.fired.pop(id(dbapi), None)
        # The statement in flight on the connection, until its answer or error: what a
        # stop's cancel waits to see end (deadlines.cancel_then_sever).
        info, mark = conn.info, object()
        info[IN_FLIGHT_KEY] = mark
        if not outside:  # the run lock's session keeps its own bound, and its watch
            limits.waiting[id(dbapi)] = (dbapi, info, mark)
        if not is_pg:
            mysql_read_timeout(dbapi, bound)
            return
        _PG_CONNECTIONS.add(dbapi)
        info["aishell_watchdog"] = limits.watchdog.arm(
            bound, lambda: _expire(info, mark, dbapi, limits, bound)
        )

    @event.listens_for(engine, "after_cursor_execute")
    def _disarm(conn: Connection, cursor: Any, *_: Any) -> None:
        limits.waiting.pop(id(cursor.connection), None)
        _stop_watch(conn.info, limits)
        if not is_pg:
            mysql_read_timeout(cursor.connection, limits.read_timeout)

    event.listen(engine, "handle_error", partial(_said_silent, limits, is_pg))
    if is_pg:
        _bound_pings(engine, limits)


def _said_silent(limits: Limits, is_pg: bool, ctx: Any) -> None:
    """The engine's error hook: a statement (or a new connection's set-up) whose socket
    the watch closed, or PyMySQL's own read timeout, ends in one line naming the limit."""
    conn = ctx.connection
    if conn is None:
        # Connecting: a set-up bound_setup cut off is said as such.
        cut = limits.setup_cut.pop(threading.get_ident(), None)
        if cut is None:
            return
        message, dbapi_id = cut
        limits.fired.pop(dbapi_id, None)
        if limits.on_silence is not None:
            raise limits.on_silence(message)
        raise TargetSilent(message, None, None, ctx.original_exception)
    if ctx.is_pre_ping:
        return
    limits.setup_cut.pop(threading.get_ident(), None)  # said here, if it was cut
    info = _info_of(conn)
    _stop_watch(info, limits)
    for key, (_dbapi, its_info, _mark) in list(limits.waiting.items()):
        if its_info is info:
            limits.waiting.pop(key, None)
    dbapi = conn.connection.dbapi_connection if not conn.invalidated else None
    orig = ctx.original_exception
    said = limits.fired.pop(id(dbapi), None) if dbapi is not None else None
    if said is None and not is_pg and pymysql_timed_out(orig):
        said = limits.silence(getattr(dbapi, "_read_timeout", None) or limits.read_timeout)
    if not is_pg and dbapi is not None:
        mysql_read_timeout(dbapi, limits.read_timeout)
    if said is not None:
        ctx.is_disconnect = True
        if limits.on_silence is not None:
            raise limits.on_silence(said)
        raise TargetSilent(said, ctx.statement, ctx.parameters, orig)


_SETUP_WATCH_KEY = "aishell_setup_watch"


def bound_setup(engine: Engine, limits: Limits, seconds: float, setting: str) -> None:
    """What a new PostgreSQL connection sends before it is handed out (SQLAlchemy's first
    statements, the search path's pin, a step's limit) waits `seconds` at most, as the
    connect before it does: libpq's connect_timeout ends at the login, and the set-up
    goes past the cursor events, so the watchdog holds it from the connect on. Call it
    after the engine's other `connect` listeners: the last one ends the watch. `setting`:
    what the message names."""
    who = limits.who or f"Target '{limits.target}'"
    said = f"{who} did not answer within {took(seconds, None)} of connecting ({setting})"

    @event.listens_for(engine, "do_connect")
    def _watched(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        dbapi = stoppable_connect(limits, dialect, partial(dialect.connect, *cargs, **cparams))
        connecting = threading.get_ident()

        def expire() -> None:
            from psycopg import pq

            with suppress(Exception):
                if dbapi.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                    # Said by handle_error: for a statement SQLAlchemy's first ones sent
                    # on a Connection, as for any statement; for the rest, as a connect's.
                    limits.fired[id(dbapi)] = said
                    limits.setup_cut[connecting] = (said, id(dbapi))
                    sever(dbapi)

        record.info[_SETUP_WATCH_KEY] = limits.watchdog.arm(seconds, expire)
        return dbapi

    @event.listens_for(engine, "connect")
    def _set_up(_dbapi: Any, record: Any) -> None:
        limits.watchdog.disarm(record.info.pop(_SETUP_WATCH_KEY, None))


def _bound_pings(engine: Engine, limits: Limits) -> None:
    """What reaches the server past the cursor events is bounded the same way:
    pool_pre_ping's SELECT, and every COMMIT and ROLLBACK (a transaction's end, a
    failed step's cleanup, the pool's reset of a returned connection), each of which
    waited for ever on a server that stopped answering (libpq has no read timeout)."""
    dialect = engine.dialect

    def bounded(call: Any, named: bool) -> Any:
        """`named`: a cut's reason stays for handle_error to name (_silent), which a
        failed pre-ping never reaches."""

        def run(dbapi_conn: Any) -> Any:
            # COMMIT and ROLLBACK are given the pool's proxy; the cut is recorded by the
            # driver's connection, as handle_error looks it up.
            raw = getattr(dbapi_conn, "dbapi_connection", None) or dbapi_conn
            wait, mark = limits.read_timeout, object()
            info = {IN_FLIGHT_KEY: mark}
            token = limits.watchdog.arm(wait, lambda: _expire(info, mark, raw, limits, wait))
            cut = True
            try:
                answer = call(dbapi_conn)
                cut = False
                return answer
            finally:
                limits.watchdog.disarm(token)
                if not (cut and named):
                    limits.fired.pop(id(raw), None)

        return run

    dialect.do_ping = bounded(dialect.do_ping, named=False)  # type: ignore[method-assign]
    dialect.do_commit = bounded(dialect.do_commit, named=True)  # type: ignore[method-assign]
    dialect.do_rollback = bounded(dialect.do_rollback, named=True)  # type: ignore[method-assign]


def _info_of(conn: Connection) -> dict[str, Any]:
    """The connection's info; none for the one SQLAlchemy's first statements on a new
    connection are sent on (no pool entry behind it yet), nor for one lost before (a
    reconnect's failure): its info would connect again, to the server that just failed
    to answer, and wait its whole connect timeout."""
    if conn.invalidated:
        return {}
    try:
        return conn.info
    except NotImplementedError:
        return {}


def _stop_watch(info: dict[str, Any], limits: Limits) -> None:
    info.pop(IN_FLIGHT_KEY, None)
    limits.watchdog.disarm(info.pop("aishell_watchdog", None))


def _expire(info: dict[str, Any], mark: object, dbapi: Any, limits: Limits, waited: float) -> None:
    """A statement's wait ran out: close its socket if that statement still waits.

    A watch may fire just as its statement ends: the mark (another statement's, or none)
    and the connection's state (idle) then say to leave it alone.
    """
    from psycopg import pq

    if info.get(IN_FLIGHT_KEY) is not mark:
        return
    with suppress(Exception):
        if dbapi.pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
            return
        limits.fired[id(dbapi)] = limits.silence(waited)
        sever(dbapi)


def sever(dbapi: Any) -> None:
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


def pymysql_timed_out(exc: BaseException) -> bool:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return len(args) == 2 and args[0] in (2013, 2003) and "timed out" in str(args[1])


# The largest statement limit each server takes: PostgreSQL's statement_timeout is a
# 32-bit count of milliseconds (24.8 days), MariaDB's max_statement_time at most a
# year, MySQL's max_execution_time an unsigned 32-bit count of milliseconds. A step's
# limit past it is capped there: the client-side deadline (deadlines.step_deadline)
# keeps the rest.
PG_MAX_STATEMENT_MS = 2_147_483_647
MARIADB_MAX_STATEMENT_SECONDS = 31_536_000.0
MYSQL_MAX_EXECUTION_MS = 4_294_967_295


def limit_setting(dialect: str, mariadb: bool, seconds: float) -> tuple[str, int | float] | None:
    """The server's statement limit as a session variable and its value (none for
    SQLite). Never zero, which the servers read as no limit; never past what the
    server takes."""
    if dialect == "postgresql":
        return "statement_timeout", min(max(int(seconds * 1000), 1), PG_MAX_STATEMENT_MS)
    if family(dialect) == "mysql":
        if mariadb:
            return "max_statement_time", min(
                max(float(seconds), 0.001), MARIADB_MAX_STATEMENT_SECONDS
            )
        return "max_execution_time", min(max(int(seconds * 1000), 1), MYSQL_MAX_EXECUTION_MS)
    return None


def statement_limit(dialect: str, mariadb: bool, seconds: float) -> str | None:
    """The server's statement limit, written as the statement that would set it (none
    for SQLite): what a connection keeps under STATEMENT_LIMIT_KEY to know the limit it
    has. It is sent with its value bound (set_statement_limit)."""
    setting = limit_setting(dialect, mariadb, seconds)
    if setting is None:
        return None
    scope = "" if dialect == "postgresql" else "SESSION "
    return f"SET {scope}{setting[0]} = {setting[1]}"


def limit_sql(dialect: str, variable: str) -> str:
    """The statement that sets session variable `variable` (one of aishell's own names,
    never user text) to the bound value :value. PostgreSQL's SET takes no bound value:
    set_config does, for the session (as SET does), named by schema."""
    if dialect == "postgresql":
        return f"SELECT pg_catalog.set_config('{variable}', :value, false)"
    return f"SET SESSION {variable} = :value"


def limit_value(dialect: str, value: int | float) -> int | float | str:
    """A setting's value as it is bound: set_config takes text."""
    return str(value) if dialect == "postgresql" else value


def set_statement_limit(conn: Connection, seconds: float) -> str | None:
    """Set the server's statement limit on `conn`, its value bound; the limit as
    statement_limit writes it (None for SQLite, where nothing is sent)."""
    dialect = conn.dialect
    mariadb = bool(getattr(dialect, "is_mariadb", False))
    setting = limit_setting(dialect.name, mariadb, seconds)
    if setting is None:
        return None
    variable, value = setting
    name = "postgresql" if dialect.name == "postgresql" else "mysql"
    conn.execute(text(limit_sql(name, variable)), {"value": limit_value(name, value)})
    return statement_limit(dialect.name, mariadb, seconds)


def inherit_step_limit(dbapi_conn: Any, record: Any, limits: Limits, dialect: str) -> None:
    """A connection opened while a step runs (a reconnect after a server restart, a
    backup's second session) is held to what is left of the step's limit, as the
    step's first connection is; the next step sets its own."""
    if limits.step_ends is None:
        return
    mariadb = "mariadb" in str(getattr(dbapi_conn, "get_server_info", str)()).lower()
    seconds = limits.step_ends - time.monotonic()
    statement = statement_limit(dialect, mariadb, seconds)
    setting = limit_setting(dialect, mariadb, seconds)
    if statement is None or setting is None:
        return
    variable, value = setting
    # The driver's own placeholder (both take pyformat): no SQLAlchemy at this level.
    sql = limit_sql(dialect, variable).replace(":value", "%(value)s")
    cursor = dbapi_conn.cursor()
    cursor.execute(sql, {"value": limit_value(dialect, value)})
    cursor.close()
    dbapi_conn.commit()  # a SET in a transaction rolled back would be undone
    record.info[STATEMENT_LIMIT_KEY] = statement
