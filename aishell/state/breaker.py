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
                open_until = (datetime.now(UTC) + timedelta(seconds=cool_down_seconds)).isoformat(
                    timespec="seconds"
                )
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
        row = self._conn.execute(
            select(target_health).where(target_health.c.target == target)
        ).first()
        self._conn.rollback()
        if row is None or row.open_until is None:
            return None
        until = datetime.fromisoformat(row.open_until)
        if until <= datetime.now(UTC):
            return None
        return until, row.consecutive_failures, row.last_error or ""
