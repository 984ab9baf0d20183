"""Taking a full or incremental backup of each kind of database, and its manifest.

A backup is written under a temporary name, synced, and renamed only when whole; its
manifest is written beside it the same way. The counts and checksums describe exactly
the rows the file holds, even while the application writes: SQLite's are read from the
copy, PostgreSQL's from the archive as it streams and inside the snapshot pg_dump is
given, MySQL/MariaDB's from the dump itself as it streams (dumps.py).
"""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.errors import StepFailed
from aishell.handlers.backup import sqliteincrement
from aishell.handlers.backup.disk import destination, partial_file
from aishell.handlers.backup.dumps import Taken, take_mysql, take_postgresql
from aishell.handlers.backup.elsewhere import this_host
from aishell.handlers.backup.manifest import (
    FROM_COPY,
    FROM_DUMP,
    changed_tables,
    read_manifest,
    sha256_of,
    write_manifest,
)
from aishell.handlers.backup.measure import (
    CHECKSUM_ROWS,
    NOT_COUNTED,
    sqlite_armed,
    sqlite_checksums,
    sqlite_counts,
    sqlite_integrity,
    sqlite_tables,
    sqlite_unread,
)
from aishell.handlers.backup.pgincrement import TAKEN_WHOLE
from aishell.handlers.backup.processes import mysql_dump_argv, pg_args, refuse_no_database
from aishell.handlers.backup.reporting import ByteProgress
from aishell.handlers.mysql.catalog import (
    FILES_MARIADB,
    FILES_MYSQL,
    TABLES,
    is_mariadb,
    used_bytes,
)
from aishell.handlers.sqlite.appcode import app_code
from aishell.scratch.leftovers import BACKUP
from aishell.sqltext import text
from aishell.state.backups import DATABASE_KEY, database_of, refused
from aishell.targets.appcode import stops_rewrite
from aishell.targets.catalog import user_tables
from aishell.targets.identity import backup_identity
from aishell.targets.sqlitewait import heeding_waits
from aishell.tool.context import ToolContext
from aishell.units import exact, stamp

# --- calculate_backup_size ---------------------------------------------------------------


# The database's size, as each engine tells it.
# What catalog.used_bytes reads: the tablespace files (MariaDB's or MySQL's), the tables.
MYSQL_SIZE_READS = (FILES_MARIADB, FILES_MYSQL, "SELECT DATABASE()", TABLES)
SIZE_SQL = {
    "postgresql": "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())",
    "sqlite": "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
}


def size_statements(dialect: str, mariadb: bool = True) -> list[str]:
    """What the size step sends on an engine: SIZE_SQL's statement, or on MySQL and
    MariaDB catalog.used_bytes's reads (the server's own table of files)."""
    if family(dialect) == "mysql":
        return [FILES_MARIADB if mariadb else FILES_MYSQL, "SELECT DATABASE()", TABLES]
    return [SIZE_SQL[family(dialect)]]


