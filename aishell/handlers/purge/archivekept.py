"""A batch's copy into an archive table, held to what it copied until the batch commits.

The copy and the DELETE run in one transaction (on PostgreSQL in one statement), and
what the DELETE sets off runs there too, after the copy: a foreign key of the archive
table's that references the purged table (ON DELETE CASCADE deletes each copy as its row
goes, SET NULL changes it), a trigger whose code deletes from or updates the archive
table. archive.py refuses an archive table the DELETE's write reach includes when the
job is planned and at every start of the step; what no body's text shows (a statement a
function builds as it runs, code in C, a trigger or routine the login cannot see) each
batch looks for in the archive table itself, after its DELETE and before its COMMIT. On
PostgreSQL the server counts the archive table's rows the batch's transaction deleted or
updated (its counters, read before and after the batch: they hold earlier transactions'
counts until they are sent on; a server that counts nothing, track_counts off, cannot
tell, and the batch fails closed); elsewhere the archive's rows in the batch's key range
are counted before the copy and after the DELETE, in the batch's transaction, and must
have grown by at least the rows it copied (a first batch's range has no lower end, and a
walk may overlap the archive's rows: earlier purges' rows there count in both, so they
hide no copy gone; on SQLite's rowid no key range holds a copy, and there nothing but a
trigger, whose body the reach reads, can write the archive: aishell's sessions act on no
foreign key). Found short, the batch is rolled back, none of its rows deleted, and the
step fails. What the copy's INSERT itself runs on the archive table is the shape check's
(archiveshape.py) and the reach's (reach.py) to hold.

And on MariaDB a server whose sql_mode is not strict stores a value the archive column
cannot hold as another one ('漢字' into latin1 as '??', an invalid date as a zero one),
saying so only in a warning of the copy's INSERT ... SELECT: a batch whose copy left a
warning is rolled back likewise, before its DELETE, so no value is changed unseen.
"""

from __future__ import annotations

from typing import Any, NoReturn

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.errors import StepFailed, TargetError
from aishell.handlers.purge.batchsql import BatchSql
from aishell.sqltext import display, text

# The archive table's rows this session has deleted or updated, in the transaction and
# in those whose counts it has not sent on yet (pg_stat_xact_*; a catalog view, so that
# the guard reads it as one), and whether the server counts them at all.
_PG_COUNTS = (
    "SELECT n_tup_upd OPERATOR(pg_catalog.+) n_tup_del, "
    "pg_catalog.current_setting('track_counts') "
    "FROM pg_catalog.pg_stat_xact_user_tables WHERE relid OPERATOR(pg_catalog.=) "
    "CAST(CAST(:archive AS pg_catalog.text) AS pg_catalog.regclass)"
)
# What follows every refusal of a batch here.
_ROLLED_BACK = "the batch was rolled back, none of its rows deleted"


def copy_and_delete(
    conn: Connection, batch: BatchSql, statements: list[str], values: dict[str, Any], first: bool
) -> int:
    """Copy one batch's rows into the archive table and delete them (`statements`, in
    one transaction, uncommitted), held to what it copied; the rows."""
    pg = batch.dialect == "postgresql"
    by_range = not pg and batch.key != "rowid"
    before = _pg_counts(conn, batch) if pg else None
    if by_range:
        # What the archive held in the range before the copy: earlier purges' rows (a
        # first batch's range has no lower end; a walk may overlap the archive's rows).
        before = _in_range(conn, batch, values, first)
    counts = []
    for sql in statements:
        result = conn.execute(text(sql), values)
        counts.append(result.rowcount)
        if len(counts) == 1 and family(batch.dialect) == "mysql":
            # Before the DELETE, whose own diagnostics would replace the copy's. The
            # driver's count of them (PyMySQL's, from the reply) spares a round trip.
            _copy_unchanged(conn, batch, getattr(result.context.cursor, "warning_count", None))
    if len(set(counts)) != 1:
        raise TargetError(
            f"archived {counts[0]} rows but deleted {counts[-1]}; the batch was rolled back"
        )
    if counts[0] and pg:
        _pg_copies_kept(conn, batch, before)
    elif counts[0] and by_range:
        _copies_in_range(conn, batch, values, first, counts[0], before or 0)
    return counts[0]


