"""The other sessions connected to a restore's target database, which its preview and
prompt name: an application still connected reads the tables part way through a
restore that is not atomic, its writes wait behind the restore's locks or land in the
tables it replaces, and it goes on after it against data it did not write. aishell's
own sessions (this process's: ownsessions.py; and the one holding the run lock) are left
out; nobody's session is ended.

One query on each server, read where the restore is prechecked. SQLite's file has no
sessions: on Linux the other processes holding it open are named instead (/proc/PID/fd,
those this user may read), by their id, program and user alone (a command line may hold
a password); its writers are caught as the restore copies (apply.py).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.sqltext import text
from aishell.targets.identity import database_identity
from aishell.targets.lockholders import PG_SESSION, QUERY_CHARS, describe_mysql, describe_pg
from aishell.targets.locks import run_lock_key, run_lock_name
from aishell.targets.ownsessions import own_sessions

# The sessions a preview names; the others are counted.
SHOWN = 3

# Client backends on the database but this one and the one holding the run lock (a
# session advisory lock on the key's 64-bit hash: pg_locks splits it in classid, objid).
_PG_CONNECTED = (
    PG_SESSION
    + """WHERE a.datname = pg_catalog.current_database() AND a.backend_type = 'client backend'
  AND a.pid <> pg_catalog.pg_backend_pid() AND a.pid <> ALL(CAST(:own AS integer[]))
  AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks l
    WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND ((l.classid::pg_catalog.int8 << 32) | l.objid::pg_catalog.int8)
          = pg_catalog.hashtextextended(:k, 0))
ORDER BY a.backend_start
"""
)
_MY_CONNECTED = f"""
SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.COMMAND AS command,
       COALESCE(p.STATE, '') AS state, p.TIME AS seconds,
       LEFT(COALESCE(p.INFO, ''), {QUERY_CHARS}) AS query, NULL AS in_transaction
FROM information_schema.PROCESSLIST p
WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()
  AND p.ID <> COALESCE(IS_USED_LOCK(:run_lock), 0) AND p.ID NOT IN :own
ORDER BY p.ID
"""


def other_sessions(conn: Connection) -> list[str]:
    """The other sessions on conn's database, described as lock holders are; empty on
    SQLite, or where the server cannot be asked (a MySQL login without PROCESS sees
    only its own sessions)."""
    try:
        if conn.dialect.name == "postgresql":
            key = run_lock_key(database_identity(conn))
            values = {"k": key, "own": own_sessions(conn)}
            rows = conn.execute(text(_PG_CONNECTED), values).mappings()
            return [describe_pg(r) for r in rows]
        if family(conn.dialect.name) == "mysql":
            query = text(_MY_CONNECTED).bindparams(bindparam("own", expanding=True))
            values = {"run_lock": run_lock_name(conn), "own": own_sessions(conn)}
            return [describe_mysql(r) for r in conn.execute(query, values).mappings()]
        if conn.dialect.name == "sqlite":
            return file_holders(_main_file(conn))
    except DBAPIError:
        return []
    return []


def _main_file(conn: Connection) -> str:
    """The file of a SQLite connection's main database ('' in memory)."""
    for row in conn.exec_driver_sql("PRAGMA database_list"):
        if row[1] == "main":
            return str(row[2] or "")
    return ""


def file_holders(path: str) -> list[str]:
    """The other processes that hold the file at `path` open, described ("process 12
    (python3, user app) has the file open"); none where /proc cannot be read."""
    try:
        wanted = os.stat(path) if path else None
        pids = [p for p in os.listdir("/proc") if p.isdigit()] if wanted else []
    except OSError:
        return []
    found = []
    for pid in pids:
        if int(pid) != os.getpid() and wanted and _holds(pid, (wanted.st_dev, wanted.st_ino)):
            found.append(_process(pid))
    return found


def _holds(pid: str, file: tuple[int, int]) -> bool:
    """Whether process `pid` has the file (device, inode) open; only read, never touched."""
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            for fd in fds:
                try:
                    info = os.stat(fd.path)
                except OSError:
                    continue  # closed meanwhile
                if (info.st_dev, info.st_ino) == file:
                    return True
    except OSError:  # another user's process, or gone
        return False
    return False


def _process(pid: str) -> str:
    try:
        program = Path(f"/proc/{pid}/comm").read_text().strip()
        user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return f"process {pid} has the file open"
    return f"process {pid} ({program}, user {user}) has the file open"


def sessions_line(sessions: list[str], target: str) -> str | None:
    """The preview's and prompt's line naming them, or None when there are none."""
    if not sessions:
        return None
    shown = "; ".join(sessions[:SHOWN])
    more = f"; and {len(sessions) - SHOWN} more" if len(sessions) > SHOWN else ""
    one = len(sessions) == 1
    if all(s.startswith("process ") for s in sessions):  # a SQLite file's (file_holders)
        return (
            f"{len(sessions)} other process{'' if one else 'es'} "
            f"{'holds' if one else 'hold'} the file of '{target}' open now, and the "
            f"restore does not stop {'it' if one else 'them'}: {shown}{more}"
        )
    return (
        f"{len(sessions)} other session{'' if one else 's'} {'is' if one else 'are'} "
        f"connected to the database of '{target}' now, and the restore does not stop "
        f"{'it' if one else 'them'}: {shown}{more}"
    )
