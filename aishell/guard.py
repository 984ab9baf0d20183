"""The guarded connection: a step's statements reach the database only through it.

Each statement is classified as it is sent (after substitution, as the driver gets it).
Reads pass; a write passes only when it is an instance of a statement shape the step
was checked and approved with; anything else is refused before it reaches the server,
and the refusal is recorded with the run's statements. On PostgreSQL a read that calls
a function the parser does not know counts by the function's volatility in pg_proc.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlalchemy.engine import Connection
from sqlglot import exp

from aishell.errors import StatementRefused
from aishell.sqlcheck import SQLGLOT_DIALECT
from aishell.statements import Shape, classify, compile_shape, driver_to_text

# Volatile functions that only read: sizes, statistics and checks the tools use. Any
# other volatile function in a "read" makes it count as a write.
READ_ONLY_VOLATILE = frozenset(
    {
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_database_size",
        "pg_tablespace_size",
        "pg_size_pretty",
        "pgstattuple",
        "pgstattuple_approx",
        "pgstatindex",
        "pgstatginindex",
        "pg_relpages",
        "bt_index_check",
        "bt_index_parent_check",
        "verify_heapam",
        "pg_current_wal_lsn",
        "pg_last_wal_replay_lsn",
        "pg_last_xact_replay_timestamp",
        "pg_wal_lsn_diff",
        "pg_is_in_recovery",
        "pg_backend_pid",
        "pg_stat_get_live_tuples",
        "pg_stat_get_dead_tuples",
        "pg_stat_get_last_analyze_time",
        "pg_stat_get_last_autoanalyze_time",
        "pg_stat_get_last_vacuum_time",
        "pg_stat_get_last_autovacuum_time",
        "clock_timestamp",
        "timeofday",
        "random",
        "pg_blocking_pids",
        "txid_current_snapshot",
        "pg_current_snapshot",
        "pg_control_system",
        "pg_postmaster_start_time",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "pg_conf_load_time",
    }
)


@dataclass
class Guard:
    """What one step may send: reads, and writes of the approved shapes (none when the
    step only reads)."""

    shapes: tuple[Shape, ...] = ()
    writes: bool = False
    label: str = "this step"
    refused: list[str] = field(default_factory=list)
    _volatile: dict[str, bool] = field(default_factory=dict)

    def check(self, statement: str, cursor: Any, dialect: str, paramstyle: str) -> str | None:
        """None when the statement may be sent; otherwise why not."""
        sql = driver_to_text(statement, paramstyle)
        found = classify(sql, dialect)
        if not found.writes and dialect == "postgresql":
            volatile = self._volatile_calls(sql, cursor)
            if volatile:
                reason = f"it calls {', '.join(volatile)}(), volatile and not known to only read"
                return self._refuse_write(statement, reason)
        if not found.writes:
            return None
        return self._refuse_write(statement, found.reason)

    def raise_if_refused(self) -> None:
        """Even when the tool caught a refusal, the step does not pass."""
        if self.refused:
            raise StatementRefused(f"{self.label}: statement refused: {self.refused[0]}")

    def _refuse_write(self, statement: str, reason: str) -> str | None:
        if not self.writes:
            return f"{self.label} only reads, and this statement writes ({reason})"
        if any(shape.matches(statement) for shape in self.shapes):
            return None
        return f"it writes ({reason}) and is none of the statements {self.label} was approved with"

    def _volatile_calls(self, sql: str, cursor: Any) -> list[str]:
        try:
            tree = sqlglot.parse(sql, read=SQLGLOT_DIALECT["postgresql"])
        except sqlglot.errors.ParseError:
            return []
        names = sorted(
            {
                node.name.lower()
                for statement in tree
                if statement is not None
                for node in statement.find_all(exp.Anonymous)
            }
            - READ_ONLY_VOLATILE
        )
        unknown = [n for n in names if n not in self._volatile]
        if unknown:
            lookup = cursor.connection.cursor()
            try:
                lookup.execute(
                    "SELECT DISTINCT proname FROM pg_catalog.pg_proc "
                    "WHERE proname = ANY(%s) AND provolatile = 'v'",
                    (unknown,),
                )
                found = {row[0] for row in lookup.fetchall()}
            finally:
                lookup.close()
            self._volatile.update({n: n in found for n in unknown})
        return [n for n in names if self._volatile[n]]


def shapes_for(
    templates: Iterable[str], rendered: Iterable[str], conn: Connection, known: Mapping[str, str]
) -> tuple[Shape, ...]:
    """The statements a step may write: what it rendered, exactly, and its tool's declared
    templates with the step's own identifiers filled in."""
    dialect = conn.dialect
    shapes = [compile_shape(sql, dialect, literal=True) for sql in rendered]
    shapes += [compile_shape(sql, dialect, dict(known)) for sql in templates]
    return tuple(shapes)
