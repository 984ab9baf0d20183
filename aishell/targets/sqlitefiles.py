"""A SQLite target's file as the operating system sees it: which other processes hold
its locks (from /proc/locks, as SQLite itself cannot say), why SQLite could not open it
(a hot journal it may not roll back, a WAL database in a folder it may not write), and
the -wal and -shm files a read-only open makes (WalFiles). Each finding is in words a
one-line message carries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from aishell.diskfaults import size_or_zero
from aishell.terminal import printable

# SQLite's lock bytes in the database file (its os_unix.c): the pending byte, the
# reserved byte and the 510 shared bytes. A write lock on any of them is a writer's.
_PENDING_BYTE = 0x40000000
_LOCK_BYTES = range(_PENDING_BYTE, _PENDING_BYTE + 512)
# WAL mode: the -shm file's write lock, held by the one connection writing.
_WAL_WRITE_LOCK = 120
# The database header's write and read versions: 2 in WAL mode.
_WAL_VERSION = b"\x02\x02"
# SQLite's result codes for a file another connection holds: SQLITE_BUSY, SQLITE_LOCKED.
SQLITE_HELD = (5, 6)


def name_holders(engine: Engine, path: Path, setting: str, busy_ms: int) -> None:
    """SQLite's "database is locked" names neither the file nor who holds it: on this
    engine's connections it carries them as a note, which every message made of the
    error (a step's, a plan's) shows after it."""

    @event.listens_for(engine, "handle_error")
    def _held_by(context: Any) -> None:
        held = context.sqlalchemy_exception
        code = getattr(context.original_exception, "sqlite_errorcode", None)
        if isinstance(held, DBAPIError) and code in SQLITE_HELD:
            held.add_note(held_note(path, setting, busy_ms))


def held_note(path: Path, setting: str, busy_ms: int) -> str:
    """The words for a SQLite file that stayed locked past its busy timeout: which file,
    the setting that bounded the wait, and the processes that hold it."""
    return f"the database file {path} was held past {setting} ({busy_ms} ms) by {held_by(path)}"


def held_by(path: Path) -> str:
    """Who holds the file's locks, as held_note names them."""
    holders = lock_holders(path)
    return "; ".join(holders) if holders else "no other process holds it now (it has let go)"


def lock_holders(path: Path) -> list[str]:
    """Other processes holding a lock on the database file or its -shm file, each as
    "process 1234 (python3, writing)"; [] where none is found or /proc/locks cannot be
    read (another system). A lock of this process (another of its connections) cannot
    be told from its own, and is not named."""
    files = {_file_id(path): "db", _file_id(Path(f"{path}-shm")): "shm"}
    files.pop(None, None)
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    writing: dict[int, bool] = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->":  # "->": a process waiting, not holding
            continue
        _kind, _mode, access, pid_text, where, start = fields[1:7]
        which = files.get(_lock_file(where))
        if which is None or not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        pid = int(pid_text)
        offset = int(start) if start.isdigit() else -1
        writes = access == "WRITE" and (
            offset in _LOCK_BYTES if which == "db" else offset == _WAL_WRITE_LOCK
        )
        writing[pid] = writing.get(pid, False) or writes
    return [
        f"process {pid} ({_program(pid)}, {'writing' if w else 'reading'})"
        for pid, w in sorted(writing.items())
    ]


def open_problem(path: Path, exc: DBAPIError) -> str | None:
    """Why SQLite could not open the file, where its own words ("attempt to write a
    readonly database", "unable to open database file") do not say: None otherwise."""
    name = str(getattr(exc.orig, "sqlite_errorname", ""))
    journal = Path(f"{path}-journal")
    if name.startswith("SQLITE_READONLY") and size_or_zero(journal) > 0:
        return _hot_journal(path, journal)
    if name == "SQLITE_CANTOPEN" and _in_wal_mode(path):
        why = _read_only(path.parent)
        if why is not None and not Path(f"{path}-shm").exists():
            return (
                f"the database is in WAL mode, and SQLite makes {path}-shm and {path}-wal "
                f"beside it to read it, but the folder {path.parent} {why}: make the folder "
                "writable, or take the database out of WAL mode where it can be written "
                "(PRAGMA journal_mode=DELETE)"
            )
    return None


def _hot_journal(path: Path, journal: Path) -> str:
    said = (
        f"{journal} holds a transaction a writer left unfinished: SQLite rolls it back "
        "before the file is read"
    )
    never = "; never delete the journal, which would leave the database half-written"
    for where in (path, path.parent):
        why = _read_only(where)
        if why is not None:
            return f"{said}, and {where} {why}: make it writable, then open it again{never}"
    return (
        f"{said}, and a read-only connection (a dry run, a plan, `targets check`, "
        f"`doctor`) may not: a run that may write rolls it back{never}"
    )


def _read_only(path: Path) -> str | None:
    """Why this process may not write path (a file or a folder), or None."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return "is read-only for this process"
    return None


def _in_wal_mode(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(18)
            return handle.read(2) == _WAL_VERSION
    except OSError:
        return False


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


def _lock_file(where: str) -> tuple[int, int, int] | None:
    """/proc/locks' MAJOR:MINOR:INODE (the device's numbers in hex)."""
    parts = where.split(":")
    try:
        return int(parts[0], 16), int(parts[1], 16), int(parts[2])
    except (IndexError, ValueError):
        return None


def _program(pid: int) -> str:
    """The process's name (its comm, never its command line, which may hold a password)."""
    try:
        return printable(Path(f"/proc/{pid}/comm").read_text(errors="replace").strip())
    except OSError:
        return "ended since"


@dataclass
class WalFiles:
    """The -wal and -shm files beside a SQLite database in WAL mode, which a read-only
    connection makes when they are missing: SQLite cannot read a WAL database without
    them (short of immutable=1, which reads wrong pages while another process writes,
    or a folder it cannot write to), and, read-only, cannot remove them when it closes
    as a last connection otherwise does. Files made by aishell's user beside another
    user's database can keep that user's application from opening it.

    So the files missing when a read-only target opens are removed when it closes, by
    SQLite itself: a connection that may write (and sends nothing but a read) is opened
    and closed, and SQLite's close of a last connection removes them, only when it gets
    the database's exclusive lock, that is when no other connection in any process has
    the database open (nor one of this process). A WAL that holds anything was written
    by another connection since: then the files are that connection's, and stay."""

    path: Path
    busy_seconds: float
    missing_at_open: bool

    @classmethod
    def noted(cls, path: Path, busy_seconds: float) -> WalFiles:
        return cls(path, busy_seconds, not any(f.exists() for f in cls._files(path)))

    @staticmethod
    def _files(path: Path) -> tuple[Path, Path]:
        return Path(f"{path}-wal"), Path(f"{path}-shm")

    def remove_made(self) -> None:
        """Remove the files if this target's reads made them and nobody uses them."""
        if not self.missing_at_open:
            return
        wal, _shm = self._files(self.path)
        try:
            if wal.stat().st_size != 0:
                return
        except OSError:  # none made (not a WAL database), or already removed
            return
        import sqlite3

        try:
            last = sqlite3.connect(
                f"{self.path.as_uri()}?mode=rw", uri=True, timeout=self.busy_seconds
            )
        except sqlite3.Error:
            return
        try:
            last.execute("PRAGMA query_only = ON")
            # A read opens the WAL, so that the close ends it; an empty WAL copies
            # nothing into the database.
            last.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error:
            pass
        finally:
            last.close()
