"""Full and incremental backups of all three kinds of database, with a manifest, and their
validation.

A backup is written under a temporary name, synced, and renamed only when whole; its
manifest (sha256, size, server and tool versions, tables with row counts and content
checksums) is written beside it the same way. The counts and checksums describe exactly
the rows the file holds, even while the application writes: SQLite's are read from the
copy, PostgreSQL's inside the snapshot pg_dump is given, MySQL/MariaDB's from the dump
itself (aishell/handlers/mysql_dump.py). Validation checks the sha256, then restores into
a scratch database (or file) and compares every table's rows and contents with the
manifest.

Every scratch file, scratch database and child process is recorded in the state store
before it is made (aishell/scratch.py), so a killed run's leftovers are removed later.
A full disk is reported as the full disk it is, naming the file and the free space,
never as a fault of the backup. Passwords reach dump tools through their environment,
never their command line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import DBAPIError

from aishell.catalog import user_tables
from aishell.errors import StepFailed
from aishell.handlers import Handler, cached
from aishell.handlers.mysql_dump import read_dump, write_tables
from aishell.registry import RiskLevel, ToolContext
from aishell.scratch import BACKUP, DATABASE, run_child
from aishell.sqltext import quote_identifier

CHUNK = 1 << 20

# Where a manifest's row counts and checksums come from; validation measures the
# restored copy the same way.
FROM_COPY = "the copy"  # SQLite: read from the file itself
FROM_SNAPSHOT = "the dump's snapshot"  # PostgreSQL: read in the snapshot pg_dump dumps
FROM_DUMP = "the dump"  # MySQL/MariaDB: the rows the dump file holds

NOT_JUDGED = "this says nothing about the backup, which stays unverified"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _counts(conn: Connection, tables: list[str]) -> dict[str, int]:
    return {
        t: int(
            conn.execute(
                text(f"SELECT count(*) FROM {quote_identifier(conn.dialect, t)}")
            ).scalar_one()
        )
        for t in tables
    }


# Tables up to this many rows also get a checksum of their contents in the manifest
# (MySQL/MariaDB: every table, since the dump is read whole anyway).
CHECKSUM_ROWS = 50_000


def checksum_rows(rows: Any) -> str:
    """An order-independent checksum of a table's rows."""
    hashes = sorted(hashlib.sha256(repr(tuple(row)).encode()).digest() for row in rows)
    return hashlib.sha256(b"".join(hashes)).hexdigest()


def _checksums(conn: Connection, counts: dict[str, int]) -> dict[str, str]:
    return {
        t: checksum_rows(conn.execute(text(f"SELECT * FROM {quote_identifier(conn.dialect, t)}")))
        for t, n in counts.items()
        if n <= CHECKSUM_ROWS
    }


def _sqlite_quoted(table: str) -> str:
    return '"' + table.replace('"', '""') + '"'


def _sqlite_tables(copy: sqlite3.Connection) -> list[str]:
    return [
        r[0]
        for r in copy.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1"
        )
    ]


