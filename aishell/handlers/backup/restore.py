"""Restoring a backup (and the chain it builds on) into the target.

Every precheck runs before anyone is asked to approve the restore: the chain's
manifests, the dialect, an empty target (or --replace), the client programs on PATH,
free disk, each file's sha256 against its manifest and the backup catalog, and each
manifest against the one the catalog recorded; the other sessions on the target's
database are named (connected.py). After the
restore, the target's tables, rows and contents are compared with the manifest (on
MariaDB, the scratch copy's, before it is swapped in). Every preview says how the
restore happens on its engine and what a failure leaves.
"""

from __future__ import annotations

import shlex
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.errors import StepFailed
from aishell.handlers import cached
from aishell.handlers.backup.apply import (
    data_version,
    dropped_statements,
    each_file,
    restore_argv,
    server_apply,
    sqlite_apply,
    sqlite_chain_apply,
)
from aishell.handlers.backup.connected import other_sessions, sessions_line
from aishell.handlers.backup.elsewhere import elsewhere
from aishell.handlers.backup.manifest import Chain, as_catalogued, read_manifest
from aishell.handlers.backup.measure import (
    NOT_COUNTED,
    Measured,
    compare,
    measure_connection,
    measure_server,
    measure_sqlite_file,
)
from aishell.handlers.backup.processes import refuse_no_database
from aishell.handlers.backup.qualified import refuse_named_database
from aishell.handlers.backup.replaces import Replaced, restore_replaces
from aishell.handlers.backup.searched import refuse_other_schema
from aishell.handlers.backup.swap import (
    NOT_SWAPPED,
    SCRATCH_SHOWN,
    STARTED,
    SWAP,
    SWAPPING,
    how,
    not_swappable,
    swap_commands,
    swap_restore,
)
from aishell.sqltext import text
from aishell.targets.appcode import read_app_code
from aishell.targets.catalog import user_tables
from aishell.tool.context import ToolContext

# Free space a SQLite restore wants beyond the backup's size: its journal, and slack.
RESTORE_MARGIN = 1.2

SQLITE_HOW = (
    "how: atomic. The SQLite backup API copies the backup over the file in one "
    "transaction (a chain is first built in a scratch file beside it): a restore that "
    "fails or is stopped leaves the file as it was"
)


@dataclass(frozen=True)
class _Prechecked:
    """A restore that passed every precheck: its chain, what it shows, its estimate, and
    the target's tables it replaces (by the catalog's names)."""

    chain: Chain
    lines: list[str]
    estimate: dict[str, Any]
    tables: tuple[str, ...] = ()
    # MariaDB: loaded into a scratch database and swapped in whole (swap.py).
    swap: bool = False


def _links(path: Path, catalog: list[dict[str, Any]]) -> Chain:
    """A backup and those it builds on, oldest first, from their manifests alone."""
    links: Chain = []
    current: Path | None = path
    while current is not None:
        if not current.is_file():
            away = elsewhere(str(current), catalog)
            if away is not None:
                raise StepFailed(away)
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


def _sqlite_file(conn: Connection) -> Path | None:
    for _seq, name, file in conn.execute(text("PRAGMA database_list")):
        if name == "main" and file:
            return Path(file)
    return None


def _measure_sqlite(conn: Connection, manifest: dict[str, Any]) -> Measured:
    """The restored file measured as its manifest was; one whose schema names the
    application's code is read on a connection of its own, read-only, with tripwires in
    place of that code (never on the target's, which later steps write through)."""
    file = _sqlite_file(conn)
    if file is not None and read_app_code(conn).uses:
        return measure_sqlite_file(file, manifest)
    return measure_connection(conn, manifest)


