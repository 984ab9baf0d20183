"""Can a purge run on this table? Asked once, when its job is planned, so that a purge
bound to fail is refused before its first step rather than in the middle of a run."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Connection

from aishell.files import PrivatePlaces
from aishell.handlers.purge.appreach import refuse_reached_app_code
from aishell.handlers.purge.archive import check_archive_path, check_archive_table
from aishell.handlers.purge.archiveshape import check_durable
from aishell.handlers.purge.cutoff import describe
from aishell.handlers.purge.prepare import walk_key
from aishell.handlers.purge.tableindexes import indexes_of
from aishell.handlers.sqlite.appcode import refuse_purge_app_code
from aishell.targets.catalog import check_column


def check_purge(
    conn: Connection,
    table: str,
    date_column: str,
    *,
    archive_table: str | None = None,
    archive_file: str | None = None,
) -> None:
    """Refuse, in one line, a purge of `table` by `date_column` that cannot work here: a
    column that is missing or holds no dates, no key to walk in batches, an archive table
    of another shape, an archive file that is already there."""
    if conn.dialect.name == "sqlite":
        # First: a virtual table of the application's module cannot even list its columns.
        refuse_purge_app_code(conn, table, date_column, archive_table)
        refuse_reached_app_code(conn, table)
    check_column(conn, table, date_column)
    indexes = indexes_of(conn, table)
    describe(conn, table, date_column, indexes)
    walk_key(conn, table, indexes)
    if archive_table:
        check_archive_table(conn, table, archive_table)
    else:
        check_durable(conn, table, None)
    if archive_file:
        # What stands at the path now; the run checks it again, and aishell's own
        # folders, before it makes the file.
        check_archive_path(Path(archive_file), PrivatePlaces())
    # The checks read the table in a transaction the caller did not ask for: ended here,
    # so that it holds no snapshot or table lock while planning goes on.
    conn.rollback()
