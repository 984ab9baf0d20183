"""A dump that waits for a table lock waits a bounded time, then stops, naming who holds it.

pg_dump and mariadb-dump wait for their table locks as long as the server lets them: a
day or more behind a session left idle in a transaction, or an ALTER TABLE, while the
locks the dump already holds keep DDL on every other table waiting too. While the dump
says nothing, its own session on the server is looked at (never another's): waiting
for a lock longer than the step's lock_wait_seconds, the dump is stopped (its session
ends with it) and the step fails with the holders named.

The dump's session is found by what marks it as the dump's: on PostgreSQL the
application name aishell gives it; on MySQL/MariaDB, a session of aishell's account on
the database, connected after the dump started, running one of the dump's statements.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.sqltext import text
from aishell.targets.limits import OUTSIDE_STEPS_OPTION
from aishell.targets.lockholders import blockers_of, lock_holders, named_holders
from aishell.units import took

# A dump silent this long has its session looked at (then at most this often).
SILENCE_SECONDS = 1.0

_PG_WAITING = """
SELECT a.pid, extract(epoch FROM pg_catalog.clock_timestamp() - a.query_start) AS waited,
       pg_catalog.left(a.query, 120) AS query
FROM pg_stat_activity a
WHERE a.application_name = :name AND a.wait_event_type = 'Lock'
"""
# mariadb-dump's statements on a table: its SELECT of the rows, SHOW CREATE and the like.
_MY_WAITING = """
SELECT p.ID AS id, p.TIME_MS / 1000 AS waited, LEFT(p.INFO, 120) AS query
FROM information_schema.PROCESSLIST p
WHERE p.ID > :after AND p.USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)
  AND p.DB = DATABASE() AND p.STATE LIKE 'Waiting for%lock%'
  AND (p.INFO LIKE 'SELECT /*!40001 SQL_NO_CACHE */%' OR p.INFO LIKE 'SHOW %')
"""


# What a stopped dump or restore leaves to do, after "... the lock is held by ...".
BACKUP_AGAIN = "Back up again once it is released"
RESTORE_AGAIN = "The target may be partly restored: restore again once the lock is released"


@dataclass
class LockWatch:
    """Called while a dump or restore waits: fails the step once the client program's
    own session has waited for a lock `limit` seconds or more. `name`: the PostgreSQL
    application name it runs under; `after`: on MySQL, the newest session id before
    it started; `then`: what is left to do."""

    conn: Connection
    program: str
    limit: float
    then: str = BACKUP_AGAIN
    name: str = ""
    after: int = 0

    @classmethod
    def for_postgresql(
        cls, conn: Connection, program: str, limit: float, then: str = BACKUP_AGAIN
    ) -> LockWatch:
        name = f"aishell {program} {secrets.token_hex(6)}"
        return cls(conn, program, limit, then, name=name)

    @classmethod
    def for_mysql(cls, conn: Connection, program: str, limit: float) -> LockWatch:
        newest = conn.execute(text("SELECT MAX(ID) FROM information_schema.PROCESSLIST"))
        return cls(conn, program, limit, after=int(newest.scalar() or 0))

    def __call__(self) -> None:
        postgresql = self.conn.dialect.name == "postgresql"
        # Each look waits read_timeout_seconds at most, not what is left of the step's
        # limit: a server that stopped answering under the silent dump ends the step
        # then, the dump with it (neither dump program has a read timeout of its own).
        look = {OUTSIDE_STEPS_OPTION: True}
        if postgresql:
            # pg_stat_activity is read once per transaction unless told to read again.
            clear = text("SELECT pg_catalog.pg_stat_clear_snapshot()")
            self.conn.execute(clear, execution_options=look)
            found = self.conn.execute(
                text(_PG_WAITING), {"name": self.name}, execution_options=look
            )
        else:
            found = self.conn.execute(
                text(_MY_WAITING), {"after": self.after}, execution_options=look
            )
        waiting = found.mappings().first()
        if waiting is None or float(waiting["waited"]) < self.limit:
            return
        session = waiting["pid"] if postgresql else waiting["id"]
        if postgresql:
            holders = named_holders(blockers_of(self.conn, int(session)))
        else:
            holders = lock_holders(self.conn, [], besides=int(session))
        raise StepFailed(
            f"{self.program} waited {took(float(waiting['waited']), 0)} for a table lock "
            f"({str(waiting['query']).strip()!r}) and was stopped; the lock is held by "
            + held_by(holders, self.then, self.limit)
        )


def held_by(holders: str, then: str, limit: float) -> str:
    """The end of a lock wait's message: who holds the lock (lockholders.py), and what
    to do."""
    hint = f"{then}, or allow a longer wait (--lock-wait; it was {took(limit, None)})"
    return f"{holders}. {hint}"


class Throttled:
    """A LockWatch for run_child's `watch`, which is called with the program's pid every
    POLL_SECONDS: asks the server at most every SILENCE_SECONDS, after `also`."""

    def __init__(self, lock_watch: LockWatch, also: Callable[[int], None] | None) -> None:
        self.lock_watch, self.also = lock_watch, also
        self.asked = time.monotonic()

    def __call__(self, pid: int) -> None:
        if self.also is not None:
            self.also(pid)
        if time.monotonic() - self.asked >= SILENCE_SECONDS:
            self.asked = time.monotonic()
            self.lock_watch()
