"""Full backups of all three kinds of database, with a manifest, and their validation.

A backup is written under a temporary name, synced, and renamed only when whole;
its manifest (sha256, size, server and tool versions, tables with row counts)
is written beside it the same way. Validation checks the sha256, then restores
into a scratch database (or file) and compares every table's row count with the
manifest. Passwords reach dump tools through their environment, never their
command line.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Dialect

from aishell.catalog import user_tables
from aishell.errors import StepFailed
from aishell.handlers import Handler, cached
from aishell.registry import RiskLevel, ToolContext
from aishell.sqltext import quote_identifier

CHUNK = 1 << 20
_SIDECARS = ("-journal", "-wal", "-shm")


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


# Tables up to this many rows also get a checksum of their contents in the manifest.
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


def _sqlite_checksums(copy: sqlite3.Connection, counts: dict[str, int]) -> dict[str, str]:
    return {
        t: checksum_rows(copy.execute(f'SELECT * FROM "{t.replace(chr(34), chr(34) * 2)}"'))
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


def _run(argv: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    try:
        kw.setdefault("stdout", subprocess.PIPE)
        done = subprocess.run(argv, env=env, stderr=subprocess.PIPE, **kw)
    except FileNotFoundError:
        raise StepFailed(
            f"{argv[0]} is not installed; install the database's client tools"
        ) from None
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        if "No space left on device" in stderr or "errno 28" in stderr.lower():
            raise StepFailed(f"{argv[0]} failed: No space left on device; free space and retry")
        message = stderr.splitlines()
        raise StepFailed(f"{argv[0]} failed: {message[-1] if message else done.returncode}")
    return done


def _destination(ctx: ToolContext, suffix: str, kind: str = "full") -> Path:
    if ctx.backup_dir is None:
        raise StepFailed("No backup folder configured (backup_dir in config/aishell.yaml)")
    folder = ctx.backup_dir / ctx.target
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"{ctx.target}-{kind}-{stamp}-{uuid.uuid4().hex[:6]}{suffix}"


@contextmanager
def _partial(final: Path) -> Iterator[Path]:
    """A temporary name that becomes `final` only when the block succeeds."""
    partial = final.with_name(final.name + ".partial")
    try:
        yield partial
        _fsync(partial)
        partial.replace(final)
    finally:
        # SQLite may leave its own journal beside a copy that failed halfway.
        for leftover in (partial, *(partial.with_name(partial.name + s) for s in _SIDECARS)):
            leftover.unlink(missing_ok=True)


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    target = path.with_name(path.name + ".manifest.json")
    with _partial(target) as partial:
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
    both match the parent's; a table too large for a checksum is always taken.
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
    url = conn.engine.url
    started = time.monotonic()
    kind = "incremental" if parent else "full"
    if dialect == "sqlite":
        final = _destination(ctx, ".sqlite", kind)
        with _partial(final) as partial:
            # VACUUM INTO copies in one read transaction (the page-by-page backup
            # API restarts for ever while another connection keeps writing).
            conn.execute(text("VACUUM INTO :path"), {"path": str(partial)})
            copy = sqlite3.connect(partial)
            try:
                result = copy.execute("PRAGMA integrity_check").fetchone()[0]
                tables = [
                    r[0]
                    for r in copy.execute(
                        "SELECT name FROM sqlite_schema WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                    )
                ]
                counts = {
                    t: copy.execute(
                        f'SELECT count(*) FROM "{t.replace(chr(34), chr(34) * 2)}"'
                    ).fetchone()[0]
                    for t in tables
                }
                checksums = _sqlite_checksums(copy, counts)
                changed, dropped = (
                    changed_tables(parent, counts, checksums) if parent else (list(counts), [])
                )
                if parent:
                    # The copy keeps only what changed since the parent.
                    for t in counts:
                        if t not in changed:
                            copy.execute(f'DROP TABLE "{t.replace(chr(34), chr(34) * 2)}"')
                    copy.commit()
                    copy.execute("VACUUM")
            finally:
                copy.close()
            if result != "ok":
                raise StepFailed(f"The copy failed its integrity check: {result}")
        tool = f"SQLite {sqlite3.sqlite_version} VACUUM INTO"
        server = f"SQLite {sqlite3.sqlite_version}"
    elif dialect == "postgresql":
        final = _destination(ctx, ".dump", kind)
        tool = _tool_version("pg_dump")
        server = str(conn.execute(text("SHOW server_version")).scalar())
        # One snapshot for the row counts and the dump: they describe the same data.
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
            with _partial(final) as partial:
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
                    )
        finally:
            snap_conn.rollback()
            snap_conn.close()
    else:
        final = _destination(ctx, ".sql", kind)
        dump = "mariadb-dump" if shutil.which("mariadb-dump") else "mysqldump"
        tool = _tool_version(dump)
        server = str(conn.execute(text("SELECT VERSION()")).scalar())
        counts = _counts(conn, user_tables(conn))
        checksums = _checksums(conn, counts)
        changed, dropped = (
            changed_tables(parent, counts, checksums) if parent else (list(counts), [])
        )
        with _partial(final) as partial, partial.open("wb") as out:
            if not (parent and not changed):
                _run(
                    [
                        dump,
                        "--single-transaction",
                        "--routines",
                        "--triggers",
                        "--events",
                        "--hex-blob",
                        *_my_args(url),
                        "--",  # table names that start with a dash are names, not options
                        str(url.database),
                        *(changed if parent else []),
                    ],
                    _server_env(url),
                    stdout=out,
                )
    try:
        sha = sha256_of(final)
        manifest = {
            "format": 1,
            "target": ctx.target,
            "dialect": dialect,
            "kind": kind,
            "file": final.name,
            "sha256": sha,
            "size_bytes": final.stat().st_size,
            "server_version": server,
            "tool": tool,
            "tables": counts,
            "checksums": checksums,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "parent": parent["path"] if parent else None,
            "changed": changed if parent else None,
            "dropped": dropped if parent else None,
            "method": None
            if not parent
            else "per table: row count and a checksum of its rows against the parent's; "
            f"tables over {CHECKSUM_ROWS:,} rows are always taken",
        }
        _write_manifest(final, manifest)
    except BaseException:
        # Without its manifest a backup is not one: nothing half-made is left behind.
        final.unlink(missing_ok=True)
        raise
    return {
        "backup_path": str(final),
        "sha256": sha,
        "size_bytes": manifest["size_bytes"],
        "tables": len(counts),
        "rows": sum(counts.values()),
        "seconds": round(time.monotonic() - started, 3),
        "changed_tables": changed if parent else None,
        "backup_record": {
            "kind": manifest["kind"],
            "path": str(final),
            "sha256": sha,
            "size_bytes": manifest["size_bytes"],
            "manifest": manifest,
        },
    }


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
def _scratch_server_database(conn: Connection) -> Iterator[tuple[URL, str]]:
    """A scratch database on the same server, dropped afterwards."""
    name = f"aishell_verify_{uuid.uuid4().hex[:10]}"
    dialect = conn.dialect.name
    admin = conn.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    quoted = quote_identifier(conn.dialect, name)
    try:
        admin.execute(text(f"CREATE DATABASE {quoted}"))
        yield conn.engine.url.set(database=name), name
    finally:
        suffix = " WITH (FORCE)" if dialect == "postgresql" else ""
        admin.execute(text(f"DROP DATABASE IF EXISTS {quoted}{suffix}"))
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


def _pg_schema_problems(path: Path, url: URL, database: str) -> list[str]:
    """The archive's schema against the schema of what it restored into."""
    env = _server_env(url)
    archived = _run(["pg_restore", "--schema-only", "--no-owner", "-f", "-", str(path)], env)
    restored = _run(["pg_dump", "--schema-only", "--no-owner", *_pg_args(url), database], env)
    expected = schema_lines(archived.stdout.decode(errors="replace"))
    actual = schema_lines(restored.stdout.decode(errors="replace"))
    if expected != actual:
        missing = [line for line in expected if line not in actual][:3]
        return [f"the restored schema differs from the archive's: {missing or 'order'}"]
    return []


