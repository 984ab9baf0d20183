"""Target health: consecutive failed connections per target, and the circuit
breaker they open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update

from aishell.state.core import StoreCore
from aishell.state.schema import target_health


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
                until = datetime.now(UTC) + timedelta(seconds=cool_down_seconds)
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
        if until is None or until <= datetime.now(UTC):
            return None
        return until, failures, error

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
