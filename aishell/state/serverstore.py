"""A state store on a server (PostgreSQL, MySQL/MariaDB): its connection waits no longer
than a target's would.

Connecting waits state.connect_timeout_seconds, every statement's answer
state.read_timeout_seconds; then the store fails with one line naming the setting,
instead of holding the run forever. Config.state_url puts the two settings into the
URL as its `connect_timeout` and `read_timeout` query parameters (a URL's own are used
when the settings are not set); they are read back and taken out here, so the driver
gets them in the form it takes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from aishell.errors import StateError
from aishell.units import took

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 600.0
CONNECT_PARAM = "connect_timeout"
READ_PARAM = "read_timeout"


def timeouts_of(url: str) -> tuple[float, float]:
    """The connect and read timeouts a server store's URL carries, or the defaults."""
    query = make_url(url).query
    return (
        _seconds(query.get(CONNECT_PARAM), DEFAULT_CONNECT_TIMEOUT, CONNECT_PARAM),
        _seconds(query.get(READ_PARAM), DEFAULT_READ_TIMEOUT, READ_PARAM),
    )


def _seconds(value: Any, default: float, name: str) -> float:
    if value is None:
        return default
    try:
        seconds = float(value if isinstance(value, str) else value[-1])
    except (TypeError, ValueError, IndexError):
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise StateError(
            f"The state store's URL (state.url): its {name} is not a number of seconds"
        )
    return seconds


def without_timeouts(url: str) -> str:
    """url without the timeouts Config.state_url put in it: what messages show."""
    if url.startswith("sqlite"):
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    return parsed.difference_update_query([CONNECT_PARAM, READ_PARAM]).render_as_string(False)


class Silenced:
    """Once the store's server did not answer, the store is done for this process: its
    later uses (the run's end, the lease row, the last flush) fail at once with the
    same line, instead of each waiting a connect timeout for a reconnect."""

    def __init__(self) -> None:
        self.error: StateError | None = None

    def __call__(self, message: str) -> StateError:
        self.error = StateError(message)
        return self.error

    def check(self) -> None:
        if self.error is not None:
            raise StateError(str(self.error))


def server_engine(url: str, location: str, silenced: Silenced) -> Engine:
    """The engine of a store on a server, every wait on the server bounded (see the
    module); once silenced, it connects no more."""
    # Late: a SQLite store, the usual one, never needs the targets' machinery.
    from aishell.targets.limits import (
        Limits,
        bound_setup,
        mysql_read_timeout,
        watch_statements,
    )

    connect, read = timeouts_of(url)
    parsed = make_url(url).difference_update_query([CONNECT_PARAM, READ_PARAM])
    postgresql = parsed.get_backend_name() == "postgresql"
    connect_args: dict[str, Any] = (
        # libpq counts it for the whole connect (at least 2 s); whole seconds only.
        {"connect_timeout": max(1, round(connect))}
        if postgresql
        # PyMySQL's connect_timeout covers the TCP connect only; the greeting and the
        # login are reads, bounded by the read timeout until the connection is made.
        else {"connect_timeout": connect, "read_timeout": connect}
    )
    engine = create_engine(
        parsed, pool_size=1, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
    )
    if not postgresql:
        from aishell.targets.mysqltls import send_utf8_password

        send_utf8_password(engine)

        @event.listens_for(engine, "connect")
        def _reads(dbapi_conn: Any, _record: Any) -> None:
            mysql_read_timeout(dbapi_conn, read)

    limits = Limits(
        "state",
        read,
        who=f"The state store {location}",
        setting="state.read_timeout_seconds",
        on_silence=silenced,
    )
    watch_statements(engine, limits)
    if not postgresql:
        from aishell.targets.isolationreset import name_isolation_silence

        name_isolation_silence(engine, limits)

    @event.listens_for(engine, "do_connect")
    def _refuse(*_: Any) -> None:
        silenced.check()

    if postgresql:
        bound_setup(engine, limits, float(connect), "state.connect_timeout_seconds")
    return engine


def connect_timed_out(url: str, location: str, exc: DBAPIError) -> StateError | None:
    """The one line for a server store that did not answer a connect in time; None for
    any other failure."""
    from aishell.targets.limits import pymysql_timed_out

    orig = exc.orig
    if orig is None or not (pymysql_timed_out(orig) or "timeout expired" in str(orig)):
        return None
    seconds = timeouts_of(url)[0]
    return StateError(
        f"The state store {location} did not answer within {took(seconds, None)} "
        "(state.connect_timeout_seconds); check that its server is up and reachable"
    )
