"""Backups of database servers, each in one pass over the data: the dump tool's output is
written to the backup file, hashed, and read for each table's rows as it streams.

PostgreSQL: pg_dump dumps under a snapshot exported from a REPEATABLE READ transaction
that stays open until it is done. The rows of each table are counted in that snapshot
(count(*) of each, which sees exactly the rows pg_dump copies), on a thread of their
own while the dump streams: the server's count costs a small part of the CPU that
inflating the archive's rows in aishell did (pgarchive.py). The archive's header names
the pg_dump. The checksums of small tables are read in the same snapshot afterwards.
MySQL/MariaDB: counts and checksums are read from the dump itself as it streams
(aishell/handlers/backup/mysql_dump.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from aishell.errors import StepFailed
from aishell.handlers.backup import pgincrement
from aishell.handlers.backup.disk import partial_file, writing
from aishell.handlers.backup.lockwait import SILENCE_SECONDS, LockWatch
from aishell.handlers.backup.manifest import FROM_DUMP, FROM_SNAPSHOT, changed_tables
from aishell.handlers.backup.measure import (
    CHECKSUM_ROWS,
    table_checksums,
    table_sums,
)
from aishell.handlers.backup.mysql_dump import (
    IN_ORDER,
    DumpFile,
    read_chunks,
    read_dump,
    write_tables,
)
from aishell.handlers.backup.pgarchive import Archive, ArchiveUnreadable, read_header
from aishell.handlers.backup.processes import (
    mysql_dump_argv,
    pg_args,
    server_env,
    tool_version,
)
from aishell.handlers.backup.reporting import ByteProgress
from aishell.handlers.backup.searched import dumped_schemas
from aishell.handlers.backup.snapcounts import (
    Relation,
    counting,
    pg_counts,
    refuse_unreadable,
    relation_rows,
    table_trees,
)
from aishell.handlers.backup.snapshot import (
    SNAPSHOT,
    SNAPSHOT_EXPORT,
    SNAPSHOT_LOCK_WAIT,
    SNAPSHOT_ONE_CORE,
)
from aishell.handlers.backup.stream import stream_into
from aishell.sqltext import text
from aishell.targets.catalog import user_tables
from aishell.targets.limits import OUTSIDE_STEPS_OPTION
from aishell.tool.context import ToolContext

# How a PostgreSQL manifest's row counts were made (backups made before counted the
# archive's rows as it was written: COUNTED_IN_ARCHIVE).
COUNTED_IN_ARCHIVE = "the rows of each table in the archive, counted as it was written"
COUNTED_IN_SNAPSHOT = "count(*) of each table in the dump's snapshot"


@dataclass
class Taken:
    """What one backup file holds, measured where its data came from; its sha256 when
    it was hashed as it was written."""

    counts: dict[str, int]
    checksums: dict[str, str]
    changed: list[str]
    dropped: list[str]
    tool: str
    server: str
    measured_from: str
    sha256: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# --- PostgreSQL ---------------------------------------------------------------------------


def take_postgresql(
    final: Path, ctx: ToolContext, parent: dict[str, Any] | None, lock_wait: float
) -> Taken:
    conn = ctx.connection
    server = str(conn.execute(text("SHOW server_version")).scalar())
    # One snapshot for the dump, the checksums and whatever is counted over SQL: held
    # open until pg_dump is done, so they describe the same data however the
    # application writes.
    with ctx.side_session(SNAPSHOT) as snap:
        try:
            snap.begin()
            # What is read in the snapshot (an increment's checksums before the dump, the
            # counts while it streams, small tables' checksums after it) waits for a table
            # lock as long as the dump may.
            snap.execute(
                text(SNAPSHOT_LOCK_WAIT),
                {"wait": f"{math.ceil(lock_wait * 1000)}ms"},
            )
            # The counts run beside pg_dump on one core, not on the server's parallel
            # workers, which would take the cores pg_dump and its COPYs need.
            snap.execute(text(SNAPSHOT_ONE_CORE))
            refuse_unreadable(snap)
            # The schema whose tables the manifest names: a restore checks that its
            # target's sessions search it (pg_restore makes each table in its own schema).
            schema = snap.execute(text("SELECT pg_catalog.current_schema()")).scalar()
            # And the dump's schemas, in the order its names are found by (searched.py).
            names = dumped_schemas(snap)
            snapshot = str(snap.execute(text(SNAPSHOT_EXPORT)).scalar())
            trees = table_trees(snap)
            sums, changed, dropped = _pg_changes(snap, trees, parent)
            tops = {table: tree[0].oid for table, tree in trees.items()}
            held = pgincrement.holds(snap, snapshot, tops, parent, changed, ctx, lock_wait)
            if held.whole is not None:
                parent, changed, dropped = None, list(trees), []
            archive: Archive | None = Archive()
            sha: str | None = None
            with partial_file(final, ctx) as partial:
                if parent and not changed:
                    partial.write_bytes(b"")  # nothing changed: an empty increment
                    own = relation_rows(snap, trees, sums)
                else:
                    only = held.relations if parent else None
                    expected = _pg_data_size(snap, changed if parent else None)
                    with counting(snap, trees, sums, ctx) as own:
                        archive, sha = _pg_dump(partial, snapshot, only, ctx, lock_wait, expected)
                    changed = held.tables if parent else changed
            counts = pg_counts(trees, own)
            checksums = {t: checksum for t, (_rows, checksum) in sums.items()}
            small = {t: n for t, n in counts.items() if n <= CHECKSUM_ROWS and t not in checksums}
            checksums.update(table_checksums(snap, small))
            held.notes = held.notes or pgincrement.recorded(snap, snapshot, ctx, lock_wait)
            held.notes[TREE_MEMBERS] = tree_members(trees)
        finally:
            snap.rollback()

    # The archive names its pg_dump (`pg_dump --version`, Debian's Perl wrapper, takes 0.1 s).
    tool = archive.pg_dump if archive and archive.pg_dump else tool_version("pg_dump")
    how = {"counted": COUNTED_IN_SNAPSHOT, "schema": schema, **names, **held.notes}
    checksums = dict(sorted(checksums.items()))
    return Taken(counts, checksums, changed, dropped, tool, server, FROM_SNAPSHOT, sha, how)


# The relations each table's count covers besides its own (those inheriting from it, a
# partitioned table's partitions), as [schema, name]: a quick validation sums their
# rows in the archive as the count did (decode.py).
TREE_MEMBERS = "tree_members"


def tree_members(trees: dict[str, list[Relation]]) -> dict[str, list[list[str]]]:
    return {
        table: [[rel.schema, rel.name] for rel in tree]
        for table, tree in trees.items()
        if len(tree) > 1
    }


def _pg_dump(
    partial: Path,
    snapshot: str,
    only: list[str] | None,
    ctx: ToolContext,
    lock_wait: float,
    expected: int,
) -> tuple[Archive | None, str]:
    """pg_dump of the snapshot (only the relations named, quoted and qualified, if any)
    streamed into partial: its archive's header as read on the way, and its sha256;
    stopped if it waits lock_wait seconds for a table lock. `expected`: the bytes of
    table data it should copy."""
    url = ctx.connection.engine.url
    # Double quotes make a pg_dump pattern match exactly that one relation.
    tables = [f"--table={relation}" for relation in only or []]
    argv = ["pg_dump", "-Fc", "--snapshot", snapshot, *tables, *pg_args(url), str(url.database)]
    watch = LockWatch.for_postgresql(ctx.connection, "pg_dump", lock_wait)
    progress = CopyProgress(ctx, watch.name, expected)
    found = stream_into(
        partial,
        argv,
        server_env(url) | {"PGAPPNAME": watch.name},
        ctx,
        _header,
        progress,
        quiet=(SILENCE_SECONDS, watch),
    )
    progress.finish()
    return found


# The bytes of table data each COPY of the named session has sent (PostgreSQL 14 on).
_PG_COPIED = """
SELECT p.relid, p.bytes_processed
FROM pg_catalog.pg_stat_progress_copy p JOIN pg_catalog.pg_stat_activity a ON a.pid = p.pid
WHERE a.application_name = :name
"""
# How often the server is asked how far the dump's COPYs got.
COPY_POLL_SECONDS = 1.0


class CopyProgress(ByteProgress):
    """The progress display of a pg_dump: the bytes of table data its COPYs sent, as
    the server counts them (pg_stat_progress_copy), asked at most every
    COPY_POLL_SECONDS as the archive streams; each table's last figure seen stays
    counted once its COPY is done. Before PostgreSQL 14 the figures come at the end."""

    def __init__(self, ctx: ToolContext, name: str, expected: int) -> None:
        super().__init__(ctx.report, expected)
        conn = ctx.connection
        self._conn = conn if (conn.dialect.server_version_info or (0,)) >= (14,) else None
        self._name = name
        self._copied: dict[int, int] = {}
        self._asked = time.monotonic()

    def add(self, count: int) -> None:
        """The archive streamed `count` more (compressed) bytes: ask the server now and
        then."""
        if self._conn is None or time.monotonic() - self._asked < COPY_POLL_SECONDS:
            return
        self._asked = time.monotonic()
        look = {OUTSIDE_STEPS_OPTION: True}
        try:
            self._conn.execute(
                text("SELECT pg_catalog.pg_stat_clear_snapshot()"), execution_options=look
            )
            for relid, sent in self._conn.execute(
                text(_PG_COPIED), {"name": self._name}, execution_options=look
            ):
                self._copied[int(relid)] = max(self._copied.get(int(relid), 0), int(sent))
        except SQLAlchemyError:
            self._conn = None  # the display goes without; the dump does not
            return
        self.reached(sum(self._copied.values()))

    def finish(self) -> None:
        """The dump ended well: every table's data was copied, however few of its
        figures the server was asked for (a dump shorter than COPY_POLL_SECONDS, or
        before PostgreSQL 14)."""
        self.reached(max(self.done, self.total or 0))
        super().finish()


def _pg_changes(
    snap: Connection, trees: dict[str, list[Relation]], parent: dict[str, Any] | None
) -> tuple[dict[str, tuple[int, str]], list[str], list[str]]:
    """For an increment: the rows and checksum of each table the parent has a checksum
    of, the tables that differ from the parent (a table the parent has no checksum of
    is always taken), and the tables gone since. A full backup takes every table."""
    if not parent:
        return {}, list(trees), []
    sums = table_sums(snap, [t for t in parent.get("checksums") or {} if t in trees])
    changed, dropped = changed_tables(
        parent,
        {t: sums[t][0] if t in sums else -1 for t in trees},
        {t: checksum for t, (_rows, checksum) in sums.items()},
    )
    return sums, changed, dropped


def _header(chunks: Iterator[bytes]) -> Archive | None:
    """The archive's header (which pg_dump wrote it); None if the archive is not one
    pgarchive reads."""
    try:
        return read_header(chunks)
    except ArchiveUnreadable:
        return None


# The size on disk of the tables whose data pg_dump dumps (with their TOAST, without
# their indexes): what the dump's uncompressed table data comes close to. The tables of
# every schema but the system's for a whole database; for an increment, those named.
# From pg_class's page counts (as of the last VACUUM or ANALYZE), not pg_table_size,
# which takes a lock on each table: the dump must be the first to wait behind one, in
# the open where it can be seen and stopped. A table never vacuumed nor analyzed counts
# as empty; a dump that outgrows the estimate shows no time left.
_PG_DATA_SIZE = """
SELECT coalesce(pg_catalog.sum(c.relpages + coalesce(t.relpages, 0)), 0)::bigint
       * pg_catalog.current_setting('block_size')::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema'
  AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_%'
