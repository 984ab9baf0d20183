"""One batch's work inside its transaction: its DELETE, and its archive copy (into an
archive table in the same transaction; for an archive file the bytes to append, read
as the server holds the values), held to what max_share still allows."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import TargetError
from aishell.handlers.purge.archivefile import ArchiveFile, encode_rows
from aishell.handlers.purge.archivekept import copy_and_delete
from aishell.handlers.purge.batchsql import RANGE, BatchSql
from aishell.handlers.purge.exactread import exact_reads, sent_exactly
from aishell.handlers.purge.infinite import read_infinite_dates
from aishell.handlers.purge.ownership import BatchBytes
from aishell.sqltext import text


class OverLimit(Exception):
    """A batch's DELETE reported more rows than max_share still allows (uncommitted)."""


def _at_most(count: int, most: int | None) -> int:
    if most is not None and count > most:
        raise OverLimit(count)
    return count


def delete_batch(
    conn: Connection,
    batch: BatchSql,
    values: dict[str, Any],
    first: bool,
    archive: ArchiveFile | None,
    most: int | None = None,
    form: str = RANGE,
) -> tuple[int, BatchBytes | None]:
    """Delete (and archive into a table) one batch, uncommitted; returns the rows and, for
    an archive file, the bytes to append to it (not yet written). More rows than `most`
    raise OverLimit."""
    statements = batch.work(first, form)
    if archive is None and not batch.archive_table:
        return _at_most(conn.execute(text(statements[0]), values).rowcount, most), None
    if batch.archive_table:
        # One transaction holds the copy and the delete (on PostgreSQL one statement):
        # both commit, or neither, so a batch done again never copies a row twice. What
        # the delete sets off must leave the copies as they were (archivekept.py).
        return _at_most(copy_and_delete(conn, batch, statements, values, first), most), None
    assert archive is not None
    read_infinite_dates(conn)  # a row dated -infinity is archived as such
    with exact_reads(conn):  # JSON and intervals as the server's text
        result = conn.execute(text(statements[0]), values)
        sent = result.fetchall()
        columns, rows = sent_exactly(
            conn, batch.table, list(result.keys()), sent, batch.reads_settings()
        )
    # What the rows' text was written under, kept for a resume's comparison with them.
    under = tuple(sorted({str(row[-1]) for row in sent})) if batch.reads_settings() else ()
    if len(statements) == 2:  # MySQL: the rows were selected FOR UPDATE; now delete them
        count = conn.execute(text(statements[1]), values).rowcount
        if count != len(rows):
            raise TargetError(
                f"archived {len(rows)} rows but deleted {count}; the batch was rolled back"
            )
    _at_most(len(rows), most)
    return len(rows), BatchBytes(archive.offset, encode_rows(columns, rows), under)
