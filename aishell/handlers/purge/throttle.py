"""Is the server busy? Running queries and replica lag, checked between purge batches.

The same signals pt-archiver and pt-online-schema-change watch: MySQL's
Threads_running or PostgreSQL's active client backends, and how far replicas are
behind. A replica that does not report its lag counts as too far behind (fail closed).
Unlike theirs, a wait is bounded (max_wait_seconds): an unattended purge stops and
says why rather than wait all night.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from aishell.errors import TargetError
from aishell.sqltext import text
from aishell.units import took


@dataclass
class Throttle:
    conn: Connection
    max_running: int | None = None
    max_replica_lag_seconds: float | None = None
    # Named replicas (other configured targets), each with its own connection.
    replicas: Sequence[tuple[str, Connection]] = field(default_factory=tuple)
    # The longest one wait lasts: a server busy all night must not hold a purge (and
    # its run lock) without a word; past it the purge stops resumably.
    max_wait_seconds: float = 1800.0

    @property
    def active(self) -> bool:
        return self.conn.dialect.name != "sqlite" and (
            self.max_running is not None or self.max_replica_lag_seconds is not None
        )

    def busy(self) -> str | None:
        """Why the purge should wait now, or None."""
        if not self.active:
            return None
        if self.max_running is not None:
            running = running_queries(self.conn)
            if running > self.max_running:
                return f"{running} queries running (limit {self.max_running})"
        if self.max_replica_lag_seconds is not None:
            for name, lag in self.replica_lags():
                if lag is None or not math.isfinite(lag):
                    # NaN would compare below every limit: not reporting, so wait.
                    return f"replica {name} does not report its lag (replication stopped?)"
                if lag > self.max_replica_lag_seconds:
                    return (
                        f"replica {name} is {took(lag, 1)} behind "
                        f"(limit {took(self.max_replica_lag_seconds, None)})"
                    )
        return None

    def replica_lags(self) -> list[tuple[str, float | None]]:
        lags: list[tuple[str, float | None]] = []
        if self.conn.dialect.name == "postgresql":
            # A primary knows how far behind each of its standbys replays.
            for name, lag in self.conn.execute(
                text(
                    "SELECT application_name, EXTRACT(epoch FROM replay_lag) "
                    "FROM pg_stat_replication"
                )
            ):
                lags.append((f"{name} (pg_stat_replication)", float(lag or 0)))
        for name, conn in self.replicas:
            lags.append((name, replica_lag(conn, name)))
        return lags


def running_queries(conn: Connection) -> int:
    """Statements running now on the server, not counting this session's."""
    if conn.dialect.name == "postgresql":
        return int(
            conn.execute(
                text(
                    "SELECT pg_catalog.count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()"
                )
            ).scalar_one()
        )
    row = conn.execute(text("SHOW GLOBAL STATUS LIKE 'Threads_running'")).first()
    return max(int(row[1]) - 1, 0) if row else 0


def replica_lag(conn: Connection, name: str) -> float | None:
    """Seconds a replica is behind; None when it does not say. Not a replica: an error."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(
            text(
                "SELECT pg_catalog.pg_is_in_recovery(), "
                "EXTRACT(epoch FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())"
            )
        ).first()
        conn.rollback()
        if row is None or not row[0]:
            raise TargetError(f"target '{name}' is not a replica (pg_is_in_recovery() is false)")
        return None if row[1] is None else float(row[1])
    result = conn.execute(text("SHOW SLAVE STATUS"))
    status = result.mappings().first()
    conn.rollback()
    if status is None:
        raise TargetError(f"target '{name}' is not a replica (SHOW SLAVE STATUS is empty)")
    lag = status.get("Seconds_Behind_Master")
    return None if lag is None else float(lag)
