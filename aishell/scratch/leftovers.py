"""What killed runs leave of their scratch things, and removing it.

A process killed with SIGKILL, or by the power going, cleans up nothing. So each scratch
thing is recorded in the state store before it is made, with the process that makes it,
and forgotten once it is gone; what a process that died left behind is removed by the
next run and by `aishell doctor --clean`.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aishell.sqltext import quote_identifier, text
from aishell.targets.clientlogin import LOGIN_FOLDER_PREFIX

if TYPE_CHECKING:
    from aishell.state.store import StateStore


FILE = "file"  # removed whole, with SQLite's journal files beside it
BACKUP = "backup"  # a finished file that is a backup only once its manifest exists
DATABASE = "database"  # a scratch database on a target's server
PROCESS = "process"  # a child process and its process group

# A scratch database's name: this prefix and 10 hex digits. The only database names a
# scratch entry may drop: a damaged or edited state store must never be able to name a
# real database.
SCRATCH_DATABASE_PREFIX = "aishell_verify_"
SCRATCH_DATABASE = re.compile(rf"{SCRATCH_DATABASE_PREFIX}[0-9a-f]{{10}}")
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")


def remove_file(path: Path) -> bool:
    """Remove a file and its SQLite journal files; False when one could not be removed."""
    removed = True
    for leftover in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDECARS)):
        try:
            leftover.unlink(missing_ok=True)
        except IsADirectoryError:
            removed = False  # a scratch name never names a folder: leave it alone
        except OSError:
            removed = False
    return removed


class _Kept(Exception):
    """An entry that could not be removed now, and why; elsewhere: its target is not
    one this caller can reach (a run reaches only its own)."""

    def __init__(self, why: str, elsewhere: bool = False) -> None:
        super().__init__(why)
        self.elsewhere = elsewhere


def leftovers(store: StateStore) -> list[dict[str, Any]]:
    """What processes that died left behind and is still there (nothing is touched; a
    scratch database counts as there, since only its server can tell)."""
    return [_shown(entry) for entry in store.scratch_of_dead_runs() if _there(entry)]


def clean(
    store: StateStore,
    engine_for: Callable[[str], Engine | None],
    *,
    quiet_unreachable: bool = False,
) -> dict[str, Any]:
    """Remove what processes that died left behind: kill their child processes first
    (an orphaned restore holds its scratch database), then delete files, then drop
    scratch databases through engine_for(target). What cannot be removed is kept, with
    why; quiet_unreachable leaves out the databases of targets engine_for does not give.
    Entries of things already gone are forgotten and counted."""
    removed: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    forgotten = 0
    order = {PROCESS: 0, FILE: 1, BACKUP: 1, DATABASE: 2}
    for entry in sorted(store.scratch_of_dead_runs(), key=lambda e: order.get(e["kind"], 3)):
        try:
            done = _remove(entry, engine_for) if _there(entry) else None
        except _Kept as why:
            if not (quiet_unreachable and why.elsewhere):
                kept.append({**_shown(entry), "why": str(why)})
            continue
        store.forget_scratch(entry["id"])
        if done is None:
            forgotten += 1
        else:
            removed.append({**_shown(entry), "done": done})
    return {"removed": removed, "kept": kept, "forgotten": forgotten}


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": entry["kind"],
        "name": entry["name"],
        "run_id": entry["run_id"],
        "target": entry["target"],
        "pid": entry["details"].get("pid") if entry["kind"] == PROCESS else entry["pid"],
        "recorded_at": entry["created_at"],
    }


def _child_running(details: dict[str, Any]) -> bool:
    """Is the recorded child still running, and still that child (not a later process
    that got its pid)?"""
    pid, started = details.get("pid"), details.get("started")
    if not isinstance(pid, int) or not started:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and fields[19].decode() == started


def _there(entry: dict[str, Any]) -> bool:
    kind, path = entry["kind"], Path(entry["name"])
    if kind == PROCESS:
        # Without a pid the run died before the child started; a child that did start
        # died with it (the kernel's parent-death signal).
        return _child_running(entry["details"])
    if kind == FILE:
        return any(path.with_name(path.name + s).exists() for s in ("", *SQLITE_SIDECARS))
    if kind == BACKUP:
        # A renamed file with its manifest is a finished backup, whatever the run did next.
        return path.exists() and not path.with_name(path.name + ".manifest.json").exists()
    return True


def _remove(entry: dict[str, Any], engine_for: Callable[[str], Engine | None]) -> str:
    kind, name = entry["kind"], entry["name"]
    if kind == PROCESS:
        return _kill_orphan(entry["details"])
    if kind in (FILE, BACKUP):
        if not remove_file(Path(name)):
            raise _Kept(f"cannot delete {name}; delete it by hand")
        folder = Path(name).parent
        if folder.name.startswith(LOGIN_FOLDER_PREFIX):
            with suppress(OSError):  # another of its files is still there: its turn
                folder.rmdir()  # the login file's private folder, once empty
        return "deleted"
    if kind == DATABASE:
        return _drop_database(name, entry["target"], engine_for)
    raise _Kept(f"unknown kind of scratch entry '{kind}'; this aishell is older than the entry")


def _kill_orphan(details: dict[str, Any]) -> str:
    pid = details["pid"]
    pgid = details.get("pgid")
    try:
        if pgid == pid:
            os.killpg(pid, signal.SIGKILL)  # the child and anything it started
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "already gone"
    except PermissionError:
        raise _Kept(f"not allowed to kill process {pid}; kill it as its owner") from None
    return f"killed process group {pid}" if pgid == pid else f"killed process {pid}"


def _drop_database(
    name: str, target: str | None, engine_for: Callable[[str], Engine | None]
) -> str:
    if not SCRATCH_DATABASE.fullmatch(name):
        raise _Kept(f"'{name}' is not a name aishell gives scratch databases; not dropped")
    engine = engine_for(target) if target else None
    if engine is None:
        raise _Kept(
            f"target '{target}' is not configured; drop database {name} on its server by hand",
            elsewhere=True,
        )
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
            quoted = quote_identifier(admin.dialect, name)
            if admin.dialect.name == "postgresql":
                # A CREATE DATABASE whose client died still finishes on the server, after
                # this drop would have found nothing: it is ended first (and waited for).
                admin.execute(
                    text(
                        "SELECT pg_catalog.pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                        "WHERE pid <> pg_catalog.pg_backend_pid() "
                        "AND query ILIKE 'CREATE DATABASE%' "
                        "AND position(:name in query) > 0"
                    ),
                    {"name": name},
                ).all()
                # FORCE ends the sessions of a restore that outlived its run.
                admin.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            else:
                _end_sessions_in(admin, name)
                admin.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise _Kept(
            f"cannot drop {name} on target '{target}': {first[0] if first else exc}"
        ) from None
    return f"dropped on target '{target}'"


def _end_sessions_in(admin: Connection, name: str) -> None:
    """MySQL/MariaDB: end the sessions still in a scratch database (a restore that
    outlived its run would hold the drop back for as long as it waits)."""
    sessions = admin.execute(
        text(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
            "AND (DB = :name OR (INFO LIKE 'CREATE DATABASE%' AND LOCATE(:name, INFO) > 0))"
        ),
        {"name": name},
    ).all()
    for (session,) in sessions:
        with suppress(SQLAlchemyError):  # it may have ended by itself meanwhile
            admin.execute(text("KILL CONNECTION :id"), {"id": int(session)})