def render_size(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    conn = ctx.connection
    return size_statements(ctx.dialect, conn is None or is_mariadb(conn))


def backup_size(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return {**_space(ctx, "full"), "tables": len(user_tables(ctx.connection))}


# What the free space must hold beyond the estimate of a backup's size.
SPACE_MARGIN = 1.2


def _database_bytes(conn: Connection) -> int:
    if family(conn.dialect.name) == "mysql":
        return used_bytes(conn)
    return int(conn.execute(text(SIZE_SQL[family(conn.dialect.name)])).scalar() or 0)


def _free_for(folder: Path | None) -> tuple[int | None, Path | None]:
    """The free space where the backup folder is or will be made: the folder's own file
    system, or that of its nearest folder that exists yet (None: no folder configured,
    or none found)."""
    if folder is None:
        return None, None
    for place in (folder.absolute(), *folder.absolute().parents):
        if place.is_dir():
            try:
                return shutil.disk_usage(place).free, place
            except OSError:
                return None, None
    return None, None


def _space(ctx: ToolContext, kind: str) -> dict[str, Any]:
    """The database's size, an estimate of the backup's (size_estimate), the backup
    folder's free space (where it will be made, if it is not yet), and whether that
    holds SPACE_MARGIN times the estimate."""
    size = _database_bytes(ctx.connection)
    estimate, how = size_estimate(size, kind, ctx.connection.dialect.name, ctx.backup_catalog())
    free, where = _free_for(ctx.backup_dir)
    needed = round(estimate * SPACE_MARGIN)
    return {
        "database_bytes": size,
        "estimated_bytes": estimate,
        "estimate": how,
        "needed_bytes": needed,
        "free_bytes": free,
        **({"free_in": str(where)} if where is not None and where != ctx.backup_dir else {}),
        "enough_space": free is None or free > needed,
    }


def size_estimate(
    database: int, kind: str, dialect: str, catalog: list[dict[str, Any]]
) -> tuple[int, str]:
    """The bytes a backup of `kind` is expected to take, and how that was estimated:
    the newest earlier backup of that kind of this target (of the same engine, its
    manifest recording the database's size then) scaled by the database's growth since
    (a pg_dump archive is compressed, a dump's text is not the tables' pages); without
    one, the database's size."""
    for row in catalog:  # newest first
        manifest = row.get("manifest") or {}
        then, size = manifest.get("database_bytes"), row.get("size_bytes")
        # A row the home's key did not sign says nothing of what a backup takes.
        if row.get("kind") != kind or manifest.get("dialect") != dialect or refused(row):
            continue
        if isinstance(then, int) and then > 0 and isinstance(size, int) and size > 0:
            scaled = round(size * database / then)
            return scaled, (
                f"backup {row['id']}'s {size:,} bytes, scaled by the database's size since "
                f"({then:,} bytes then, {database:,} now)"
            )
    return database, f"the database's size, {database:,} bytes (no earlier {kind} backup to go by)"


# --- backup_database_full / backup_database_incremental -------------------------------------


def backup_full(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return _take(params, ctx, parent=None)


def backup_incremental(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    parent_path = Path(params["parent"])
    if not parent_path.is_file():
        raise StepFailed(f"The parent backup {parent_path} is not on disk")
    verified = {b["path"]: b for b in ctx.backup_catalog() if b["verified_at"]}
    if str(parent_path) not in verified:
        raise StepFailed(
            f"The parent backup {parent_path.name} was never proven restorable; an incremental "
            "chains only from a verified backup"
        )
    why = refused(verified[str(parent_path)])
    if why is not None:  # an increment of a file the catalog was pointed at since
        raise StepFailed(why)
    said = database_of(verified[str(parent_path)].get("manifest"))
    here = backup_identity(ctx.connection)
    if said != here:
        raise StepFailed(
            f"The parent backup {parent_path.name} is not of the database target "
            f"'{ctx.target}' reaches now ({here}) but of {said or 'a database it does not name'}; "
            "an incremental chains only from a backup of its own database: take a full one"
        )
    return _take(params, ctx, parent=read_manifest(parent_path) | {"path": str(parent_path)})


# What a server's backup shows for its SQL where no session renders it (`aishell tools
# show`): the dump program it starts.
DUMP_LINES = {
    "postgresql": "-- pg_dump -Fc --snapshot <exported snapshot> <database>",
    "mysql": "-- mariadb-dump --single-transaction --routines --triggers --events <database>",
}
# What only the run knows of a backup: when it is taken (and a name's random part), the
# snapshot pg_dump dumps, the tables an increment takes.
_WHEN = "<time>-<random>"
_SNAPSHOT = "<exported snapshot>"
_CHANGED = "<--table= each table changed since the parent>"


def render_backup(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """What the step sends: SQLite's VACUUM INTO (or its page copy) into the file it
    writes; on a server, the dump program as it starts it (the database, the login
    without its password), writing into that file. What only its run knows stays a
    marked placeholder (_WHEN, _SNAPSHOT, _CHANGED)."""
    kind = "incremental" if "parent" in params else "full"
    if ctx.dialect == "sqlite":
        into = "'" + _written(ctx, kind, ".sqlite").replace("'", "''") + "'"
        by_pages = page_copy_reason(ctx)
        if by_pages is not None:
            return [f"-- {PAGE_COPY} {into}: {by_pages}"]
        return [f"VACUUM INTO {into}"]
    url = ctx.connection.engine.url
    if ctx.dialect == "postgresql":
        only = [_CHANGED] if kind == "incremental" else []
        argv = ["pg_dump", "-Fc", "--snapshot", _SNAPSHOT, *only, *pg_args(url), str(url.database)]
        into = _written(ctx, kind, ".dump")
    else:
        argv = mysql_dump_argv(url, str(url.database))
        # An increment is cut from a whole dump written beside it (dumps.take_mysql).
        into = _written(ctx, kind, ".sql", ".whole" if kind == "incremental" else "")
    shown = [a if a in (_SNAPSHOT, _CHANGED) else shlex.quote(a) for a in argv]
    return [f"-- {' '.join(shown)} > {shlex.quote(into)}"]


def _written(ctx: ToolContext, kind: str, suffix: str, whole: str = "") -> str:
    """The file the step writes before it renames it (disk.destination, partial_file)."""
    folder = str(ctx.backup_dir / ctx.target) if ctx.backup_dir else "<backup folder>"
    return f"{folder}/{ctx.target}-{kind}-{_WHEN}{suffix}{whole}.partial"


def _take(
    params: Mapping[str, Any], ctx: ToolContext, parent: dict[str, Any] | None
) -> dict[str, Any]:
    dialect = ctx.connection.dialect.name
    refuse_no_database(ctx.connection.engine.url, ctx.target, "its backup")
    kind = "incremental" if parent else "full"
    # Which database the backup is of, read before the dump: what backup_required, the
    # choice of a parent and retention hold it to, whatever the target's name reaches later.
    database = backup_identity(ctx.connection)
    # Checked again as the dump starts (an increment has no step before to check it),
    # without the count of tables the step before reports.
    size = _space(ctx, kind)
    if not size["enough_space"]:
        raise StepFailed(
            f"Not enough free space in {size.get('free_in', ctx.backup_dir)}: about "
            f"{size['needed_bytes']:,} bytes needed ({exact(SPACE_MARGIN)} times the estimate, "
            f"{size['estimate']}), {size['free_bytes']:,} free"
        )
    started = time.monotonic()
    suffix = {"sqlite": ".sqlite", "postgresql": ".dump"}.get(dialect, ".sql")
    final = destination(ctx, suffix, kind)
    # Renamed into place, the file is still no backup until its manifest is beside it:
    # a crash in between leaves a file the next run removes.
    entry = ctx.scratch.record(BACKUP, str(final))
    try:
        if dialect == "sqlite":
            taken = _take_sqlite(final, ctx, parent, size["database_bytes"])
        elif dialect == "postgresql":
            taken = take_postgresql(final, ctx, parent, params["lock_wait_seconds"])
        else:
            taken = take_mysql(final, ctx, parent, params["lock_wait_seconds"])
        # The database's size then: a later backup's space check scales from this one.
        manifest = _manifest(final, ctx, kind, taken, parent) | {
            "database_bytes": size["database_bytes"],
            DATABASE_KEY: database,
        }
        write_manifest(final, manifest, ctx)
    except BaseException:
        # Without its manifest a backup is not one: nothing half-made is left behind.
        final.unlink(missing_ok=True)
        ctx.scratch.forget(entry)
        raise
    ctx.scratch.forget(entry)
    return _outcome(final, manifest, taken, parent, started)


def _manifest(
    final: Path, ctx: ToolContext, kind: str, taken: Taken, parent: dict[str, Any] | None
) -> dict[str, Any]:
    """What the manifest beside a finished backup file says of it."""
    return {
        "format": 1,
        "target": ctx.target,
        "dialect": ctx.connection.dialect.name,
        "kind": kind,
        "file": final.name,
        # Hashed as the dump streamed into the file; SQLite's copy is read once more.
        "sha256": taken.sha256 or sha256_of(final),
        "size_bytes": final.stat().st_size,
        "server_version": taken.server,
        "tool": taken.tool,
        "tables": taken.counts,
        "checksums": taken.checksums,
        "measured_from": taken.measured_from,
        "created_at": stamp(),
        # Which machine took it: read where it lies (backups/elsewhere.py).
        "hostname": this_host(),
        "parent": parent["path"] if parent else None,
        "changed": taken.changed if parent else None,
        "dropped": taken.dropped if parent else None,
        "method": None
        if not parent
        else "per table: row count and a checksum of its rows against the parent's; "
        + (
            "every table has a checksum"
            if taken.measured_from == FROM_DUMP
            else f"tables over {CHECKSUM_ROWS:,} rows are always taken"
        ),
        **taken.notes,
    }


def _outcome(
    final: Path,
    manifest: dict[str, Any],
    taken: Taken,
    parent: dict[str, Any] | None,
    started: float,
) -> dict[str, Any]:
    """The step's output, with the record the backup catalog keeps."""
    counts = taken.counts
    return {
        "backup_path": str(final),
        "sha256": manifest["sha256"],
        "size_bytes": manifest["size_bytes"],
        "tables": len(counts),
        "rows": sum(counts.values()),
        "seconds": round(time.monotonic() - started, 3),
        # Taken whole, an increment names every table it holds, and says why.
        "changed_tables": taken.changed if parent else None,
        **({TAKEN_WHOLE: manifest[TAKEN_WHOLE]} if manifest.get(TAKEN_WHOLE) else {}),
        **({NOT_COUNTED: manifest[NOT_COUNTED]} if manifest.get(NOT_COUNTED) else {}),
        "backup_record": {
            "kind": manifest["kind"],
            "path": str(final),
            "sha256": manifest["sha256"],
            "size_bytes": manifest["size_bytes"],
            "manifest": manifest,
        },
    }


# How many SQLite virtual machine instructions between two looks at the copy's size.
WATCH_INSTRUCTIONS = 100_000


@contextmanager
def _copy_watched(ctx: ToolContext, partial: Path, expected: int) -> Iterator[None]:
    """While VACUUM INTO writes the copy: its size, against the database's, for the
    progress display (looked at between instructions, at most a few times a second)."""
    progress = ByteProgress(ctx.report, expected)
    raw = ctx.connection.connection.driver_connection

    def look() -> int:
        if progress.due():
            with suppress(OSError):
                progress.reached(partial.stat().st_size)
        return 0  # go on

    if isinstance(raw, sqlite3.Connection):
        raw.set_progress_handler(look, WATCH_INSTRUCTIONS)
    try:
        yield
    finally:
        if isinstance(raw, sqlite3.Connection):
            raw.set_progress_handler(None, 0)
    with suppress(OSError):
        progress.reached(partial.stat().st_size)
    progress.finish()


PAGE_COPY = "SQLite online backup API (sqlite3_backup_step of every page at once) into"


def page_copy_reason(ctx: ToolContext) -> str | None:
    """Why the copy is taken page by page, not with VACUUM INTO: that makes every table
    and index again, and some need the application's functions or collations."""
    code = app_code(ctx)
    if not code.tables(stops_rewrite):
        return None
    return f"not VACUUM INTO, which makes every table again, and {code.said(stops_rewrite)}"


def _copy_pages(ctx: ToolContext, partial: Path) -> None:
    source = ctx.connection.connection.driver_connection
    if not isinstance(source, sqlite3.Connection):
        raise StepFailed(f"Target '{ctx.target}' is not a SQLite file")
    copy = sqlite3.connect(partial)
    try:
        # Every page in one step: one read transaction, so a writer cannot restart it.
        with heeding_waits(source) as look:
            source.backup(copy, pages=-1, progress=look)
    finally:
        copy.close()


def _take_sqlite(
    final: Path, ctx: ToolContext, parent: dict[str, Any] | None, expected: int
) -> Taken:
    by_pages = page_copy_reason(ctx)
    with partial_file(final, ctx, "copying the database to") as partial:
        # VACUUM INTO copies in one read transaction (the page-by-page backup
        # API restarts for ever while another connection keeps writing).
        with _copy_watched(ctx, partial, expected):
            if by_pages is None:
                ctx.connection.execute(text("VACUUM INTO :path"), {"path": str(partial)})
            else:
                _copy_pages(ctx, partial)
        copy = sqlite3.connect(partial)
        try:
            code, check = sqlite_armed(copy)
            result = sqlite_integrity(copy, code)
            # Counted in the copy: exactly the rows the file holds; a table no read of
            # ours can open is copied whole all the same, and named.
            unread = sqlite_unread(code)
            counts = sqlite_counts(copy, [t for t in sqlite_tables(copy) if t not in unread])
            checksums = sqlite_checksums(copy, counts, code)
            check()
            notes = sqliteincrement.recorded(copy) | ({NOT_COUNTED: unread} if unread else {})
            changed, dropped = (
                changed_tables(parent, counts, checksums) if parent else (list(counts), [])
            )
            # An increment is cut with VACUUM and restored by reloading its tables,
            # which would need the application's code as much as VACUUM INTO.
            because = by_pages and f"its copy was taken page by page, {by_pages}"
            whole = (
                sqliteincrement.taken_whole(parent, notes, changed, dropped, ctx, because)
                if parent
                else None
            )
            if whole is not None:
                notes |= whole  # the copy stays whole; its manifest names no parent
                # and it holds every table, as PostgreSQL's whole increment says.
                changed, dropped = list(counts), []
            elif parent:
                # The copy keeps only what changed since the parent.
                sqliteincrement.cut(copy, list(counts), changed)
        finally:
            copy.close()
        if result != "ok":
            raise StepFailed(f"The copy failed its integrity check: {result}")
    version = f"SQLite {sqlite3.sqlite_version}"
    tool = f"{version} {'VACUUM INTO' if by_pages is None else 'online backup API'}"
    return Taken(counts, checksums, changed, dropped, tool, version, FROM_COPY, None, notes)
