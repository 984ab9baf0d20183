"""Target health: consecutive failed connections per target, and the circuit
breaker they open.

A breaker one machine opens is read by every other sharing the store (a fleet's workers),
so its cool-down is timed by the state store server's clock (store_clock), never by
the machines' own: a worker whose clock runs an hour ahead would otherwise keep every
other from the target for an hour, and one an hour behind would open none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.sqltext import text
from aishell.state.core import StoreCore
from aishell.state.schema import target_health

# Now by the server's clock, in UTC, to the microsecond.
_SERVER_NOW = {
    "postgresql": "SELECT pg_catalog.statement_timestamp()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
}


class BreakerRepository(StoreCore):
    """Rows of target_health."""

    def connection_failed(
        self, target: str, error: str, threshold: int, cool_down_seconds: float
    ) -> int:
        """Count a failed connection; past the threshold the breaker opens. Returns the count."""
        with self._tx() as conn:
            row = conn.execute(
                select(target_health).where(target_health.c.target == target)
            ).first()
            count = (row.consecutive_failures if row else 0) + 1
            open_until = None
            if count >= threshold:
                # To the millisecond: whole seconds would cut a cool-down of one second
                # to as little as none.
                until = _server_now(conn) + timedelta(seconds=cool_down_seconds)
                open_until = until.isoformat(timespec="milliseconds")
            values = {"consecutive_failures": count, "last_error": error, "open_until": open_until}
            if row:
                conn.execute(
                    update(target_health).where(target_health.c.target == target).values(**values)
                )
            else:
                conn.execute(insert(target_health).values(target=target, **values))
            return count

    def connection_succeeded(self, target: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(target_health).where(target_health.c.target == target))

    def breaker_open_until(self, target: str) -> tuple[datetime, int, str] | None:
        """(until, failures, last error) while the target's breaker is open."""
        until, failures, error = self.failed_in_a_row(target)
        if until is None or until <= self.store_clock():
            return None
        return until, failures, error

    def store_clock(self) -> datetime:
        """Now by the state store server's clock (UTC), which a breaker's end is timed by."""
        clock = _server_now(self._conn)
        self._conn.rollback()
        return clock

    def failed_in_a_row(self, target: str) -> tuple[datetime | None, int, str]:
        """(when the breaker closes, None if it never opened; the failed connections in a
        row, which the cool-down's end does not reset, only a good connection; the last
        error)."""
        row = self._conn.execute(
            select(target_health).where(target_health.c.target == target)
        ).first()
        self._conn.rollback()
        if row is None:
            return None, 0, ""
        until = None if row.open_until is None else datetime.fromisoformat(row.open_until)
        return until, row.consecutive_failures, row.last_error or ""


def _server_now(conn: Connection) -> datetime:
    """Now by the clock of the server conn reaches; a SQLite store's is this machine's,
    the only one that opens its file."""
    sql = _SERVER_NOW.get(family(conn.dialect.name))
    if sql is None:
        return datetime.now(UTC)
    found: datetime = conn.execute(text(sql)).scalar_one()
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
