"""Full and incremental backups of all three kinds of database, with a manifest, their
validation, restore and retention: the handlers the backup tools name
(`backup.<handler>` in tools/*.yaml).

A backup is written under a temporary name, synced, and renamed only when whole; its
manifest (sha256, size, server and tool versions, tables with row counts and content
checksums) is written beside it the same way (take.py, manifest.py, disk.py). A server's
dump is read once, as it streams into the file: hashed in the same pass; MySQL/MariaDB's
rows are counted in it too, PostgreSQL's in the dump's snapshot meanwhile (dumps.py,
stream.py, pgarchive.py, aishell/handlers/backup/mysql_dump.py). Validation
checks the sha256, then restores into a scratch database (or file) and compares every
table's rows and contents with the manifest (validate.py, apply.py, measure.py).

Every scratch file, scratch database and child process is recorded in the state store
before it is made (aishell/scratch/), so a killed run's leftovers are removed later.
A full disk is reported as the full disk it is, naming the file and the free space,
never as a fault of the backup. Passwords reach dump tools through their environment,
never their command line (processes.py).
"""

from __future__ import annotations

from dataclasses import replace

from aishell.handlers import Handler
from aishell.handlers.backup.apply import DROPPING_SQL, dropped_statements, restore_argv
from aishell.handlers.backup.cleanup import (
    choose_deletions,
    cleanup,
    cleanup_estimate,
    last_backup,
    render_cleanup,
)
from aishell.handlers.backup.disk import disk_full
from aishell.handlers.backup.manifest import (
    FROM_COPY,
    FROM_DUMP,
    FROM_SNAPSHOT,
    chain_of,
    changed_tables,
    read_manifest,
    sha256_of,
)
from aishell.handlers.backup.measure import CHECKSUM_ROWS, Measured, checksum_rows, compare
from aishell.handlers.backup.pgincrement import schema_lines
from aishell.handlers.backup.processes import ToolFailed, mysql_client, mysql_dump_program
from aishell.handlers.backup.restore import (
    RESTORE_MARGIN,
    render_restore,
    restore,
    restore_estimate,
    restore_subject,
)
from aishell.handlers.backup.sessions import ENDING_SQL
from aishell.handlers.backup.snapshot import SNAPSHOT
from aishell.handlers.backup.swap import SWAPPING_SQL, swap_done
from aishell.handlers.backup.take import (
    DUMP_LINES,
    MYSQL_SIZE_READS,
    SIZE_SQL,
    backup_full,
    backup_incremental,
    backup_size,
    render_backup,
    render_size,
)
from aishell.handlers.backup.validate import NOT_JUDGED, SCRATCH_DATABASE_SQL, validate
from aishell.risk import RiskLevel

__all__ = [
    "CHECKSUM_ROWS",
    "FROM_COPY",
    "FROM_DUMP",
    "FROM_SNAPSHOT",
    "NOT_JUDGED",
    "RESTORE_MARGIN",
    "Measured",
    "ToolFailed",
    "backup_database_full",
    "backup_database_full_mysql",
    "backup_database_full_postgresql",
    "backup_database_incremental",
    "backup_database_incremental_mysql",
    "backup_database_incremental_postgresql",
    "calculate_backup_size",
    "calculate_backup_size_mysql",
    "calculate_backup_size_postgresql",
    "chain_of",
    "changed_tables",
    "checksum_rows",
    "choose_deletions",
    "cleanup_old_backups",
    "compare",
    "disk_full",
    "dropped_statements",
    "find_last_backup",
    "mysql_client",
    "mysql_dump_program",
    "read_manifest",
    "restore_argv",
    "restore_backup",
    "schema_lines",
    "sha256_of",
    "validate_backup",
]

# A backup's second sessions: the dump's snapshot (PostgreSQL), ending a client's session.
_DUMPING_SQL = {
    "postgresql": SNAPSHOT.writes + ENDING_SQL["postgresql"],
    "mysql": ENDING_SQL["mysql"],
}

# One per engine: each shows, and is judged by, the size statement it sends there.
calculate_backup_size = Handler(sql_templates=(SIZE_SQL["sqlite"],), run_fn=backup_size)
calculate_backup_size_postgresql = Handler(
    sql_templates=(SIZE_SQL["postgresql"],), run_fn=backup_size
)
calculate_backup_size_mysql = Handler(
    sql_templates=MYSQL_SIZE_READS, run_fn=backup_size, render_fn=render_size
)

backup_database_full = Handler(
    sql_templates=("VACUUM INTO :path",),
    run_fn=backup_full,
    render_fn=render_backup,
    # What it starts is known without an earlier step's output (an increment's parent).
    foresee_fn=render_backup,
    risk=RiskLevel.LOW,
    effect="writes a backup file",
    second_session=_DUMPING_SQL,
)

backup_database_incremental = Handler(
    sql_templates=("VACUUM INTO :path",),
    run_fn=backup_incremental,
    render_fn=render_backup,
    # What it starts is known without an earlier step's output (an increment's parent).
    foresee_fn=render_backup,
    risk=RiskLevel.LOW,
    effect="writes a backup file",
    second_session=_DUMPING_SQL,
)

# A server's backup, its SQL shown as the dump it runs wherever no session renders it
# (`aishell tools show`, a dry run's step whose parent was only previewed).
backup_database_full_postgresql = replace(
    backup_database_full, sql_templates=(DUMP_LINES["postgresql"],)
)
backup_database_full_mysql = replace(backup_database_full, sql_templates=(DUMP_LINES["mysql"],))
backup_database_incremental_postgresql = replace(
    backup_database_incremental, sql_templates=(DUMP_LINES["postgresql"],)
)
backup_database_incremental_mysql = replace(
    backup_database_incremental, sql_templates=(DUMP_LINES["mysql"],)
)

validate_backup = Handler(
    sql_templates=("SELECT count(*) FROM {table}",),
    run_fn=validate,
    risk=RiskLevel.LOW,
    effect="restores into a scratch database it makes and drops",
    second_session={
        family: SCRATCH_DATABASE_SQL[family] + ENDING_SQL[family] for family in ENDING_SQL
    },
)

restore_backup = Handler(
    sql_templates=(
        "-- the target's dialect decides: pg_restore, the mariadb client reading the dump, "
        "or the SQLite backup API; the exact command shows against the target",
    ),
    run_fn=restore,
    render_fn=render_restore,
    estimate_fn=restore_estimate,
    risk=RiskLevel.CRITICAL,
    effect="replaces the target's tables with a backup's",
    second_session={
        "postgresql": DROPPING_SQL["postgresql"] + ENDING_SQL["postgresql"],
        "mysql": DROPPING_SQL["mysql"]
        + ENDING_SQL["mysql"]
        + SCRATCH_DATABASE_SQL["mysql"]
        + SWAPPING_SQL,
    },
    subject_fn=restore_subject,
    check_fn=swap_done,
)

find_last_backup = Handler(sql_templates=("SELECT 1",), run_fn=last_backup)

cleanup_old_backups = Handler(
    sql_templates=("-- deletes backup files; no SQL",),
    run_fn=cleanup,
    render_fn=render_cleanup,
    estimate_fn=cleanup_estimate,
    risk=RiskLevel.HIGH,
    effect="deletes backup files",
)
