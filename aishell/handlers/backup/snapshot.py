"""The session that holds a PostgreSQL dump's snapshot: a second session of the backup
step's (tool/side.py), read-only, in which the counts and checksums read every table as
pg_dump does, so that they describe the rows the dump holds."""

from __future__ import annotations

from aishell.risk import RiskLevel
from aishell.tool.side import Side

# Its settings and its export: high writes by the catalog's word, declared exactly.
SNAPSHOT_LOCK_WAIT = "SELECT pg_catalog.set_config('lock_timeout', :wait, true)"
SNAPSHOT_ONE_CORE = "SET LOCAL max_parallel_workers_per_gather = 0"
SNAPSHOT_EXPORT = "SELECT pg_catalog.pg_export_snapshot()"

SNAPSHOT = Side(
    "the dump's snapshot",
    writes=(SNAPSHOT_LOCK_WAIT, SNAPSHOT_ONE_CORE, SNAPSHOT_EXPORT),
    risk=RiskLevel.HIGH,
    isolation_level="REPEATABLE READ",
    read_only=True,
    reads_checked=False,
)