"""


def _pg_data_size(snap: Connection, only: list[str] | None) -> int:
    """The bytes a dump's table data is expected to come to, read in one query."""
    if only is None:
        return int(snap.execute(text(_PG_DATA_SIZE)).scalar_one())
    named = " AND n.nspname = pg_catalog.current_schema() AND c.relname = ANY(:names)"
    return int(snap.execute(text(_PG_DATA_SIZE + named), {"names": only}).scalar_one())


# --- MySQL / MariaDB ------------------------------------------------------------------------


def take_mysql(
    final: Path, ctx: ToolContext, parent: dict[str, Any] | None, lock_wait: float
) -> Taken:
    conn = ctx.connection
    url = conn.engine.url
    argv = mysql_dump_argv(url, str(url.database))
    tool = tool_version(argv[0])
    server = str(conn.execute(text("SELECT VERSION()")).scalar())
    env = server_env(url)
    # The dumped database: a restore into another checks that the dump's triggers,
    # routines, events and views do not name it (restore.py).
    notes = {"checksum_method": IN_ORDER, "database": str(url.database)}
    # The dump's text comes close to the tables' data (without their indexes).
    progress = ByteProgress(ctx.report, _my_data_size(conn))
    quiet = (SILENCE_SECONDS, LockWatch.for_mysql(conn, argv[0], lock_wait))
    # The database's tables as its catalog has them when the dump starts: the dump must
    # hold each (one left out by an option or a wrapper is no backup of it).
    listed = user_tables(conn)
    if parent is None:
        with partial_file(final, ctx) as partial:
            dump, sha = stream_into(partial, argv, env, ctx, read_chunks, progress, quiet)
            progress.finish()
            whole_dump(dump, listed, conn, argv[0])
        counts, checksums = dump.counts(), dump.checksums()
        return Taken(counts, checksums, list(counts), [], tool, server, FROM_DUMP, sha, notes)
    # An increment is cut from a whole dump: which tables changed is known only from
    # the rows of one snapshot, and a second dump would see other rows. A parent whose
    # checksums were made another way matches no table: every table is taken.
    whole = final.with_name(final.name + ".whole.partial")
    with ctx.scratch.file(whole), writing(whole, "writing"):
        dump, _sha = stream_into(whole, argv, env, ctx, read_chunks, progress, quiet)
        progress.finish()
        whole_dump(dump, listed, conn, argv[0])
        counts, checksums = dump.counts(), dump.checksums()
        changed, dropped = changed_tables(parent, counts, checksums)
        with partial_file(final, ctx) as partial:
            if not changed:
                partial.write_bytes(b"")  # nothing changed: an empty increment
            else:
                with partial.open("wb") as out:
                    written = write_tables(whole, dump, set(changed), out)
                _check_increment(partial, written, dump, argv[0])
                changed = sorted(written)
    return Taken(counts, checksums, changed, dropped, tool, server, FROM_DUMP, None, notes)