def _disk(chain: Chain, conn: Connection) -> dict[str, Any] | str:
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
    # A chain is built in a scratch file beside the target first (apply.py).
    copies = 2 if len(chain) > 1 else 1
    needed = int(size * RESTORE_MARGIN) * copies
    free = shutil.disk_usage(target.parent).free
    if free < needed:
        twice = ", twice: the chain is built in a scratch file first" if copies > 1 else ""
        raise StepFailed(
            f"Not enough free space in {target.parent} for the restore: {needed:,} bytes "
            f"needed (the backup's {size:,} and a {RESTORE_MARGIN - 1:.0%} margin{twice}), "
            f"{free:,} free; free space there and retry"
        )
    return {"folder": str(target.parent), "free_bytes": free, "needed_bytes": needed}


def _sqlite_commands(chain: Chain, conn: Connection) -> list[tuple[str, bool]]:
    """What a SQLite restore does, file by file, as shown (none of it is SQL)."""
    into = _sqlite_file(conn) or "the target"
    shown: list[tuple[str, bool]] = []
    for link, manifest in chain:
        if manifest["kind"] == "full":
            shown.append((f"SQLite backup API: copy {link} into {into}", False))
        else:
            changed = ", ".join(manifest.get("changed") or []) or "none"
            dropped = ", ".join(manifest.get("dropped") or []) or "none"
            shown.append(
                (
                    f"SQLite: from {link}, drop and reload tables {changed}; drop tables {dropped}",
                    False,
                )
            )
    return shown


def _commands(
    chain: Chain, conn: Connection, replace: bool, lock_wait: float | None, into: str = ""
) -> list[tuple[str, bool]]:
    """Every command the restore runs, as shown, and whether it is SQL; refuses when a
    client program it needs is not on PATH. `into`: the database it loads, where it is
    not the target's (a swapped restore's scratch database)."""
    dialect = conn.dialect.name
    url = conn.engine.url
    if dialect == "sqlite":
        return _sqlite_commands(chain, conn)
    shown: list[tuple[str, bool]] = []
    database = into or str(url.database)
    for link, manifest in chain:
        command = restore_argv(dialect, url, database, link, manifest, replace, lock_wait)
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
    links = _links(path, ctx.backup_catalog())
    manifest = links[-1][1]
    conn = ctx.connection
    dialect = conn.dialect.name
    refuse_no_database(conn.engine.url, ctx.target, "a restore into it")
    if family(manifest["dialect"]) != family(dialect):
        raise StepFailed(
            f"Backup {path.name} is a {manifest['dialect']} backup and target '{ctx.target}' "
            f"is {dialect}; restore it into a {manifest['dialect']} target"
        )
    refuse_other_schema(links, ctx)
    refuse_named_database(links, ctx)
    existing = user_tables(conn)
    if existing and not replace:
        raise StepFailed(_not_empty(existing, links, ctx))
    commands = _commands(links, conn, replace, params["lock_wait_seconds"])
    disk = _disk(links, conn)
    sha = as_catalogued(links, ctx.every_backup(), params.get("sha256"))
    replaced = _replaced(links, ctx, replace)
    why = not_swappable(links, conn, replaced.tables) if family(dialect) == "mysql" else ""
    if why is None:
        commands = _commands(links, conn, False, None, SCRATCH_SHOWN)
        commands += swap_commands(conn, params["lock_wait_seconds"])
    said = _how(dialect, links, why)
    sessions = other_sessions(conn)
    estimate = {
        "commands": [line for line, _ in commands],
        "how": said,
        # Every object of the target the restore drops or overwrites, and those of them
        # that hold data (which a person names the approval of: policy._replaces_data).
        "replaces_tables": replaced.objects,
        "replaces_data": replaced.data,
        "backup": _described(path, links, sha),
        # Who else is on the database now: the restore neither waits for them nor ends them.
        "other_sessions": sessions,
        "disk": disk,
    }
    lines = [line if is_sql else f"-- {line}" for line, is_sql in commands]
    if replaced.objects:
        lines.append(
            f"-- replaces {_objects(len(replaced.objects))} of '{ctx.target}': "
            + ", ".join(replaced.objects)
        )
    else:
        lines.append(f"-- replaces nothing in '{ctx.target}'")
    connected = sessions_line(sessions, ctx.target)
    lines[:0] = [f"-- {said}", *([f"-- {connected}"] if connected else [])]
    tables = tuple(replaced.tables)
    return _Prechecked(links, lines, estimate, tables, swap=why is None)


