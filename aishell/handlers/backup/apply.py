"""Loading one backup file of a chain into a database: a SQLite file through its backup
API (an increment table by table), a server's through pg_restore or the mariadb client.
Validation loads into a scratch copy; a restore into the target itself, but a SQLite
chain (built in a scratch file, then copied over the target whole) and a MariaDB restore
that can be swapped in (swap.py).
"""

from __future__ import annotations

import math
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, Connection, Dialect

from aishell.dialects import family
from aishell.errors import StepFailed, StepInterrupted, StepTimeout
from aishell.files import make_private_file
from aishell.handlers.backup.dumpevents import Feeder
from aishell.handlers.backup.inert import LeftOut
from aishell.handlers.backup.lockwait import RESTORE_AGAIN, LockWatch, Throttled, held_by
from aishell.handlers.backup.manifest import Chain
from aishell.handlers.backup.pgincrement import SEQUENCES
from aishell.handlers.backup.processes import (
    ToolFailed,
    my_args,
    mysql_client,
    pg_args,
    run_tool,
    server_env,
)
from aishell.handlers.backup.reporting import ByteProgress
from aishell.handlers.backup.sqliteincrement import carry_sequences
from aishell.risk import RiskLevel
from aishell.sqltext import quote_identifier, quote_plain_identifier, text
from aishell.targets.lockholders import lock_holders
from aishell.targets.sqlitewait import heeding_waits
from aishell.tool.context import ToolContext
from aishell.tool.side import Side
from aishell.units import took


def each_file(
    chain: Chain, ctx: ToolContext
) -> Iterator[tuple[Path, dict[str, Any], ByteProgress, int]]:
    """The chain's files, oldest first, each with the progress figures of loading the
    whole chain (its files' bytes) and the bytes of the files before it."""
    progress = ByteProgress(ctx.report, sum(link.stat().st_size for link, _ in chain))
    before = 0
    for link, manifest in chain:
        yield link, manifest, progress, before
        before += link.stat().st_size
    progress.finish()