def whole_dump(dump: DumpFile, listed: list[str], conn: Connection, tool: str) -> None:
    """Refuse a dump that is not whole: one that does not end as the dump tool ends one
    (its "-- Dump completed" line, nothing after it), or that lacks a table the
    database's catalog listed as it started and still lists (a table dropped meanwhile
    is simply not in the backup)."""
    if not dump.complete or dump.past_end:
        how = "goes on past its last line" if dump.complete else "has no last line"
        raise StepFailed(
            f'{tool}\'s dump {how} ("-- Dump completed"): it is not one whole dump, '
            f"and was not kept; check what runs as {tool} on PATH, and retry"
        )
    missing = [t for t in listed if t not in dump.tables]
    if missing:
        still = set(user_tables(conn))
        lost = [t for t in missing if t in still]
        if lost:
            shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            raise StepFailed(
                f"{tool}'s dump lacks tables the database holds: {shown}; it was not "
                f"kept: check the options of {tool} on PATH (an --ignore-table?), and retry"
            )


def _my_data_size(conn: Connection) -> int:
    return int(
        conn.execute(
            text(
                "SELECT coalesce(sum(DATA_LENGTH), 0) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')"
            )
        ).scalar_one()
    )


def _check_increment(partial: Path, written: set[str], whole: DumpFile, tool: str) -> None:
    """The increment must hold exactly the tables, rows and contents its manifest will say
    it holds."""
    cut = read_dump(partial)
    if set(cut.tables) != written or any(
        cut.tables[t].checksum != whole.tables[t].checksum
        or cut.tables[t].rows != whole.tables[t].rows
        for t in written
    ):
        raise StepFailed(
            f"The increment cut from {tool}'s dump does not hold exactly the "
            "changed tables; take a full backup instead (`aishell run backup "
            "--type full`)"
        )