def _sqlite_counts(copy: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    return {
        t: copy.execute(f"SELECT count(*) FROM {_sqlite_quoted(t)}").fetchone()[0] for t in tables
    }


def _sqlite_checksums(copy: sqlite3.Connection, counts: dict[str, int]) -> dict[str, str]:
    return {
        t: checksum_rows(copy.execute(f"SELECT * FROM {_sqlite_quoted(t)}"))
        for t, n in counts.items()
        if n <= CHECKSUM_ROWS
    }


def _tool_version(command: str) -> str:
    try:
        out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise StepFailed(
            f"{command} is not installed; install the database's client tools"
        ) from None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else command


def _server_env(url: URL) -> dict[str, str]:
    """The environment a dump tool gets: the password travels here, not in argv."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD" if url.get_backend_name() == "postgresql" else "MYSQL_PWD"] = str(
            url.password
        )
    return env


def _pg_args(url: URL) -> list[str]:
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    if url.username:
        args += ["-U", url.username]
    return args


def _my_args(url: URL) -> list[str]:
    args = ["-h", url.host or "127.0.0.1", "-P", str(url.port or 3306), "--protocol=TCP"]
    if url.username:
        args += ["-u", url.username]
    return args


def mysql_dump_program() -> str:
    return "mariadb-dump" if shutil.which("mariadb-dump") else "mysqldump"


def _mysql_dump_argv(url: URL, database: str, tables: list[str] | None = None) -> list[str]:
    """One way to dump, for backups and for measuring a restored copy alike: the rows of
    both must print the same."""
    return [
        mysql_dump_program(),
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        *_my_args(url),
        "--",  # table names that start with a dash are names, not options
        database,
        *(tables or []),
    ]


class ToolFailed(StepFailed):
    """A client program exited with an error."""

    def __init__(self, program: str, stderr: str, code: int) -> None:
        lines = stderr.strip().splitlines()
        self.program, self.stderr = program, stderr
        self.last_line = lines[-1] if lines else f"exit code {code}"
        super().__init__(f"{program} failed: {self.last_line}")


def _run(
    argv: list[str],
    env: dict[str, str],
    ctx: ToolContext,
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | int = subprocess.PIPE,
) -> subprocess.CompletedProcess[bytes]:
    """A client program, recorded before it starts, killed with its group when the run
    stops, its time runs out, or anything fails (aishell/scratch.py)."""
    done = run_child(
        argv,
        env=env,
        ledger=ctx.scratch,
        stdin=stdin,
        stdout=stdout,
        should_stop=ctx.should_stop,
        deadline=ctx.deadline,
    )
    if done.returncode != 0:
        raise ToolFailed(argv[0], done.stderr.decode(errors="replace"), done.returncode)
    return done


# --- a full disk is named as one ------------------------------------------------------------

# How tools and SQLite say that the disk they write to is full.
_LOCAL_NO_SPACE = ("no space left on device", "disk is full", "errno 28", "errcode: 28")
# And how servers say it of their own disk.
_SERVER_NO_SPACE = (*_LOCAL_NO_SPACE, "could not extend file", "could not write to file", "is full")


def _says_no_space(exc: BaseException, phrases: tuple[str, ...] = _LOCAL_NO_SPACE) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    said = exc.stderr if isinstance(exc, ToolFailed) else str(getattr(exc, "orig", None) or exc)
    return any(phrase in said.lower() for phrase in phrases)


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full(path: Path, doing: str, after: str = "") -> StepFailed:
    """The one line for a full disk: which file, which file system, how much is free."""
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(folder)
    tail = f"; {after}" if after else ""
    return StepFailed(
        f"No space left on device: the file system at {_mount_point(folder)} is full "
        f"({usage.free:,} of {usage.total:,} bytes free) while {doing} {path}; free space "
        f"there, or set backup_dir to a larger disk, and retry{tail}"
    )


@contextmanager
def _writing(path: Path, doing: str, after: str = "") -> Iterator[None]:
    """A full disk while path is written ends the step with disk_full's line."""
    try:
        yield
    except (OSError, sqlite3.Error, DBAPIError, ToolFailed) as exc:
        if _says_no_space(exc):
            raise disk_full(path, doing, after) from None
        raise


def _destination(ctx: ToolContext, suffix: str, kind: str = "full") -> Path:
    if ctx.backup_dir is None:
        raise StepFailed("No backup folder configured (backup_dir in config/aishell.yaml)")
    folder = ctx.backup_dir / ctx.target
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"{ctx.target}-{kind}-{stamp}-{uuid.uuid4().hex[:6]}{suffix}"


@contextmanager
def _partial(final: Path, ctx: ToolContext, doing: str = "writing") -> Iterator[Path]:
    """A temporary name that becomes `final` only when the block succeeds; recorded
    before it exists, removed (with any journal SQLite left beside it) if it fails."""
    partial = final.with_name(final.name + ".partial")
    with ctx.scratch.file(partial), _writing(partial, doing):
        yield partial
        _fsync(partial)
        partial.replace(final)


def _write_manifest(path: Path, manifest: dict[str, Any], ctx: ToolContext) -> None:
    target = path.with_name(path.name + ".manifest.json")
    with _partial(target, ctx) as partial:
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def read_manifest(path: Path) -> dict[str, Any]:
    target = path.with_name(path.name + ".manifest.json")
    try:
        return json.loads(target.read_text())
    except FileNotFoundError:
        raise StepFailed(
            f"No manifest beside {path}; it is not a finished aishell backup"
        ) from None


# --- calculate_backup_size ---------------------------------------------------------------


def _size(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    dialect = conn.dialect.name
    if dialect == "postgresql":
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    elif dialect in ("mysql", "mariadb"):
        size = conn.execute(
            text(
                "SELECT coalesce(sum(DATA_LENGTH + INDEX_LENGTH), 0) "
                "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            )
        ).scalar()
    else:
        size = conn.execute(
            text("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size")
        ).scalar()
    size = int(size or 0)
    free = (
        shutil.disk_usage(ctx.backup_dir).free
        if ctx.backup_dir and ctx.backup_dir.exists()
        else None
    )
    enough = free is None or free > size * 1.2
    return {
        "estimated_bytes": size,
        "free_bytes": free,
        "enough_space": enough,
        "tables": len(user_tables(conn)),
    }


calculate_backup_size = Handler(
    sql_templates=("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",),
    run_fn=_size,
)


# --- backup_database_full ------------------------------------------------------------------


def changed_tables(
    parent: Mapping[str, Any], counts: dict[str, int], checksums: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Tables that differ from the parent backup, and tables gone since.

    A table counts as unchanged only when its row count and its content checksum
    both match the parent's; a table without a checksum is always taken.
    """
    before_counts = parent.get("tables") or {}
    before_sums = parent.get("checksums") or {}
    changed = [
        t
        for t in counts
        if t not in before_counts
        or before_counts[t] != counts[t]
        or t not in checksums
        or before_sums.get(t) != checksums[t]
    ]
    dropped = sorted(t for t in before_counts if t not in counts)
    return sorted(changed), dropped


@dataclass
class _Taken:
    """What one backup file holds, measured where its data came from."""

    counts: dict[str, int]
    checksums: dict[str, str]
    changed: list[str]
    dropped: list[str]
    tool: str
    server: str
    measured_from: str
    notes: dict[str, Any] = field(default_factory=dict)


def _backup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return _take(params, ctx, parent=None)


def _backup_incremental(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    parent_path = Path(params["parent"])
    if not parent_path.is_file():
        raise StepFailed(f"The parent backup {parent_path} is not on disk")
    verified = {b["path"] for b in ctx.backup_catalog() if b["verified_at"]}
    if str(parent_path) not in verified:
        raise StepFailed(
            f"The parent backup {parent_path.name} was never proven restorable; an incremental "
            "chains only from a verified backup"
        )
    return _take(params, ctx, parent=read_manifest(parent_path) | {"path": str(parent_path)})


def _take(
    params: Mapping[str, Any], ctx: ToolContext, parent: dict[str, Any] | None
) -> dict[str, Any]:
    conn = ctx.connection
    dialect = conn.dialect.name
    size = _size(params, ctx)
    if not size["enough_space"]:
        raise StepFailed(
            f"Not enough free space in {ctx.backup_dir}: about {size['estimated_bytes']:,} bytes "
            f"needed, {size['free_bytes']:,} free"
        )
    started = time.monotonic()
    kind = "incremental" if parent else "full"
    suffix = {"sqlite": ".sqlite", "postgresql": ".dump"}.get(dialect, ".sql")
    final = _destination(ctx, suffix, kind)
    # Renamed into place, the file is still no backup until its manifest is beside it:
    # a crash in between leaves a file the next run removes.
    entry = ctx.scratch.record(BACKUP, str(final))
    try:
        if dialect == "sqlite":
            taken = _take_sqlite(final, ctx, parent)
        elif dialect == "postgresql":
            taken = _take_postgresql(final, ctx, parent)
        else:
            taken = _take_mysql(final, ctx, parent)
        sha = sha256_of(final)
        manifest = {
            "format": 1,
            "target": ctx.target,
            "dialect": dialect,
            "kind": kind,
            "file": final.name,
            "sha256": sha,
            "size_bytes": final.stat().st_size,
            "server_version": taken.server,
            "tool": taken.tool,
            "tables": taken.counts,
            "checksums": taken.checksums,
            "measured_from": taken.measured_from,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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
        _write_manifest(final, manifest, ctx)
    except BaseException:
        # Without its manifest a backup is not one: nothing half-made is left behind.
        final.unlink(missing_ok=True)
        ctx.scratch.forget(entry)
        raise
    ctx.scratch.forget(entry)
    counts = taken.counts
    return {
        "backup_path": str(final),
        "sha256": sha,
        "size_bytes": manifest["size_bytes"],
        "tables": len(counts),
        "rows": sum(counts.values()),
        "seconds": round(time.monotonic() - started, 3),
        "changed_tables": taken.changed if parent else None,
        "backup_record": {
            "kind": manifest["kind"],
            "path": str(final),
            "sha256": sha,
            "size_bytes": manifest["size_bytes"],
            "manifest": manifest,
        },
    }


def _take_sqlite(final: Path, ctx: ToolContext, parent: dict[str, Any] | None) -> _Taken:
    with _partial(final, ctx, "copying the database to") as partial:
        # VACUUM INTO copies in one read transaction (the page-by-page backup
        # API restarts for ever while another connection keeps writing).
        ctx.connection.execute(text("VACUUM INTO :path"), {"path": str(partial)})
        copy = sqlite3.connect(partial)
        try:
            result = copy.execute("PRAGMA integrity_check").fetchone()[0]
            # Counted in the copy: exactly the rows the file holds.
            counts = _sqlite_counts(copy, _sqlite_tables(copy))
            checksums = _sqlite_checksums(copy, counts)
            changed, dropped = (
                changed_tables(parent, counts, checksums) if parent else (list(counts), [])
            )
            if parent:
                # The copy keeps only what changed since the parent.
                for t in counts:
                    if t not in changed:
                        copy.execute(f"DROP TABLE {_sqlite_quoted(t)}")
                copy.commit()
                copy.execute("VACUUM")
        finally:
            copy.close()
        if result != "ok":
            raise StepFailed(f"The copy failed its integrity check: {result}")
    version = f"SQLite {sqlite3.sqlite_version}"
    return _Taken(counts, checksums, changed, dropped, f"{version} VACUUM INTO", version, FROM_COPY)


def _take_postgresql(final: Path, ctx: ToolContext, parent: dict[str, Any] | None) -> _Taken:
    conn = ctx.connection
    url = conn.engine.url
    tool = _tool_version("pg_dump")
    server = str(conn.execute(text("SHOW server_version")).scalar())
    # One snapshot for the row counts, the checksums and the dump: held open until
    # pg_dump is done, so they describe the same data however the application writes.
    snap_conn = conn.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    try:
        snap_conn.begin()
        snapshot = snap_conn.execute(text("SELECT pg_export_snapshot()")).scalar()
        counts = _counts(snap_conn, user_tables(snap_conn))
        checksums = _checksums(snap_conn, counts)
        changed, dropped = (
            changed_tables(parent, counts, checksums) if parent else (list(counts), [])
        )
        # Double quotes make a pg_dump pattern match exactly that one table.
        only = [f'--table="{t.replace(chr(34), chr(34) * 2)}"' for t in changed]
        with _partial(final, ctx) as partial:
            if parent and not changed:
                partial.write_bytes(b"")  # nothing changed: an empty increment
            else:
                _run(
                    [
                        "pg_dump",
                        "-Fc",
                        "--snapshot",
                        str(snapshot),
                        "-f",
                        str(partial),
                        *(only if parent else []),
                        *_pg_args(url),
                        str(url.database),
                    ],
                    _server_env(url),
                    ctx,
                )
    finally:
        snap_conn.rollback()
        snap_conn.close()
    return _Taken(counts, checksums, changed, dropped, tool, server, FROM_SNAPSHOT)


def _take_mysql(final: Path, ctx: ToolContext, parent: dict[str, Any] | None) -> _Taken:
    conn = ctx.connection
    url = conn.engine.url
    argv = _mysql_dump_argv(url, str(url.database))
    tool = _tool_version(argv[0])
    server = str(conn.execute(text("SELECT VERSION()")).scalar())
    env = _server_env(url)
    if parent is None:
        with _partial(final, ctx) as partial:
            with partial.open("wb") as out:
                _run(argv, env, ctx, stdout=out)
            dump = read_dump(partial)
        counts, checksums = dump.counts(), dump.checksums()
        return _Taken(counts, checksums, list(counts), [], tool, server, FROM_DUMP)
    # An increment is cut from a whole dump: which tables changed is known only from
    # the rows of one snapshot, and a second dump would see other rows.
    whole = final.with_name(final.name + ".whole.partial")
    with ctx.scratch.file(whole), _writing(whole, "writing"):
        with whole.open("wb") as out:
            _run(argv, env, ctx, stdout=out)
        dump = read_dump(whole)
        counts, checksums = dump.counts(), dump.checksums()
        changed, dropped = changed_tables(parent, counts, checksums)
        with _partial(final, ctx) as partial:
            if not changed:
                partial.write_bytes(b"")  # nothing changed: an empty increment
            else:
                with partial.open("wb") as out:
                    written = write_tables(whole, dump, set(changed), out)
                # The increment must hold exactly the tables, rows and contents its
                # manifest will say it holds.
                cut = read_dump(partial)
                if set(cut.tables) != written or any(
                    cut.tables[t].checksum != checksums[t] or cut.tables[t].rows != counts[t]
                    for t in written
                ):
                    raise StepFailed(
                        f"The increment cut from {argv[0]}'s dump does not hold exactly the "
                        "changed tables; take a full backup instead (`aishell run backup "
                        "--type full`)"
                    )
                changed = sorted(written)
    return _Taken(counts, checksums, changed, dropped, tool, server, FROM_DUMP)


def _backup_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    dialect = ctx.dialect
    if dialect == "sqlite":
        return ["VACUUM INTO '<backup folder>/<target>-full-<time>.sqlite.partial'"]
    if dialect == "postgresql":
        return ["-- pg_dump -Fc --snapshot <exported snapshot> <database>"]
    return ["-- mariadb-dump --single-transaction --routines --triggers --events <database>"]


backup_database_full = Handler(
    sql_templates=("VACUUM INTO :path",),
    run_fn=_backup,
    render_fn=_backup_sql,
    risk=RiskLevel.LOW,
    effect="writes a backup file",
)
backup_database_incremental = Handler(
    sql_templates=("VACUUM INTO :path",),
    run_fn=_backup_incremental,
    render_fn=_backup_sql,
    risk=RiskLevel.LOW,
    effect="writes a backup file",
)


# --- validate_backup -----------------------------------------------------------------------


@contextmanager
def _scratch_server_database(conn: Connection, ctx: ToolContext) -> Iterator[tuple[URL, str]]:
    """A scratch database on the same server, recorded before it is created, dropped
    afterwards."""
    name = f"aishell_verify_{uuid.uuid4().hex[:10]}"
    dialect = conn.dialect.name
    entry = ctx.scratch.record(DATABASE, name, dialect=dialect)
    admin = conn.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    quoted = quote_identifier(conn.dialect, name)
    try:
        # From template0 on PostgreSQL: what a site keeps in template1 is not the
        # backup's, and would come back in the restored copy as extra tables.
        template = " TEMPLATE template0" if dialect == "postgresql" else ""
        admin.execute(text(f"CREATE DATABASE {quoted}{template}"))
        yield conn.engine.url.set(database=name), name
    finally:
        try:
            suffix = " WITH (FORCE)" if dialect == "postgresql" else ""
            admin.execute(text(f"DROP DATABASE IF EXISTS {quoted}{suffix}"))
            ctx.scratch.forget(entry)
        finally:
            admin.close()


def schema_lines(sql: str) -> list[str]:
    """A schema dump's lines that describe the schema: without comments, blank lines and
    the random \\restrict / \\unrestrict tokens current pg_dump writes."""
    return [
        line
        for line in sql.splitlines()
        if line.strip()
        and not line.startswith("--")
        and not line.startswith(("\\restrict ", "\\unrestrict "))
    ]


def _pg_schema_problems(path: Path, url: URL, database: str, ctx: ToolContext) -> list[str]:
    """The archive's schema against the schema of what it restored into."""
    env = _server_env(url)
    archived = _run(["pg_restore", "--schema-only", "--no-owner", "-f", "-", str(path)], env, ctx)
    restored = _run(["pg_dump", "--schema-only", "--no-owner", *_pg_args(url), database], env, ctx)
    expected = schema_lines(archived.stdout.decode(errors="replace"))
    actual = schema_lines(restored.stdout.decode(errors="replace"))
    if expected != actual:
        missing = [line for line in expected if line not in actual][:3]
        return [f"the restored schema differs from the archive's: {missing or 'order'}"]
    return []


@dataclass
class Measured:
    """A restored copy: its tables, their rows, and checksums measured the way its
    manifest's were."""

    tables: set[str]
    counts: dict[str, int]
    checksums: dict[str, str]


def compare(manifest: Mapping[str, Any], measured: Measured) -> list[str]:
    """What a restored copy gets wrong against the manifest, one clear reason each."""
    expected: dict[str, int] = manifest["tables"]
    problems: list[str] = []
    missing = [t for t in expected if t not in measured.tables]
    if missing:
        problems.append(f"tables the manifest lists did not come back: {', '.join(missing)}")
    for table, rows in expected.items():
        if table in measured.counts and measured.counts[table] != rows:
            problems.append(f"{table}: {measured.counts[table]} rows restored, {rows} expected")
    for table, checksum in (manifest.get("checksums") or {}).items():
        got = measured.checksums.get(table)
        if table in measured.tables and got is not None and got != checksum:
            problems.append(f"{table}: restored contents differ from the backup's checksum")
    extra = sorted(measured.tables - set(expected))
    if extra:
        problems.append(f"tables the backup does not hold came back: {', '.join(extra)}")
    return problems


def _measure_server(
    url: URL,
    database: str,
    manifest: Mapping[str, Any],
    ctx: ToolContext,
    beside: Path,
    after: str = "",
) -> Measured:
    """Tables, rows and checksums of a database on the target's server, measured as the
    manifest's were; a MySQL/MariaDB copy is dumped again (to a scratch file beside the
    backup) and its rows read from the dump."""
    engine = create_engine(url.set(database=database))
    try:
        with engine.connect() as conn:
            present = user_tables(conn)
            tables = [t for t in manifest["tables"] if t in present]
            counts = _counts(conn, tables)
            wanted = {t: 0 for t in manifest.get("checksums") or {} if t in present}
            if manifest.get("measured_from") != FROM_DUMP:
                return Measured(set(present), counts, _checksums(conn, wanted))
    finally:
        engine.dispose()
    again = beside.with_name(f"{beside.name}.verify-{uuid.uuid4().hex[:6]}.sql")
    with ctx.scratch.file(again), _writing(again, "writing the dump of the restored copy", after):
        with again.open("wb") as out:
            _run(_mysql_dump_argv(url, database, tables), _server_env(url), ctx, stdout=out)
        dump = read_dump(again)
    checksums = {t: r.checksum for t, r in dump.tables.items() if t in wanted}
    return Measured(set(present), counts, checksums)


def chain_of(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """A backup and the backups it builds on, oldest (the full one) first; each file must
    still match its manifest."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    current: Path | None = path
    while current is not None:
        if not current.is_file():
            raise StepFailed(f"Backup {current} is missing; the chain cannot be restored")
        manifest = read_manifest(current)
        sha = sha256_of(current)
        if sha != manifest["sha256"]:
            raise StepFailed(
                f"sha256 of {current.name} ({sha}) does not match the manifest's "
                f"{manifest['sha256']}"
            )
        chain.append((current, manifest))
        current = Path(manifest["parent"]) if manifest.get("parent") else None
    return list(reversed(chain))


def _sqlite_apply(conn: sqlite3.Connection, path: Path, manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "full":
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.backup(conn)
        finally:
            source.close()
        return
    conn.execute("ATTACH DATABASE ? AS inc", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        for table in [*manifest["changed"], *manifest["dropped"]]:
            conn.execute(f"DROP TABLE IF EXISTS main.{_sqlite_quoted(table)}")
        for table in manifest["changed"]:
            quoted = _sqlite_quoted(table)
            objects = conn.execute(
                "SELECT type, sql FROM inc.sqlite_schema WHERE tbl_name = ? AND sql IS NOT NULL "
                "ORDER BY type = 'table' DESC",
                (table,),
            ).fetchall()
            for kind, sql in objects:
                conn.execute(sql)
                if kind == "table":
                    conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM inc.{quoted}")
        conn.commit()
    finally:
        conn.execute("DETACH DATABASE inc")


def mysql_client() -> str:
    """The MariaDB command-line client, or MySQL's where only that is installed."""
    return "mariadb" if shutil.which("mariadb") else "mysql"


def restore_argv(
    dialect: str, url: URL, database: str, path: Path, manifest: Mapping[str, Any], replace: bool
) -> tuple[list[str], Path | None] | None:
    """The client command that loads one server backup file into `database`, and the file
    it reads on stdin; None for an empty increment. What a restore shows is built here too."""
    if not path.stat().st_size:
        return None
    if dialect == "postgresql":
        argv = ["pg_restore", "--no-owner", "--exit-on-error"]
        if replace or manifest["kind"] == "incremental":
            argv += ["--clean", "--if-exists"]
        return [*argv, "-d", database, *_pg_args(url), str(path)], None
    # The dump drops and recreates each table it holds.
    return [mysql_client(), *_my_args(url), database], path


def dropped_statements(dialect: Dialect, manifest: Mapping[str, Any]) -> list[str]:
    """What an incremental backup runs for the tables dropped since its parent."""
    if manifest["kind"] != "incremental":
        return []
    return [
        f"DROP TABLE IF EXISTS {quote_identifier(dialect, table)}"
        for table in manifest.get("dropped") or []
    ]


def _server_apply(
    dialect: str,
    url: URL,
    database: str,
    path: Path,
    manifest: dict[str, Any],
    replace: bool,
    ctx: ToolContext,
) -> None:
    env = _server_env(url)
    command = restore_argv(dialect, url, database, path, manifest, replace)
    if command is not None:
        argv, stdin = command
        if stdin is None:
            _run(argv, env, ctx)
        else:
            with stdin.open("rb") as dump:
                _run(argv, env, ctx, stdin=dump)
    if manifest["kind"] == "incremental" and manifest["dropped"]:
        engine = create_engine(url.set(database=database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in dropped_statements(conn.dialect, manifest):
                    conn.execute(text(statement))
        finally:
            engine.dispose()


# How client tools say they could not reach the server: not the backup's fault.
_UNREACHABLE = ("could not connect", "connection to server", "can't connect", "lost connection")


def _validate_sqlite(
    path: Path, chain: list[tuple[Path, dict[str, Any]]], problems: list[str], ctx: ToolContext
) -> Measured | None:
    """Apply the chain to a scratch copy beside the backup and measure the copy."""
    manifest = chain[-1][1]
    scratch = path.with_name(path.name + f".verify-{uuid.uuid4().hex[:6]}")
    with ctx.scratch.file(scratch):
        try:
            copy = sqlite3.connect(scratch)
        except sqlite3.Error as exc:
            raise StepFailed(
                f"Cannot make the scratch copy {scratch}: {exc}; {NOT_JUDGED}"
            ) from None
        try:
            for link, link_manifest in chain:
                _sqlite_apply(copy, link, link_manifest)
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                problems.append(f"integrity_check: {check}")
                return None
            present = _sqlite_tables(copy)
            counts = _sqlite_counts(copy, [t for t in manifest["tables"] if t in present])
            wanted = {t: 0 for t in manifest.get("checksums") or {} if t in present}
            return Measured(set(present), counts, _sqlite_checksums(copy, wanted))
        except (sqlite3.Error, OSError) as exc:
            if _says_no_space(exc):
                raise disk_full(scratch, "writing the scratch copy", NOT_JUDGED) from None
            problems.append(f"the backup cannot be read: {exc}")
            return None
        finally:
            copy.close()


def _validate_server(
    path: Path,
    chain: list[tuple[Path, dict[str, Any]]],
    problems: list[str],
    ctx: ToolContext,
) -> Measured | None:
    """Restore the chain into a scratch database on the target's server and measure it.
    A restore that fails because of the server (its disk, the network) says nothing
    about the backup: the step fails without judging it."""
    conn = ctx.connection
    dialect = chain[-1][1]["dialect"]
    url = conn.engine.url
    try:
        with _scratch_server_database(conn, ctx) as (_scratch_url, name):
            try:
                for link, link_manifest in chain:
                    _server_apply(dialect, url, name, link, link_manifest, False, ctx)
            except ToolFailed as exc:
                if _says_no_space(exc, _SERVER_NO_SPACE):
                    raise StepFailed(
                        f"The server of target '{ctx.target}' ran out of disk space restoring "
                        f"into the scratch database {name} ({exc.program}: {exc.last_line}); "
                        f"free space on the server and retry; {NOT_JUDGED}"
                    ) from None
                if any(phrase in exc.stderr.lower() for phrase in _UNREACHABLE):
                    raise StepFailed(
                        f"The server of target '{ctx.target}' could not be reached while "
                        f"restoring into the scratch database {name} ({exc.program}: "
                        f"{exc.last_line}); {NOT_JUDGED}"
                    ) from None
                problems.append(f"the backup does not restore: {exc}")
                return None
            measured = _measure_server(url, name, chain[-1][1], ctx, path, NOT_JUDGED)
            if dialect == "postgresql" and len(chain) == 1:
                problems += _pg_schema_problems(path, url, name, ctx)
            return measured
    except DBAPIError as exc:
        if not _says_no_space(exc, _SERVER_NO_SPACE):
            raise
        said = str(exc.orig).strip().splitlines()
        raise StepFailed(
            f"The server of target '{ctx.target}' ran out of disk space during the validation "
            f"({said[0] if said else exc}); free space on the server and retry; {NOT_JUDGED}"
        ) from None


def _validate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    path = Path(params["backup_path"])
    if not path.is_file():
        raise StepFailed(f"Backup file {path} does not exist")
    manifest = read_manifest(path)
    result: dict[str, Any] = {"backup_path": str(path), "quick": bool(params.get("quick"))}
    problems: list[str] = []
    try:
        chain = chain_of(path)
    except StepFailed as exc:
        chain = []
        problems.append(str(exc))
    dialect = manifest["dialect"]
    measured: Measured | None = None
    if chain and dialect == "sqlite":
        measured = _validate_sqlite(path, chain, problems, ctx)
    elif chain and params.get("quick"):
        if dialect == "postgresql":
            # Decodes every block of each archive; --list would read only its index.
            for link, _ in chain:
                if link.stat().st_size:
                    try:
                        _run(
                            ["pg_restore", "-f", "/dev/null", str(link)],
                            _server_env(ctx.connection.engine.url),
                            ctx,
                        )
                    except ToolFailed as exc:
                        problems.append(f"{link.name} does not decode: {exc}")
    elif chain:
        measured = _validate_server(path, chain, problems, ctx)
    if measured is not None:
        problems += compare(manifest, measured)
    ok = not problems
    result.update(
        {
            "ok": ok,
            "problems": problems,
            "chain": [link.name for link, _ in chain],
            "tables_compared": len(measured.counts) if measured else 0,
            "checksums_compared": len(measured.checksums) if measured else 0,
        }
    )
    result["verified_backup"] = {"path": str(path), "ok": ok, "problems": problems}
    if not ok:
        raise StepFailed(
            f"Backup {path.name} failed validation: {'; '.join(problems[:3])}", details=result
        )
    return result


validate_backup = Handler(
    sql_templates=("SELECT count(*) FROM {table}",),
    run_fn=_validate,
    risk=RiskLevel.LOW,
    effect="restores into a scratch database it makes and drops",
)


# --- restore_backup -----------------------------------------------------------------------


# Free space a SQLite restore wants beyond the backup's size: its journal, and slack.
RESTORE_MARGIN = 1.2


@dataclass(frozen=True)
class _Prechecked:
    """A restore that passed every precheck: its chain, what it shows, and its estimate."""

    chain: list[tuple[Path, dict[str, Any]]]
    lines: list[str]
    estimate: dict[str, Any]


def _family(dialect: str) -> str:
    return "mysql" if dialect == "mariadb" else dialect


def _links(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """A backup and those it builds on, oldest first, from their manifests alone."""
    links: list[tuple[Path, dict[str, Any]]] = []
    current: Path | None = path
    while current is not None:
        if not current.is_file():
            if current == path:
                raise StepFailed(
                    f"Backup file {path} does not exist; `aishell backups list` shows the "
                    "backups on disk"
                )
            raise StepFailed(
                f"Backup {path.name} builds on {current}, which does not exist; the chain "
                "cannot be restored"
            )
        manifest = read_manifest(current)
        missing = [
            key
            for key in ("dialect", "kind", "sha256", "size_bytes", "tables")
            if key not in manifest
        ]
        if missing:
            raise StepFailed(
                f"The manifest of {current.name} lacks {', '.join(missing)}; it is not a "
                "finished aishell backup"
            )
        links.append((current, manifest))
        current = Path(manifest["parent"]) if manifest.get("parent") else None
        if current is not None and any(current == p for p, _ in links):
            raise StepFailed(f"The manifests of {path.name} form a loop; the chain is damaged")
    return list(reversed(links))


def _verify(
    chain: list[tuple[Path, dict[str, Any]]], params: Mapping[str, Any], ctx: ToolContext
) -> str:
    """Each file's sha256 against its manifest and the backup catalog; the newest's sha256."""
    recorded = {b["path"]: b["sha256"] for b in ctx.backup_catalog() if b.get("sha256")}
    sha = ""
    for link, manifest in chain:
        sha = sha256_of(link)
        if sha != manifest["sha256"]:
            raise StepFailed(
                f"Backup file {link.name} changed after it was taken: its sha256 {sha[:16]}... "
                f"differs from the manifest's {str(manifest['sha256'])[:16]}...; restore "
                "another backup"
            )
        catalogued = recorded.get(str(link))
        if catalogued and catalogued != sha:
            raise StepFailed(
                f"Backup file {link.name} is not the one the catalog recorded: its sha256 "
                f"{sha[:16]}... differs from the catalog's {catalogued[:16]}...; restore "
                "another backup"
            )
    expected = params.get("sha256")
    if expected and expected != sha:
        raise StepFailed(
            f"Backup file {chain[-1][0].name} is not the one the catalog recorded: its sha256 "
            f"{sha[:16]}... differs from the catalog's {str(expected)[:16]}...; restore "
            "another backup"
        )
    return sha


def _sqlite_file(conn: Connection) -> Path | None:
    for _seq, name, file in conn.execute(text("PRAGMA database_list")):
        if name == "main" and file:
            return Path(file)
    return None


def _disk(chain: list[tuple[Path, dict[str, Any]]], conn: Connection) -> dict[str, Any] | str:
    """Free space where the restore writes, against what it needs; refuses too little."""
    if conn.dialect.name != "sqlite":
        return (
            "not checked: a database server's free space cannot be read over SQL, and a "
            "dump's size does not tell how much it restores to"
        )
    target = _sqlite_file(conn)
    if target is None:
        return "not checked: the target is not a file"
    size = sum(link.stat().st_size for link, _ in chain)
    needed = int(size * RESTORE_MARGIN)
    free = shutil.disk_usage(target.parent).free
    if free < needed:
        raise StepFailed(
            f"Not enough free space in {target.parent} for the restore: {needed:,} bytes "
            f"needed (the backup's {size:,} and a {RESTORE_MARGIN - 1:.0%} margin), {free:,} "
            "free; free space there and retry"
        )
    return {"folder": str(target.parent), "free_bytes": free, "needed_bytes": needed}


def _commands(
    chain: list[tuple[Path, dict[str, Any]]], conn: Connection, replace: bool
) -> list[tuple[str, bool]]:
    """Every command the restore runs, as shown, and whether it is SQL; refuses when a
    client program it needs is not on PATH."""
    dialect = conn.dialect.name
    url = conn.engine.url
    shown: list[tuple[str, bool]] = []
    if dialect == "sqlite":
        into = _sqlite_file(conn) or "the target"
        for link, manifest in chain:
            if manifest["kind"] == "full":
                shown.append((f"SQLite backup API: copy {link} into {into}", False))
            else:
                changed = ", ".join(manifest.get("changed") or []) or "none"
                dropped = ", ".join(manifest.get("dropped") or []) or "none"
                shown.append(
                    (
                        f"SQLite: from {link}, drop and reload tables {changed}; "
                        f"drop tables {dropped}",
                        False,
                    )
                )
        return shown
    for link, manifest in chain:
        command = restore_argv(dialect, url, str(url.database), link, manifest, replace)
        if command is not None:
            argv, stdin = command
            if shutil.which(argv[0]) is None:
                which = "pg_restore" if dialect == "postgresql" else "mariadb (or mysql)"
                tools = "PostgreSQL" if dialect == "postgresql" else "MariaDB"
                raise StepFailed(
                    f"{which} is not on PATH; install the {tools} client tools or add "
                    "their folder to PATH"
                )
            line = shlex.join(argv)
            shown.append((f"{line} < {shlex.quote(str(stdin))}" if stdin else line, False))
        shown += [(sql, True) for sql in dropped_statements(conn.dialect, manifest)]
    return shown


def _precheck(params: Mapping[str, Any], ctx: ToolContext) -> _Prechecked:
    """Everything a restore must find true before anyone is asked to approve it.

    Cheap checks first; reading every file of the chain for its sha256 comes last.
    """
    path = Path(params["backup_path"])
    replace = bool(params.get("replace"))
    links = _links(path)
    manifest = links[-1][1]
    conn = ctx.connection
    dialect = conn.dialect.name
    if _family(manifest["dialect"]) != _family(dialect):
        raise StepFailed(
            f"Backup {path.name} is a {manifest['dialect']} backup and target '{ctx.target}' "
            f"is {dialect}; restore it into a {manifest['dialect']} target"
        )
    existing = user_tables(conn)
    if existing and not replace:
        names = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise StepFailed(
            f"Target '{ctx.target}' is not empty ({len(existing)} tables: {names}); restore "
            "into an empty database, or pass --replace to overwrite it"
        )
    commands = _commands(links, conn, replace)
    disk = _disk(links, conn)
    sha = _verify(links, params, ctx)
    if dialect == "sqlite":
        # The backup API replaces the whole file.
        replaced = list(existing)
    else:
        # pg_restore --clean and a dump's DROP TABLE reach only the tables the backup holds.
        held = {t for _, m in links for t in [*m["tables"], *(m.get("dropped") or [])]}
        replaced = [t for t in existing if t in held]
    estimate = {
        "commands": [line for line, _ in commands],
        "replaces_tables": replaced,
        "backup": {
            "path": str(path),
            "kind": manifest["kind"],
            "chain": [link.name for link, _ in links],
            "sha256": sha,
            "sha256_ok": True,
            "size_bytes": sum(link.stat().st_size for link, _ in links),
            "tables": dict(manifest["tables"]),
            "rows": sum(manifest["tables"].values()),
        },
        "disk": disk,
    }
    lines = [line if is_sql else f"-- {line}" for line, is_sql in commands]
    if replaced:
        lines.append(f"-- replaces {len(replaced)} tables of '{ctx.target}': {', '.join(replaced)}")
    else:
        lines.append(f"-- replaces no table of '{ctx.target}'")
    return _Prechecked(chain=links, lines=lines, estimate=estimate)


def _prechecked(params: Mapping[str, Any], ctx: ToolContext) -> _Prechecked:
    """The precheck, once per step: a refusal is remembered as well as a pass."""

    def attempt() -> _Prechecked | StepFailed:
        try:
            return _precheck(params, ctx)
        except StepFailed as exc:
            return exc

    outcome = cached(ctx, "restore_precheck", attempt)
    if isinstance(outcome, StepFailed):
        raise StepFailed(str(outcome))
    return outcome


def _restore_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return dict(_prechecked(params, ctx).estimate)


def _restore_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    try:
        return list(_prechecked(params, ctx).lines)
    except StepFailed as exc:
        # A preview still shows the step; the estimate fails it with the same line.
        return [f"-- refused: {exc}"]


def _restore(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    path = Path(params["backup_path"])
    chain = _prechecked(params, ctx).chain
    manifest = chain[-1][1]
    conn = ctx.connection
    dialect = conn.dialect.name
    url = conn.engine.url
    for link, link_manifest in chain:
        if dialect == "sqlite":
            _sqlite_apply(conn.connection.driver_connection, link, link_manifest)
        else:
            _server_apply(
                dialect,
                url,
                str(url.database),
                link,
                link_manifest,
                bool(params.get("replace")),
                ctx,
            )
    # The sha256 only says the file is the one the manifest describes; the restored
    # rows and contents must be the ones it describes too.
    if dialect == "sqlite":
        present = user_tables(conn)
        tables = [t for t in manifest["tables"] if t in present]
        wanted = {t: 0 for t in manifest.get("checksums") or {} if t in present}
        measured = Measured(set(present), _counts(conn, tables), _checksums(conn, wanted))
    else:
        measured = _measure_server(url, str(url.database), manifest, ctx, path)
    # Tables the backup does not hold may stay in a target restored with --replace.
    measured.tables &= set(manifest["tables"])
    problems = compare(manifest, measured)
    if problems:
        raise StepFailed(
            f"The restore of {path.name} does not match its manifest: {'; '.join(problems[:3])}; "
            "the target now holds what the file held: restore another backup"
        )
    return {
        "restored_tables": len(measured.counts),
        "rows": sum(measured.counts.values()),
        "checksums_compared": len(measured.checksums),
        "backup_path": str(path),
        "chain": [link.name for link, _ in chain],
    }


restore_backup = Handler(
    sql_templates=(
        "-- the target's dialect decides: pg_restore, the mariadb client reading the dump, "
        "or the SQLite backup API; the exact command shows against the target",
    ),
    run_fn=_restore,
    render_fn=_restore_sql,
    estimate_fn=_restore_estimate,
    risk=RiskLevel.CRITICAL,
    effect="replaces the target's tables with a backup's",
)


# --- find_last_backup / cleanup_old_backups --------------------------------------------------


def _last(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    catalog = [b for b in ctx.backup_catalog() if Path(b["path"]).is_file()]
    if params.get("verified_only", True):
        catalog = [b for b in catalog if b["verified_at"]]
    if not catalog:
        which = "verified backup" if params.get("verified_only", True) else "backup"
        raise StepFailed(
            f"Target '{ctx.target}' has no {which} on disk; "
            "take one with `aishell run backup --type full`"
        )
    newest = max(catalog, key=lambda b: b["created_at"])
    return {
        "backup_id": newest["id"],
        "backup_path": newest["path"],
        "kind": newest["kind"],
        "created_at": newest["created_at"],
        "verified_at": newest["verified_at"],
    }


find_last_backup = Handler(sql_templates=("SELECT 1",), run_fn=_last)


def choose_deletions(
    catalog: list[dict[str, Any]], retention_days: float, keep_last: int, now: float
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """What retention deletes, and why each other backup stays."""
    newest_first = sorted(catalog, key=lambda b: b["created_at"], reverse=True)
    keep: dict[int, str] = {}
    for b in newest_first[:keep_last]:
        keep[b["id"]] = f"one of the newest {keep_last}"
    verified = [b for b in newest_first if b["verified_at"]]
    if verified:
        keep.setdefault(verified[0]["id"], "the newest verified backup")
    for b in newest_first:
        taken = time.mktime(time.strptime(b["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        if now - taken < retention_days * 86400:
            keep.setdefault(b["id"], f"younger than {retention_days:g} days")
    # A kept incremental needs its whole chain.
    by_path = {b["path"]: b for b in catalog}
    for b in list(newest_first):
        if b["id"] in keep:
            parent = (b.get("manifest") or {}).get("parent")
            while parent and parent in by_path:
                keep.setdefault(by_path[parent]["id"], f"a kept backup depends on it ({b['id']})")
                parent = (by_path[parent].get("manifest") or {}).get("parent")
    return [b for b in newest_first if b["id"] not in keep], keep


def _cleanup(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    catalog = ctx.backup_catalog()
    delete, keep = choose_deletions(
        catalog, params.get("retention_days", 30), params.get("keep_last", 3), time.time()
    )
    deleted = []
    for b in delete:
        path = Path(b["path"])
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".manifest.json").unlink(missing_ok=True)
        deleted.append(b["path"])
    return {
        "deleted_backups": deleted,
        "kept": [{"backup_id": i, "why": why} for i, why in sorted(keep.items())],
    }


def _cleanup_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    delete, keep = choose_deletions(
        ctx.backup_catalog(),
        params.get("retention_days", 30),
        params.get("keep_last", 3),
        time.time(),
    )
    return {
        "backups_to_delete": [b["path"] for b in delete],
        "bytes_to_free": sum(b["size_bytes"] or 0 for b in delete),
        "kept": {str(i): why for i, why in keep.items()},
    }


cleanup_old_backups = Handler(
    sql_templates=("-- deletes backup files; no SQL",),
    run_fn=_cleanup,
    render_fn=lambda params, ctx: (
        [f"-- delete {p}" for p in _cleanup_estimate(params, ctx)["backups_to_delete"]]
        or ["-- nothing to delete"]
    ),
    estimate_fn=_cleanup_estimate,
    risk=RiskLevel.HIGH,
    effect="deletes backup files",
)
