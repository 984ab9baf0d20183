"""Where a purge keeps the rows it deletes: an archive table, checked to be another table
shaped like the purged one that the purge's own DELETE does not write (a foreign key's
action, a trigger's code: each batch holds to it too, archivekept.py), or an archive
file, cut back on every start to the length checkpointed with the last committed batch,
so each row is archived exactly once. The file is new, outside the folders aishell keeps
for itself, and only the run that made it (known by device and inode in its checkpoint)
writes to it again; what it may cut off, and which other run it refuses, is
ownership.py's."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.diskfaults import is_no_space, no_space_line
from aishell.errors import StepFailed, TargetError, UsageError
from aishell.files import ErrorKind, PrivatePlaces, kind_of
from aishell.guard.writereach import write_reach
from aishell.handlers.purge.archivefile import ArchiveFile
from aishell.handlers.purge.archiveshape import check_durable, check_plain_archive
from aishell.handlers.purge.ownership import (
    ARCHIVE_PATH,
    archive_key,
    cut_back,
    refuse_if_claimed,
)
from aishell.sqltext import display, quote_identifier, text
from aishell.targets.catalog import table_columns
from aishell.tool.context import ToolContext


def check_archive_table(conn: Connection, table: str, archive: str) -> list[str]:
    """Refuse an archive table that is the purged table itself, not shaped like it, that
    runs code on insert, or that would not keep a batch's copies as its transaction
    does, nor the purged table's either (archiveshape.py); the columns its copies name."""
    if _same_table(conn, table, archive):
        # Rows copied into the table they are deleted from would be counted as
        # archived and deleted while the table kept them all.
        raise TargetError(
            f"the archive table {archive!r} is the table being purged ({table!r}); "
            "archive into another table"
        )
    wanted = _columns(conn, table)
    found = _columns(conn, archive)
    if not found:
        # A dotted name is one table's whole name, never a schema or database and a
        # table in it: the archive is kept beside the purged table.
        whole = (
            " (the name is taken whole, as one table's in the purged table's schema: an "
            "archive in another schema or database cannot be given)"
            if "." in archive
            else ""
        )
        raise TargetError(
            f"archive table {archive} does not exist{whole}; create it with the columns of "
            f"{table} in the same order (e.g. {_made_like(conn, table, archive)})"
        )
    if found != wanted:
        raise TargetError(
            f"archive table {archive} has columns ({', '.join(found)}), "
            f"not those of {table} ({', '.join(wanted)}) in the same order"
        )
    check_plain_archive(conn, table, archive)
    if conn.dialect.name == "postgresql":
        _check_pg_nulls(conn, table, archive)
    # The purged table's engine too, in the same query (prepare.py checks it alone).
    check_durable(conn, table, archive)
    _refuse_reached_archive(conn, table, archive)
    return table_columns(conn, archive, stored_only=True)


# The statement that makes an archive table of the purged table's columns, in the
# target's own SQL, both names quoted as it needs them: {a} the archive, {t} the table.
# SQLite has no LIKE: a query of no row gives the columns in order, each of its
# column's type affinity (the archive's shape check compares those).
_MADE_LIKE = {
    "postgresql": "CREATE TABLE {a} (LIKE {t})",
    "mysql": "CREATE TABLE {a} LIKE {t}",
    "sqlite": "CREATE TABLE {a} AS SELECT * FROM {t} WHERE 0",
}


def _made_like(conn: Connection, table: str, archive: str) -> str:
    """The target's statement that makes the archive table, as a person copies it."""
    quoted = {
        name: display(quote_identifier(conn.dialect, v))
        for name, v in (("a", archive), ("t", table))
    }
    return _MADE_LIKE[family(conn.dialect.name)].format(**quoted)