def _how(dialect: str, links: Chain, why: str | None) -> str:
    """How the restore happens on the target's engine, and what a failure leaves: every
    preview and prompt says it. `why`: on MariaDB, why it cannot be swapped in whole."""
    if family(dialect) == "mysql":
        return how(why)
    if dialect == "postgresql":
        if len(links) == 1:
            return (
                "how: atomic. pg_restore loads the backup into the target in one "
                "transaction (--single-transaction): a restore that fails or is stopped "
                "leaves the target as it was"
            )
        return (
            "how: NOT atomic as a whole: pg_restore loads each file of the chain in one "
            "transaction of its own, so a restore that fails or is stopped after the "
            "first file leaves the files before it restored"
        )
    return SQLITE_HOW


def _not_empty(existing: list[str], links: Chain, ctx: ToolContext) -> str:
    """Why a restore without --replace refuses a target that holds tables; when an
    earlier attempt of this step began restoring this backup (STARTED), what it left,
    and the command that restores it again over them."""
    names = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
    said = f"Target '{ctx.target}' is not empty ({len(existing)} tables: {names})"
    earlier = ctx.load_progress() or {}
    # A swapped restore leaves nothing of its own in the target.
    if earlier.get(STARTED) == str(links[-1][0]) and SWAP not in earlier:
        return (
            f"{said}: what an earlier attempt of this restore left when it stopped part "
            f"way; restore it again with --replace (`aishell restore BACKUP_ID --to "
            f"{ctx.target} --replace`) to restore over them"
        )
    return f"{said}; restore into an empty database, or pass --replace to overwrite it"


def _replaced(links: Chain, ctx: ToolContext, replace: bool) -> Replaced:
    """What the restore replaces, read from the backup's own drop statements; refuses a
    restore that would stop part way, or replace anything without --replace."""
    replaced = restore_replaces(links, ctx.connection, ctx)
    name = links[-1][0].name
    if replaced.clashes:
        raise StepFailed(
            f"Backup {name} cannot be restored into '{ctx.target}': "
            f"{'; '.join(replaced.clashes)}; rename or drop that object first"
        )
    if replaced.objects and not replace:
        shown = ", ".join(replaced.objects[:5]) + (", ..." if len(replaced.objects) > 5 else "")
        raise StepFailed(
            f"Target '{ctx.target}' holds what backup {name} would replace "
            f"({_objects(len(replaced.objects))}: {shown}); restore into an empty database, or "
            "pass --replace to overwrite it"
        )
    return replaced


def _objects(count: int) -> str:
    return f"{count} object" + ("" if count == 1 else "s")


def _described(path: Path, links: Chain, sha: str) -> dict[str, Any]:
    """The backup a restore reads, as its estimate shows it."""
    manifest = links[-1][1]
    return {
        "path": str(path),
        "kind": manifest["kind"],
        "chain": [link.name for link, _ in links],
        "sha256": sha,
        "sha256_ok": True,
        "size_bytes": sum(link.stat().st_size for link, _ in links),
        "tables": dict(manifest["tables"]),
        "rows": sum(manifest["tables"].values()),
    }


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


def restore_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return dict(_prechecked(params, ctx).estimate)


def restore_subject(params: Mapping[str, Any], ctx: ToolContext) -> tuple[str, ...]:
    """The target's tables the restore replaces, whose identity, rows and bytes its
    approval covers (a table grown since is asked about again). On PostgreSQL those of
    the session's schema, as the approval's measure names tables."""
    try:
        names = _prechecked(params, ctx).tables
    except StepFailed:
        return ()  # the step fails on it before anyone is asked
    conn = ctx.connection
    if conn.dialect.name != "postgresql":
        return tuple(names)
    schema = str(conn.execute(text("SELECT pg_catalog.current_schema()")).scalar())
    return tuple(n[len(schema) + 1 :] for n in names if n.startswith(f"{schema}."))