def _pg_counts(conn: Connection, batch: BatchSql) -> int | None:
    """The archive table's rows this session deleted or updated so far; None where the
    server counts none (track_counts off)."""
    row = conn.execute(text(_PG_COUNTS), {"archive": display(str(batch.archive_table))}).one()
    return int(row[0] or 0) if str(row[1]) == "on" else None


def _pg_copies_kept(conn: Connection, batch: BatchSql, before: int | None) -> None:
    """Roll the batch back and fail where its transaction deleted or updated rows of the
    archive table (what the copy itself runs there, the shape check and the reach hold
    to), or where the server counts none, so that it cannot be told."""
    after = _pg_counts(conn, batch)
    if after is None or before is None:
        _lost(
            conn,
            f"the server counts no row changes (track_counts is off), so whether what a "
            f"batch's DELETE from {display(batch.table)} set off kept its copies in archive "
            f"table {display(str(batch.archive_table))} cannot be told; {_ROLLED_BACK}: "
            "turn track_counts on, or archive to a file",
        )
    elif after > before:
        _lost(conn, _said(batch, f"deleted or updated {after - before:,} rows of"))


def _in_range(conn: Connection, batch: BatchSql, values: dict[str, Any], first: bool) -> int:
    """The archive table's rows in the batch's key range, as the batch's transaction
    sees them."""
    return int(conn.execute(text(batch.archived_in_range(first)), values).scalar() or 0)


def _copies_in_range(
    conn: Connection,
    batch: BatchSql,
    values: dict[str, Any],
    first: bool,
    copied: int,
    before: int,
) -> None:
    """Roll the batch back and fail where the archive table's rows in the batch's key
    range grew by fewer than the batch copied there: counted against what the range
    held before the copy, in the same transaction, so that earlier purges' rows there
    hide no copy deleted since."""
    kept = _in_range(conn, batch, values, first) - before
    if kept < copied:
        did = f"left {max(kept, 0):,} rows, of the {copied:,} it copied, in the key range of"
        _lost(conn, _said(batch, did))


def _said(batch: BatchSql, did: str) -> str:
    return (
        f"a batch's DELETE from {display(batch.table)} {did} archive table "
        f"{display(str(batch.archive_table))}, in the batch's own transaction after its "
        "copy (a foreign key's action, or a trigger's code), so the copies would not be "
        f"kept as copied; {_ROLLED_BACK}: drop what writes the archive table, or archive "
        "into another table or to a file"
    )


def _lost(conn: Connection, line: str) -> NoReturn:
    conn.rollback()
    raise StepFailed(line)


def _copy_unchanged(conn: Connection, batch: BatchSql, count: int | None) -> None:
    """MariaDB: roll the batch back and fail where its copy left a warning, which a
    server whose sql_mode is not strict gives for a value it stored as another (`count`:
    the warnings the server said the copy left, None where the driver does not say)."""
    if count == 0:
        return
    warned = [row for row in conn.execute(text("SHOW WARNINGS")) if str(row[0]) != "Note"]
    if not warned:
        return
    conn.rollback()
    level, code, message = warned[0][:3]
    more = f", and {len(warned) - 1} more" if len(warned) > 1 else ""
    raise StepFailed(
        f"copying a batch into archive table {display(str(batch.archive_table))} changed "
        f"what it copied ({level} {code}: {message}{more}); {_ROLLED_BACK}: give the "
        f"archive table's columns the definitions of {display(batch.table)}'s, or make "
        "the server's sql_mode strict (STRICT_ALL_TABLES)"
    )
