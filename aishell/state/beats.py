"""Heartbeats of the processes that run fleet tasks, by the state store server's clock.

A process of another host cannot be looked at from here (processes.recorder_alive): a
fleet worker killed on its machine would leave its run shown running for as long as its
row says so. Each process of a worker that runs its tasks (the worker itself, or each
child of its pool) says it is alive every processes.BEAT_SECONDS for as long as it lives
(BeatRepository.beat, from fleet/worker.py); every list of runs reads, in the same
statement, how old the beat of each running run's process is (with_beats), and shows
the run interrupted once it is older than processes.BEAT_LAPSE_SECONDS. Both the stamp
and its age are the state store server's clock (server_epoch), so the machines' own
clocks never meet.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Select, and_, delete, insert, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.sql.functions import FunctionElement

from aishell.state.core import StoreCore
from aishell.state.runlist import SQLITE_EPOCH
from aishell.state.schema import process_beats, runs

# The state store server's clock as whole Unix seconds, in each store's SQL (SQLite's:
# runlist.SQLITE_EPOCH, which the runs list's light read uses too).
_POSTGRESQL_EPOCH = "CAST(EXTRACT(EPOCH FROM pg_catalog.statement_timestamp()) AS BIGINT)"
_MYSQL_EPOCH = "UNIX_TIMESTAMP()"
# A beat older than this is of a process long gone: taken out as a worker starts beating.
FORGOTTEN_AFTER_SECONDS = 7 * 24 * 3600


class server_epoch(FunctionElement[int]):
    """The state store server's clock, as whole Unix seconds."""

    type = BigInteger()
    inherit_cache = True


@compiles(server_epoch)
def _epoch_sqlite(_element: server_epoch, _compiler: Any, **_kw: Any) -> str:
    return SQLITE_EPOCH


@compiles(server_epoch, "postgresql")
def _epoch_postgresql(_element: server_epoch, _compiler: Any, **_kw: Any) -> str:
    return _POSTGRESQL_EPOCH


@compiles(server_epoch, "mysql")
@compiles(server_epoch, "mariadb")
def _epoch_mysql(_element: server_epoch, _compiler: Any, **_kw: Any) -> str:
    return _MYSQL_EPOCH


def with_beats(query: Select[Any], source: FromClause = runs) -> Select[Any]:
    """`query`, which reads runs from `source` (the runs table, or a subquery of it with
    its hostname, pid, pid_started and status), with `beat_age`: how many seconds ago the
    process of each running run last beat, by the server's clock; NULL for a run not
    running, or whose process never beat."""
    beat = process_beats.c
    on = and_(
        beat.hostname == source.c.hostname,
        beat.pid == source.c.pid,
        beat.pid_started == source.c.pid_started,
        source.c.status == "running",
    )
    return query.join_from(source, process_beats, on, isouter=True).add_columns(
        (server_epoch() - beat.beat_at).label("beat_age")
    )


class BeatRepository(StoreCore):
    """Rows of process_beats."""

    def beat(self, hostname: str, pid: int, started: str) -> None:
        """The process is alive now, by the server's clock."""
        beat = process_beats.c
        mine = (beat.hostname == hostname) & (beat.pid == pid) & (beat.pid_started == started)
        with self._tx() as conn:
            stamped = conn.execute(
                update(process_beats).where(mine).values(beat_at=server_epoch())
            ).rowcount
            if not stamped:  # its first beat: nobody else writes this process's row
                conn.execute(
                    insert(process_beats).values(
                        hostname=hostname, pid=pid, pid_started=started, beat_at=server_epoch()
                    )
                )

    def forget_old_beats(self) -> None:
        """The beats of processes gone for FORGOTTEN_AFTER_SECONDS, unless a run of theirs
        is still stored running: that one is shown interrupted by its beat alone."""
        beat = process_beats.c
        theirs = (
            select(runs.c.run_id)
            .where(
                (runs.c.hostname == beat.hostname)
                & (runs.c.pid == beat.pid)
                & (runs.c.pid_started == beat.pid_started)
                & (runs.c.status == "running")
            )
            .exists()
        )
        with self._tx() as conn:
            conn.execute(
                delete(process_beats).where(
                    (beat.beat_at < server_epoch() - FORGOTTEN_AFTER_SECONDS) & ~theirs
                )
            )