def _restored(url: URL, tables: list[str], sums: dict[str, int]) -> tuple[dict, dict]:
    """Row counts, and checksums of the tables the manifest has them for, after a restore."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return _counts(conn, tables), _checksums(conn, {t: 0 for t in sums})
    finally:
        engine.dispose()


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
            conn.execute(f'DROP TABLE IF EXISTS main."{table.replace(chr(34), chr(34) * 2)}"')
        for table in manifest["changed"]:
            quoted = '"' + table.replace('"', '""') + '"'
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
    dialect: str, url: URL, database: str, path: Path, manifest: dict[str, Any], replace: bool
) -> None:
    env = _server_env(url)
    command = restore_argv(dialect, url, database, path, manifest, replace)
    if command is not None:
        argv, stdin = command
        if stdin is None:
            _run(argv, env)
        else:
            with stdin.open("rb") as dump:
                _run(argv, env, stdin=dump)
    if manifest["kind"] == "incremental" and manifest["dropped"]:
        engine = create_engine(url.set(database=database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in dropped_statements(conn.dialect, manifest):
                    conn.execute(text(statement))
        finally:
            engine.dispose()


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
    conn = ctx.connection
    dialect = manifest["dialect"]
    expected = manifest["tables"]
    expected_sums = manifest.get("checksums") or {}
    restored: dict[str, int] = {}
    restored_sums: dict[str, str] = {}
    if chain and dialect == "sqlite":
        scratch = path.with_name(path.name + f".verify-{uuid.uuid4().hex[:6]}")
        try:
            copy = sqlite3.connect(scratch)
            try:
                for link, link_manifest in chain:
                    _sqlite_apply(copy, link, link_manifest)
                check = copy.execute("PRAGMA integrity_check").fetchone()[0]
                if check != "ok":
                    problems.append(f"integrity_check: {check}")
                else:
                    for t in expected:
                        quoted = '"' + t.replace('"', '""') + '"'
                        restored[t] = copy.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
                    restored_sums = _sqlite_checksums(copy, {t: 0 for t in expected_sums})
            except sqlite3.DatabaseError as exc:
                problems.append(f"the backup cannot be read: {exc}")
            finally:
                copy.close()
        finally:
            scratch.unlink(missing_ok=True)
    elif chain and params.get("quick"):
        if dialect == "postgresql":
            # Decodes every block of each archive; --list would read only its index.
            for link, _ in chain:
                if link.stat().st_size:
                    _run(["pg_restore", "-f", "/dev/null", str(link)], _server_env(conn.engine.url))
    elif chain:
        url = conn.engine.url
        with _scratch_server_database(conn) as (scratch_url, name):
            for link, link_manifest in chain:
                _server_apply(dialect, url, name, link, link_manifest, replace=False)
            restored, restored_sums = _restored(scratch_url, list(expected), expected_sums)
            if dialect == "postgresql" and len(chain) == 1:
                problems += _pg_schema_problems(path, url, name)
    if restored:
        for table, rows in expected.items():
            if restored.get(table) != rows:
                problems.append(f"{table}: {restored.get(table)} rows restored, {rows} expected")
        for table, checksum in expected_sums.items():
            if restored_sums.get(table) != checksum:
                problems.append(f"{table}: restored contents differ from the backup's checksum")
        extra = sorted(set(restored) - set(expected))
        if extra:
            problems.append(f"tables the backup does not hold came back: {', '.join(extra)}")
    ok = not problems
    result.update(
        {
            "ok": ok,
            "problems": problems,
            "chain": [link.name for link, _ in chain],
            "tables_compared": len(restored),
            "checksums_compared": len(restored_sums),
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
                replace=bool(params.get("replace")),
            )
    counts = _counts(conn, list(manifest["tables"]))
    wrong = {t: (counts.get(t), n) for t, n in manifest["tables"].items() if counts.get(t) != n}
    if wrong:
        raise StepFailed(f"Restored row counts differ from the manifest: {wrong}")
    return {
        "restored_tables": len(counts),
        "rows": sum(counts.values()),
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