def data_version(conn: sqlite3.Connection) -> int:
    """The SQLite file's data version as `conn` sees it: it moves when another
    connection commits to the file, never for `conn`'s own writes (a restore's)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


# Pages the SQLite backup API copies between two reports of how far it got.
BACKUP_PAGES = 1024


def sqlite_apply(
    conn: sqlite3.Connection,
    path: Path,
    manifest: dict[str, Any],
    progress: ByteProgress | None = None,
    before: int = 0,
) -> None:
    """Load one SQLite backup file into conn; `progress` counts its bytes (after
    `before` bytes of the files loaded before it)."""
    size = path.stat().st_size
    if manifest["kind"] == "full":
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)

        def copied(_status: int, remaining: int, total: int) -> None:
            if progress is not None and total:
                progress.reached(before + size * (total - remaining) // total)

        try:
            # conn: a restore's target, whose file another process may hold.
            with heeding_waits(conn, copied) as look:
                source.backup(conn, pages=BACKUP_PAGES, progress=look)
        finally:
            source.close()
    else:
        _sqlite_increment(conn, path, manifest)
    if progress is not None:
        progress.reached(before + size)


def sqlite_chain_apply(
    conn: sqlite3.Connection,
    chain: Chain,
    ctx: ToolContext,
    target: Path,
    copying: Callable[[], None],
) -> None:
    """Load a chain of SQLite backups into conn, whole or not at all. An increment's
    drops would commit one by one (DDL outside a transaction commits at once), and each
    file of the chain on its own: so the chain is built in a scratch file beside the
    target (recorded first, removed after), then copied over the target by the backup
    API in one transaction (`copying` is called just before)."""
    scratch = target.with_name(f"{target.name}.restore-{uuid.uuid4().hex[:6]}")
    with ctx.scratch.file(scratch):
        copy = sqlite3.connect(make_private_file(scratch))
        try:
            for link, manifest, progress, before in each_file(chain, ctx):
                sqlite_apply(copy, link, manifest, progress, before)
            copying()
            with heeding_waits(conn) as look:
                copy.backup(conn, pages=BACKUP_PAGES, progress=look)
        finally:
            copy.close()


def _sqlite_increment(conn: sqlite3.Connection, path: Path, manifest: dict[str, Any]) -> None:
    conn.execute("ATTACH DATABASE ? AS inc", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        for table in [*manifest["changed"], *manifest["dropped"]]:
            conn.execute(f"DROP TABLE IF EXISTS main.{quote_plain_identifier(table)}")
        for table in manifest["changed"]:
            quoted = quote_plain_identifier(table)
            objects = conn.execute(
                "SELECT type, sql FROM inc.sqlite_schema WHERE tbl_name = ? AND sql IS NOT NULL "
                "ORDER BY type = 'table' DESC",
                (table,),
            ).fetchall()
            for kind, sql in objects:
                conn.execute(sql)
                if kind == "table":
                    conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM inc.{quoted}")
        carry_sequences(conn, manifest)
        conn.commit()
    finally:
        conn.execute("DETACH DATABASE inc")


def restore_argv(
    dialect: str,
    url: URL,
    database: str,
    path: Path,
    manifest: Mapping[str, Any],
    replace: bool,
    lock_wait: float | None = None,
) -> tuple[list[str], Path | None] | None:
    """The client command that loads one server backup file into `database`, and the file
    it reads on stdin; None for an empty increment. What a restore shows is built here too.
    `lock_wait`: how long MySQL's client may wait for a lock (PostgreSQL's is watched)."""
    if not path.stat().st_size:
        return None
    if dialect == "postgresql":
        argv = ["pg_restore", "--no-owner", "--exit-on-error"]
        if lock_wait is not None:
            # Into a target (a scratch copy has no lock wait): one transaction, so a
            # restore that fails part way leaves the target as it was, never half made.
            argv.append("--single-transaction")
        if replace or manifest["kind"] == "incremental":
            argv += ["--clean", "--if-exists"]
        return [*argv, "-d", database, *pg_args(url), str(path)], None
    # The dump drops and recreates each table it holds. Its own SETs leave the lock
    # timeouts alone, so the session's hold.
    limits = []
    if lock_wait is not None:
        seconds = math.ceil(lock_wait)
        limits = [
            f"--init-command=SET SESSION lock_wait_timeout = {seconds}, "
            f"SESSION innodb_lock_wait_timeout = {seconds}"
        ]
    return [mysql_client(), *my_args(url), *limits, database], path


def dropped_statements(dialect: Dialect, manifest: Mapping[str, Any]) -> list[str]:
    """What an incremental backup runs once its file is loaded: the drops of the tables
    dropped since its parent, and on PostgreSQL each sequence set to the value it had
    (a sequence moves on without any row changing)."""
    if manifest["kind"] != "incremental":
        return []
    drops = [
        f"DROP TABLE IF EXISTS {quote_identifier(dialect, table)}"
        for table in manifest.get("dropped") or []
    ]
    sets = []
    for schema, name, last, called in manifest.get(SEQUENCES) or []:
        qualified = f"{quote_identifier(dialect, schema)}.{quote_identifier(dialect, name)}"
        regclass = "'" + qualified.replace("'", "''") + "'"
        sets.append(f"SELECT pg_catalog.setval({regclass}, {int(last)}, {bool(called)})")
    return drops + sets


def server_apply(
    dialect: str,
    url: URL,
    database: str,
    path: Path,
    manifest: dict[str, Any],
    replace: bool,
    ctx: ToolContext,
    progress: ByteProgress | None = None,
    before: int = 0,
    lock_wait: float | None = None,
    inert: LeftOut | None = None,
) -> None:
    """Load one server backup file into `database`; `progress` counts the bytes the
    client program has read of it (after `before` bytes of the files loaded before).
    `lock_wait`: the longest it may wait for another session's table lock; None for a
    scratch database of aishell's own, which nobody else holds. `inert`: a validation's
    scratch copy, loaded without running the database's code (inert.py), noting there
    what it leaves out."""
    env = server_env(url)
    command = restore_argv(dialect, url, database, path, manifest, replace, lock_wait)
    if command is not None and inert is not None:
        _inert_load(command, path, manifest, env, ctx, inert, progress, before)
    elif command is not None:
        argv, stdin = command
        watch = progress.reading(path, before) if progress is not None else None
        if lock_wait is not None and dialect == "postgresql":
            # pg_restore sets lock_timeout to 0 itself: its session is watched instead.
            lock_watch = LockWatch.for_postgresql(
                ctx.connection, "pg_restore", lock_wait, RESTORE_AGAIN
            )
            env = env | {"PGAPPNAME": lock_watch.name}
            watch = Throttled(lock_watch, watch)
        try:
            if stdin is None:
                run_tool(argv, env, ctx, watch=watch)
            else:
                with stdin.open("rb") as dump:
                    run_tool(argv, env, ctx, stdin=dump, watch=watch)
        except ToolFailed as exc:
            if lock_wait is None:  # a scratch copy of aishell's own, dropped after
                raise
            if not _MY_LOCK_WAIT.search(exc.stderr):
                raise StepFailed(f"{exc}. {_left_by(dialect, before)}") from None
            holders = lock_holders(ctx.connection, [])
            raise StepFailed(
                f"{argv[0]} waited {took(lock_wait, None)} for a table lock and stopped "
                f"({exc.cause}); the lock is held by " + held_by(holders, RESTORE_AGAIN, lock_wait)
            ) from None
        except (StepInterrupted, StepTimeout) as exc:  # stopped, or at the step's limit
            if lock_wait is None:
                raise
            raise type(exc)(f"{exc}. {_left_by(dialect, before)}", exc.details) from None
    if progress is not None:
        progress.reached(before + path.stat().st_size)
    if dropped_statements(ctx.connection.dialect, manifest):
        _drop_dropped(database, manifest, lock_wait, ctx)


def _inert_load(
    command: tuple[list[str], Path | None],
    path: Path,
    manifest: Mapping[str, Any],
    env: dict[str, str],
    ctx: ToolContext,
    inert: LeftOut,
    progress: ByteProgress | None,
    before: int,
) -> None:
    """Load one backup file into a validation's scratch database, leaving out what would
    run the database's code: pg_restore restores a TOC list without it; the mariadb
    client reads the dump from a pipe (no copy on disk) without its events, nor the
    triggers, routines and views whose SQL names the database it was taken of (the
    manifest's "database"): those would reach the source database from the scratch copy.
    A manifest that names no database (taken before they did): only the events."""
    argv, stdin = command
    if stdin is None:
        argv = [*argv[:-1], "-L", str(inert.pg_list(path)), argv[-1]]
        # pg_restore commits each object on its own: a scratch copy, dropped once
        # measured, need not wait for the WAL's flush at each (a third of the time
        # for thousands of objects). Durable or not, what is measured is the same.
        env = env | {"PGOPTIONS": f"{env.get('PGOPTIONS', '')} {SCRATCH_COMMITS}".strip()}
        watch = progress.reading(path, before) if progress is not None else None
        run_tool(argv, env, ctx, watch=watch)
        return
    database = manifest.get("database")
    with Feeder(stdin, database if isinstance(database, str) else None) as feeder:
        watch = feeder.watch(before, progress.reached) if progress is not None else None
        try:
            run_tool(argv, env, ctx, stdin=feeder.reader, watch=watch)
        finally:
            feeder.reader.close()
    if feeder.error is not None:
        raise feeder.error
    if feeder.filter.unended:
        raise ToolFailed(
            argv[0], "ERROR: the dump ends inside a block of its events, triggers or routines", 1
        )
    inert.events(feeder.filter.events)
    inert.naming(feeder.filter.naming, database)


# What a restore that stopped part way leaves: the mariadb client commits object by
# object, so what was dropped, made or loaded before the failure stays.
PARTLY_RESTORED = (
    "The target may be partly restored (the client commits each object as it goes): "
    "fix the cause, then restore again with --replace"
)
# pg_restore loads a file in one transaction: its failure leaves the target as it was
# before that file (an increment's earlier files of the chain stay).
NOTHING_RESTORED = "Nothing of it was restored (one transaction, rolled back)"
CHAIN_PARTLY_RESTORED = (
    "Nothing of that file was restored (one transaction, rolled back), but the chain's "
    "files before it were: fix the cause, then restore again with --replace"
)


def _left_by(dialect: str, before: int) -> str:
    """What a restore that stopped while loading a file leaves in the target; `before`:
    the bytes of the chain's files loaded before that one."""
    if dialect != "postgresql":
        return PARTLY_RESTORED
    return CHAIN_PARTLY_RESTORED if before else NOTHING_RESTORED


# The session setting a validation's pg_restore runs with (see _inert_load).
SCRATCH_COMMITS = "-c synchronous_commit=off"

# The MySQL client's words for a lock wait that ran out (MDL or InnoDB).
_MY_LOCK_WAIT = re.compile(r"ERROR 1205 \(HY000\)")


# A session's lock wait, set as it begins: a volatile call on PostgreSQL (a high write
# by the catalog's word), a SET on MySQL.
_PG_SESSION_WAIT = "SELECT pg_catalog.set_config('lock_timeout', :wait, false)"
_MY_SESSION_WAIT = "SET SESSION lock_wait_timeout = :wait"
# What a restore's second session sends besides the drops its preview shows, by family.
DROPPING_SQL = {"postgresql": (_PG_SESSION_WAIT,), "mysql": (_MY_SESSION_WAIT,)}


def _drop_dropped(
    database: str, manifest: Mapping[str, Any], lock_wait: float | None, ctx: ToolContext
) -> None:
    """The tables an increment records as dropped since its parent, dropped (and its
    sequences set) in a second session of the step's that may send nothing else;
    waiting at most lock_wait for each."""
    dialect = ctx.connection.dialect
    dropping = Side(
        "dropping the tables the increment dropped, setting its sequences",
        writes=DROPPING_SQL[family(dialect.name)],  # what tools show lists
        exact=tuple(dropped_statements(dialect, manifest)),
        risk=RiskLevel.HIGH,
        isolation_level="AUTOCOMMIT",
        database=database,
    )
    with ctx.side_session(dropping) as conn:
        if lock_wait is not None:
            _wait_at_most(conn, lock_wait)
        for statement in dropping.exact:
            conn.execute(text(statement))


def _wait_at_most(conn: Connection, lock_wait: float) -> None:
    """This session waits at most lock_wait for a lock, never less (MySQL counts whole
    seconds); the value bound."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(_PG_SESSION_WAIT),
            {"wait": f"{math.ceil(lock_wait * 1000)}ms"},
        )
    else:
        conn.execute(text(_MY_SESSION_WAIT), {"wait": math.ceil(lock_wait)})