# Each column of the purged table and of the archive table, in order, and whether it
# refuses NULL. PostgreSQL converts no value on a copy: of a column's definition, only
# its type (_PG_PROBLEMS compares it) could change what is copied, and a NOT NULL the
# purged column lacks fails the batch that copies a NULL (a collation orders values and
# changes none).
_PG_NOT_NULL = (
    "SELECT c.relname = :a, a.attname::pg_catalog.text, a.attnotnull "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname IN (:t, :a) AND n.nspname = pg_catalog.current_schema() "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)


def _check_pg_nulls(conn: Connection, table: str, archive: str) -> None:
    """Refuse, in one line, an archive table whose column refuses the NULLs the purged
    table's column (by position) holds: the batch that copies one would fail midway."""
    found: dict[bool, list[tuple[str, bool]]] = {True: [], False: []}
    for is_archive, name, not_null in conn.execute(text(_PG_NOT_NULL), {"t": table, "a": archive}):
        found[bool(is_archive)].append((str(name), bool(not_null)))
    refused = [
        name
        for (name, not_null), (_, source_not_null) in zip(found[True], found[False], strict=False)
        if not_null and not source_not_null
    ]
    if refused:
        raise TargetError(
            f"archive table {archive} refuses NULL in column {', '.join(refused)}, where "
            f"{table} takes it: a batch that copies a NULL there would fail; let it take "
            f"NULL (ALTER TABLE {archive} ALTER COLUMN {refused[0]} DROP NOT NULL), or "
            "archive to a file"
        )


# What a write does to the archive table, as said.
_DOES = {
    "DELETE": "deletes rows of",
    "UPDATE": "updates rows of",
    "INSERT": "inserts rows into",
    "TRUNCATE": "empties",
}


def _refuse_reached_archive(conn: Connection, table: str, archive: str) -> None:
    """Refuse, in one line, an archive table that the purge's own DELETE writes, as its
    write reach finds it (guard/writereach.py): a foreign key of the archive table's that
    references the purged table (ON DELETE CASCADE deletes each copy as its row goes, SET
    NULL changes it), or a trigger or rule whose code writes it, in each batch's own
    transaction, after the copy. The copies would be gone or changed while the purge
    said every row archived. (What no body's text shows, each batch looks for itself:
    archivekept.py.)"""
    reach = write_reach(conn, [f"DELETE FROM {quote_identifier(conn.dialect, table)}"])
    # Beyond the DELETE's own: what foreign keys' actions and code's bodies write.
    beyond = (reach.by_keys + reach.by_bodies) if reach is not None else []
    if reach is None or not beyond:
        return
    here = _current_schema(conn)
    write = next(
        (
            w
            for w in beyond
            if (w.schema is None or _folded(conn, w.schema) == here)
            and _same_table(conn, archive, w.table)
        ),
        None,
    )
    if write is None:
        return
    if write in reach.by_keys:
        how = "a foreign key's action"
        named = re.compile(rf"(?:^|[\s.]){re.escape(archive)}\.", re.IGNORECASE)
        shown = [c for c in reach.cascades if named.search(c)]
    else:
        how = "the code of a trigger or rule it fires"
        shown = list(reach.fires)
    raise TargetError(
        f"archive table {archive} cannot keep a purge's copies: the DELETE from {table} "
        f"{_DOES.get(write.event, 'writes')} it through {how}"
        + (f" ({'; '.join(shown)})" if shown else "")
        + ", in each batch's transaction after its copy, so the copies would be gone or "
        "changed while the purge said every row archived; drop that foreign key or "
        "trigger, or archive into another table or to a file"
    )


def _current_schema(conn: Connection) -> str:
    """The schema (MySQL: database) the archive table is in, as _folded compares it."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return str(conn.execute(text("SELECT pg_catalog.current_schema()")).scalar())
    if family(dialect) == "mysql":
        return _folded(conn, str(conn.execute(text("SELECT DATABASE()")).scalar()))
    return "main"


def _folded(conn: Connection, schema: str) -> str:
    """A schema's name as the server compares it: SQLite folds ASCII case, MySQL
    databases' names fold where lower_case_table_names is 1 or 2."""
    if conn.dialect.name == "sqlite":
        return schema.lower()
    if family(conn.dialect.name) == "mysql":
        folding = int(conn.execute(text("SELECT @@lower_case_table_names")).scalar() or 0)
        return schema.lower() if folding else schema
    return schema


def _columns(conn: Connection, table: str) -> list[str]:
    """The table's columns in order, generated ones too (SQLite's table_info leaves them
    out): the archive holds a purged row's generated values as plain columns."""
    if conn.dialect.name != "sqlite":
        return table_columns(conn, table)
    found = conn.execute(text(_SQLITE_COLUMNS), {"t": table})
    return [str(name) for (name,) in found]


# hidden 1 is a virtual table's hidden column; 2 and 3 are generated ones.
_SQLITE_COLUMNS = "SELECT name FROM pragma_table_xinfo(:t) WHERE hidden <> 1 ORDER BY cid"


def _same_table(conn: Connection, table: str, other: str) -> bool:
    """Whether two names reach one table, as the server resolves a quoted name: SQLite
    folds ASCII case; MySQL folds case when lower_case_table_names is 1 or 2;
    PostgreSQL matches exactly (compared by the table's oid where it exists)."""
    if table == other:
        return True
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # NOCASE folds ASCII letters only, exactly as SQLite matches table names.
        same = conn.execute(text("SELECT :a = :b COLLATE NOCASE"), {"a": table, "b": other})
        return bool(same.scalar())
    if family(dialect) == "mysql":
        folding = int(conn.execute(text("SELECT @@lower_case_table_names")).scalar() or 0)
        return folding != 0 and table.lower() == other.lower()
    if dialect == "postgresql":
        oids = [
            conn.execute(
                text(
                    "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.relnamespace "
                    "WHERE c.relname = :t AND n.nspname = pg_catalog.current_schema()"
                ),
                {"t": name},
            ).scalar()
            for name in (table, other)
        ]
        return oids[0] is not None and oids[0] == oids[1]
    return False


# The checkpoint's record of the archive file the run made: its device and inode.
ARCHIVE_ID = "archive_file_id"
# And of the last bytes it wrote for its committed batches (ArchiveFile.tail_of): a
# file put in its place may have the same inode number and length.
ARCHIVE_TAIL = "archive_tail"
# What a checkpoint knows of the file itself, dropped when the file is made again.
_FILE_KEYS = (ARCHIVE_ID, ARCHIVE_TAIL)


def check_archive_path(path: Path, private: PrivatePlaces, error: ErrorKind = UsageError) -> None:
    """Refuse, in one line, an archive path that is already there (a file, a directory, a
    device, a link) or lies in a folder aishell keeps for itself."""
    if os.path.lexists(path):
        kind = kind_of(os.lstat(path).st_mode)
        raise error(
            f"archive file {path} already exists ({kind}); a purge archives only into a new "
            "file it makes: give a path that does not exist yet"
        )
    folder = next((p for p in path.parents if os.path.lexists(p)), None)
    if folder is not None and not folder.is_dir():
        raise error(f"archive file {path}: {folder} is not a folder")
    why = private.refusal(path)
    if why is not None:
        raise error(f"archive file {path}: {why}; archive into a folder of its own")


def open_archive(
    params: Mapping[str, Any],
    ctx: ToolContext,
    keep: int | None,
    progress: Mapping[str, Any],
    doubt: Mapping[str, Any] | None = None,
) -> tuple[ArchiveFile, ToolContext]:
    """The archive file, and the context whose checkpoints name it. On a first start the
    file is made new, named in the checkpoint first; later, it is the file this run made,
    cut back to the `keep` bytes checkpointed with the last committed batch (`doubt`:
    the pending checkpoint of a batch that did not commit, whose bytes alone are cut)."""
    path = Path(params["archive_file"])
    key = archive_key(path)
    made = progress.get(ARCHIVE_ID)
    if isinstance(made, Mapping) and _holds_none(keep, progress) and not os.path.lexists(path):
        # Its own file, gone while it held no row: made again, as on a first start.
        made, progress = None, {k: v for k, v in progress.items() if k not in _FILE_KEYS}
    if isinstance(made, Mapping):
        archive = _reopened(path, made, keep or 0, progress, doubt, ctx.run_id)
    elif keep:
        # A checkpoint with archived bytes but no record of the file: it cannot be told
        # from a file put there since.
        raise StepFailed(
            f"archive file {path}: this purge's checkpoint does not say which file it made; "
            "it will not append to a file it cannot prove its own"
        )
    else:
        refuse_if_claimed(ctx, path)
        if progress.get(ARCHIVE_PATH) == key:
            _drop_own_empty(path)
        check_archive_path(path, ctx.private, StepFailed)
        # Named as this run's before it is made: another run asking for it is refused.
        ctx.save_progress({**progress, ARCHIVE_PATH: key})
        # A run stopped before the file's identity is checkpointed leaves it empty,
        # made again on resume (_drop_own_empty).
        archive = ArchiveFile.create(path)
        ctx.save_progress({**progress, ARCHIVE_PATH: key, ARCHIVE_ID: archive.identity})
    identity = archive.identity
    tails: dict[int, list[Any]] = {}

    def save_progress(checkpoint: dict[str, Any]) -> None:
        end = checkpoint.get("archive_offset")
        if isinstance(end, int) and end not in tails:
            # Read back once a length: the bytes of the batches committed so far.
            tails.clear()
            tails[end] = archive.tail_of(end)
        tail = tails.get(end) if isinstance(end, int) else None
        ctx.save_progress(
            {**checkpoint, ARCHIVE_ID: identity, ARCHIVE_PATH: key, ARCHIVE_TAIL: tail}
        )

    # Every checkpoint of the walk carries the file's identity with its length and the
    # digest of its last bytes.
    return archive, replace(ctx, save_progress=save_progress)


def _reopened(
    path: Path,
    made: Mapping[str, Any],
    keep: int,
    progress: Mapping[str, Any],
    doubt: Mapping[str, Any] | None,
    run_id: str | None,
) -> ArchiveFile:
    """The file this run made, cut back to the `keep` bytes of its committed batches."""
    fix = f"put back the file this purge made, then `aishell resume {run_id}`"
    if _holds_none(keep, progress):
        fix = f"remove it (no row of this purge's is in it yet) or {fix}"
    archive = ArchiveFile.reopen(path, made, keep, fix, _known_bytes(progress, keep))
    try:
        cut_back(archive, keep, doubt, run_id)
    except BaseException:
        archive.close()
        raise
    return archive


def _holds_none(keep: int | None, progress: Mapping[str, Any]) -> bool:
    """Whether the checkpoint says no batch has archived a byte into the run's file, and
    none was about to (a pending batch's bytes may be its committed rows' only copy): its
    rows are all still in the table, and the file, gone, is made again. Otherwise a file
    removed as an empty leftover would stop the run for good, its path still claimed."""
    pending = progress.get("pending")
    end = pending.get("archive_offset") if isinstance(pending, Mapping) else None
    return not keep and not end


def _drop_own_empty(path: Path) -> None:
    """A run stopped after it named the file as its own and made it, before it could
    checkpoint the file's identity, left it empty: nothing was archived (no batch commits
    without that checkpoint), and it is removed to be made again. Anything else there (a
    link, a file with bytes, another user's) is left, and refused as any file is."""
    try:
        found = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(found.st_mode) and found.st_size == 0 and found.st_uid == os.geteuid():
        path.unlink()


def _known_bytes(progress: Mapping[str, Any], keep: int | None) -> list[list[Any]]:
    """The stretches of the file whose digest the checkpoint holds, to be found again on
    reopen: the tail of its committed batches, and the batch it judged committed since
    (its pending bytes, which end at `keep`)."""
    known = []
    tail = progress.get(ARCHIVE_TAIL)
    if isinstance(tail, list) and len(tail) == 3:
        known.append(tail)
    pending = progress.get("pending")
    if isinstance(pending, Mapping) and pending.get("archive_digest") is not None:
        start, end = pending.get("archive_from"), pending.get("archive_offset")
        if isinstance(start, int) and isinstance(end, int) and end == keep and start < end:
            known.append([start, end, pending["archive_digest"]])
    return known


def full_disk_named(
    run: Callable[[Mapping[str, Any], ToolContext], dict[str, Any]],
) -> Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]:
    """The purge, whose archive file's full disk ends the step with the one line every
    full disk gets (diskfaults.no_space_line), and any other error writing it (a file size
    limit, an I/O error) with one line naming the file, not as an internal error. The
    batch being written had not committed: its rows are still in the table, and resume
    cuts the file back to its last checkpoint."""

    def purge(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        try:
            return run(params, ctx)
        except OSError as exc:
            if not params.get("archive_file"):
                raise
            path = Path(params["archive_file"])
            if is_no_space(exc):
                fix = f"free space there, then `aishell resume {ctx.run_id}`"
                line = no_space_line(path, "archiving purged rows to", fix, exc)
                raise StepFailed(line) from None
            if exc.filename != str(path):
                raise
            raise StepFailed(_not_written(path, exc, ctx.run_id)) from None

    return purge


def _not_written(path: Path, exc: OSError, run_id: str | None) -> str:
    """The one line for an archive file the purge could not write, and the way on."""
    why, fix = exc.strerror or type(exc).__name__, "fix that"
    if exc.errno == errno.EFBIG:
        why += (
            ", past the largest file this process may write: its file size limit "
            "(`ulimit -f`) or the file system's"
        )
        fix = "raise that limit"
    return (
        f"archive file {path} could not be written: {why}; the batch being written had "
        f"not committed, its rows are still in the table: {fix}, then `aishell resume {run_id}`"
    )
