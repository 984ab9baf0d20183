"""The scheduler's lock on a state store on PostgreSQL: one session-level advisory lock,
held on a connection of its own for as long as `schedule serve` serves.

The server frees the lock when the session ends: when the process exits or is killed
and, through the TCP keepalives this sets on the session, when its machine dies or
drops off the network. So a scheduler on a dead machine never blocks another one, as a
lease row whose holder on another host cannot be seen to be gone would. The lease row
(target_locks) stays, as information about the holder; the scheduling package takes
it over once it holds this lock. Advisory locks belong to one database, so each state
store on a server has its own scheduler lock.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import suppress

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from aishell.errors import StateError
from aishell.state.serverstore import CONNECT_PARAM, READ_PARAM, timeouts_of

LOCK_NAME = "aishell schedule serve"
# The server gives up on a silent client after idle + interval * count seconds (25 s);
# the client gives up on an unanswered probe sooner (tcp_user_timeout, 10 s), so a
# scheduler cut off from the server stops before another one can take the lock.
SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
    "SET statement_timeout = 5000",
)
CLIENT_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
_TAKE = text("SELECT pg_catalog.pg_try_advisory_lock(CAST(:key AS pg_catalog.int8))")
_PROBE = text("SELECT 1")
_RELEASE = text("SELECT pg_catalog.pg_advisory_unlock(CAST(:key AS pg_catalog.int8))")


def lock_key(name: str = LOCK_NAME) -> int:
    """The advisory lock's 64-bit key, the same on every machine for one name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def takes_advisory_lock(url: str) -> bool:
    """Whether a state store at url holds its scheduler's lock on the server."""
    return make_url(url).get_backend_name() == "postgresql"


class AdvisoryLock:
    """The scheduler's advisory lock and the connection that holds it; never reconnects
    on its own: a connection lost is the lock lost."""

    def __init__(self, url: str, location: str) -> None:
        connect, _ = timeouts_of(url)
        parsed = make_url(url).difference_update_query([CONNECT_PARAM, READ_PARAM])
        self.location = location
        self.key = lock_key()
        self._engine = create_engine(
            parsed,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": max(1, round(connect)), **CLIENT_KEEPALIVES},
        )
        self._conn: Connection | None = None
        # The watcher and a trigger's last look may probe at once: one at a time.
        self._mutex = threading.Lock()

    def take(self) -> bool:
        """Take the lock now if it is free; False while another session holds it."""
        with self._mutex:
            if self._conn is None:
                self._conn = self._connect()
            try:
                return bool(self._conn.execute(_TAKE, {"key": self.key}).scalar())
            except DBAPIError as exc:
                self._drop()
                raise self._unreachable(exc) from None

    def holds(self) -> bool:
        """Whether the session that took the lock still answers: while it lives, the
        lock is its own; once it is gone, so is the lock."""
        with self._mutex:
            if self._conn is None:
                return False
            try:
                self._conn.execute(_PROBE)
            except DBAPIError:
                self._drop()
                return False
            return True

    def release(self) -> None:
        with self._mutex:
            if self._conn is not None:
                with suppress(DBAPIError):
                    self._conn.execute(_RELEASE, {"key": self.key})
                self._drop()
            self._engine.dispose()

    def _connect(self) -> Connection:
        try:
            conn = self._engine.connect()
            for setting in SERVER_KEEPALIVES:
                conn.execute(text(setting))
        except DBAPIError as exc:
            raise self._unreachable(exc) from None
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(DBAPIError):
                self._conn.close()
            self._conn = None

    def _unreachable(self, exc: DBAPIError) -> StateError:
        why = " ".join(str(exc.orig).split())[:200]
        return StateError(
            f"The state store {self.location} did not give the scheduler's lock: {why}; "
            "check that its server is up and reachable"
        )
