"""May this process write the SQLite file, and what each agent needs of it.

A database file (or folder) the process may not write is found before any write and
the step ends `skipped` with the reason; so does a write SQLite refuses as read-only.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.handlers import skip_table
from aishell.sqltext import text


def database_file(conn: Connection) -> Path | None:
    for _seq, name, file in conn.execute(text("PRAGMA database_list")):
        if name == "main" and file:
            return Path(file)
    return None


def read_only_reason(conn: Connection, run_cache: dict[str, Any] | None = None) -> str | None:
    """Why SQLite would refuse to write this database, or None. os.access asks the
    kernel as SQLite's own open() would (a read-only mount or an immutable file refuses
    even root); the file is not opened, which would drop SQLite's POSIX locks. With a
    run's cache the file's path is looked up once per run; its access, every time."""
    if run_cache is None:
        path = database_file(conn)
    else:
        if "sqlite_file" not in run_cache:
            run_cache["sqlite_file"] = database_file(conn)
        path = run_cache["sqlite_file"]
    if path is None:
        return None
    if not os.access(path, os.W_OK):
        if mounted_read_only(path):
            return f"the file system holding {path} is mounted read-only"
        return f"the database file {path} is read-only for this process"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        if mounted_read_only(path.parent):
            return f"the file system holding {path} is mounted read-only"
        return f"the folder {path.parent} is read-only, and SQLite writes its journal there"
    return None


def mounted_read_only(path: Path) -> bool:
    """Whether the file system holding `path` is mounted read-only: no mode of the file
    makes it writable then, so the fix is another (a remount, a copy)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def require_writable(conn: Connection, table: str, action: str) -> None:
    """Raise StepSkipped before `action` when SQLite could not write the file."""
    reason = read_only_reason(conn)
    if reason is not None:
        skip_table(table, f"{action} of {table} skipped: {reason}")


def write(conn: Connection, sql: str, table: str, action: str) -> None:
    """Run one write; SQLite's refusal to write a read-only database is a skip."""
    try:
        conn.execute(text(sql))
    except DBAPIError as exc:
        skip_table(table, f"{action} of {table} {read_only_refusal(exc)}")


def read_only_refusal(exc: DBAPIError) -> str:
    """How SQLite refused to write a read-only database; any other error is raised."""
    name = str(getattr(exc.orig, "sqlite_errorname", ""))
    if not name.startswith("SQLITE_READONLY"):
        raise exc
    return f"refused by SQLite: {exc.orig} ({name})"


# --- what each agent needs of the process (aishell targets check) -------------------------


def agent_needs(conn: Connection) -> list[dict[str, Any]]:
    """What each agent needs of this database file and, per need, what is missing."""
    read_only = read_only_reason(conn)
    writes = "write access to the database file and its folder"
    path = database_file(conn)
    fix = None
    if read_only and path is not None:
        fix = (
            f"remount the file system holding {path} read-write, or copy the database to "
            "a writable place and point the target at the copy"
            if mounted_read_only(path)
            else f"give user {getpass.getuser()} write access to {path} and {path.parent} "
            "(chmod u+w), or run aishell as their owner"
        )
    return [
        {
            "agent": "maintenance",
            "privilege": writes,
            "needed_for": "ANALYZE, VACUUM and REINDEX (skipped without it)",
            "missing": read_only,
            "fix": fix,
        },
        {
            "agent": "backup",
            "privilege": "read access to the database file",
            "needed_for": "the backup API copy",
            "missing": None,
            "fix": None,
        },
        {
            "agent": "log_cleanup",
            "privilege": writes,
            "needed_for": "delete_old_records",
            "missing": read_only,
            "fix": fix,
        },
    ]