def render_restore(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    try:
        return list(_prechecked(params, ctx).lines)
    except StepFailed as exc:
        # A preview still shows the step; the estimate fails it with the same line.
        return [f"-- refused: {exc}"]


def restore(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    path = Path(params["backup_path"])
    prechecked = _prechecked(params, ctx)
    chain = prechecked.chain
    manifest = chain[-1][1]
    if prechecked.swap:
        return _restored(path, chain, swap_restore(chain, params, ctx))
    conn = ctx.connection
    dialect = conn.dialect.name
    url = conn.engine.url
    raw = conn.connection.driver_connection
    if dialect == "sqlite" and not isinstance(raw, sqlite3.Connection):
        raise StepFailed(f"Target '{ctx.target}' is not a SQLite file")
    version = data_version(raw) if isinstance(raw, sqlite3.Connection) else None
    ctx.save_progress({STARTED: str(path)})
    _load(chain, params, ctx, raw)
    # The sha256 only says the file is the one the manifest describes; the restored
    # rows and contents must be the ones it describes too.
    if dialect == "sqlite":
        measured = _measure_sqlite(conn, manifest)
    else:
        measured = measure_server(url, str(url.database), manifest, ctx)
    # Tables the backup does not hold may stay in a target restored with --replace.
    # Those it holds but could not count must be there too.
    unread = manifest.get(NOT_COUNTED) or {}
    measured.tables &= set(manifest["tables"]) | set(unread)
    problems = compare(manifest, measured)
    if problems and isinstance(raw, sqlite3.Connection) and data_version(raw) != version:
        raise StepFailed(
            f"Another process wrote to '{ctx.target}' while {path.name} was restored into "
            f"it, so what it holds is not the file's alone ({'; '.join(problems[:3])}); "
            "stop what writes to it, then restore again"
        )
    if problems:
        raise StepFailed(
            f"The restore of {path.name} does not match its manifest: {'; '.join(problems[:3])}; "
            "the target now holds what the file held: restore another backup"
        )
    return _restored(path, chain, measured)


def _load(chain: Chain, params: Mapping[str, Any], ctx: ToolContext, raw: Any) -> None:
    """Load the chain into the target itself (every restore but a swapped one)."""
    conn = ctx.connection
    url = conn.engine.url
    file = _sqlite_file(conn) if isinstance(raw, sqlite3.Connection) else None
    if isinstance(raw, sqlite3.Connection) and file is not None and len(chain) > 1:
        # Built in a scratch file first: stopped before the copy, the file is as it was
        # and the step may run again.
        backup = str(chain[-1][0])
        ctx.save_progress({STARTED: backup, SWAP: NOT_SWAPPED})

        def copying() -> None:
            ctx.save_progress({STARTED: backup, SWAP: SWAPPING})

        sqlite_chain_apply(raw, chain, ctx, file, copying)
        return
    for link, link_manifest, progress, before in each_file(chain, ctx):
        if isinstance(raw, sqlite3.Connection):
            sqlite_apply(raw, link, link_manifest, progress, before)
        else:
            server_apply(
                conn.dialect.name,
                url,
                str(url.database),
                link,
                link_manifest,
                bool(params.get("replace")),
                ctx,
                progress,
                before,
                params["lock_wait_seconds"],
            )


def _restored(path: Path, chain: Chain, measured: Measured) -> dict[str, Any]:
    """The step's output: what was restored, as measured against the manifest."""
    unread = chain[-1][1].get(NOT_COUNTED) or {}
    return {
        "restored_tables": len(measured.counts),
        "rows": sum(measured.counts.values()),
        "checksums_compared": len(measured.checksums),
        "backup_path": str(path),
        "chain": [link.name for link, _ in chain],
        **({NOT_COUNTED: unread} if unread else {}),
    }
