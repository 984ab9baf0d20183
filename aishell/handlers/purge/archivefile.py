"""The JSON lines file a purge copies rows into before it deletes them.

Each batch's bytes are checkpointed (where they start, how long, their digest) before
they are appended and fsynced, and all before the batch's delete commits; they are
written without a buffer, so a write the disk refused halfway is cut back at once. A
resumed purge cuts the file back only by the bytes of its own batch in doubt, known by
that digest, and never cuts bytes it did not write (handlers/purge/ownership.py). The
file is new, made by the purge (O_EXCL, mode 0600); only the run that made it writes to
it again, while it is still that regular file (same device and inode, the digest of the
last bytes it checkpointed) and at least as long as checkpointed; and a run holds an
exclusive lock (flock) on it while it writes.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.files import file_mode, fsync_dir, kind_of, make_private_dirs
from aishell.handlers.purge.exactread import encoded_row
from aishell.sqltext import text

# Appending (and reading back a batch in doubt), never following a symbolic link at
# the file's own name.
_APPEND = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
# How many of the last bytes the run wrote a checkpoint keeps the digest of (tail_of):
# read back from the page cache once a batch, and on reopen.
TAIL = 64 * 1024


class ArchiveFile:
    """An archive file this purge made, open for appending."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        try:
            # Held while the run writes: a second writer of aishell's is refused.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StepFailed(
                f"archive file {path} is being written by another process (it holds the "
                "file's lock): let that run end first"
            ) from None
        # Held open across batches, and written without a buffer: bytes a full disk
        # refused are never left to be flushed later (by the cut meant to undo them).
        self._fd = fd
        info = os.fstat(fd)
        self.identity = {"device": info.st_dev, "inode": info.st_ino}

    @classmethod
    def create(cls, path: Path) -> ArchiveFile:
        """A new, empty archive file readable by its owner only (file_mode()); an existing
        path (of any kind, a symbolic link too) is refused."""
        try:
            make_private_dirs(path.parent)
            fd = os.open(path, _APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, file_mode())  # files.group_readable may open it to the group
        except FileExistsError:
            raise StepFailed(_exists(path)) from None
        except OSError as exc:
            raise StepFailed(f"archive file {path} cannot be made: {exc.strerror}") from None
        fsync_dir(path.parent)
        return cls(path, fd)

    @classmethod
    def reopen(
        cls,
        path: Path,
        identity: Mapping[str, Any],
        keep: int,
        fix: str,
        known: Sequence[Sequence[Any]] = (),
    ) -> ArchiveFile:
        """The file this purge made (same device and inode), still a regular file holding at
        least the `keep` bytes checkpointed, and the bytes whose digests it checkpointed
        (`known`: tail_of's records); anything else is refused with `fix`, the way to go
        on. Bytes after `keep` are left for the caller to judge (cut_to)."""
        try:
            # O_NONBLOCK: a FIFO put in its place must not hold the purge waiting.
            fd = os.open(path, _APPEND | os.O_NONBLOCK)
        except FileNotFoundError:
            raise StepFailed(f"archive file {path} is gone; {fix}") from None
        except OSError as exc:
            # A link (O_NOFOLLOW), a FIFO without a reader, a folder: say which it is.
            try:
                what = kind_of(os.lstat(path).st_mode)
            except OSError:
                what = "unreadable"
            raise StepFailed(
                f"archive file {path} is {what}, not the file this purge made "
                f"({exc.strerror}); {fix}"
            ) from None
        info = os.fstat(fd)
        problem = _not_made_here(info, identity, keep)
        for stretch in known if problem is None else ():
            problem = problem or _not_its_bytes(fd, stretch)
        if problem is not None:
            os.close(fd)
            raise StepFailed(f"archive file {path} {problem}; {fix}")
        return cls(path, fd)

    @property
    def offset(self) -> int:
        # The file's length, not the write position: after a truncation the position
        # stays at the old end until the next write.
        return os.fstat(self._fd).st_size

    def write(self, data: bytes) -> int:
        """Append bytes (encode_rows') and make them durable; returns the new length. A
        write the disk took only part of raises, its part left for the caller to cut."""
        view = memoryview(data)
        try:
            while view:
                # A short write (the disk filled up) goes on: the next write says why not.
                done = os.write(self._fd, view)
                if done == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[done:]
            if data:
                os.fsync(self._fd)
        except OSError as exc:
            raise self._named(exc) from None
        return self.offset

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def tail_of(self, end: int) -> list[Any]:
        """What a checkpoint keeps of the bytes before `end` the run wrote, to know the
        file again on reopen: where its last TAIL bytes start, end, and their SHA-256."""
        start = max(0, end - TAIL)
        return [start, end, hashlib.sha256(self.read(start, end - start)).hexdigest()]

    def cut_to(self, length: int) -> None:
        """Cut the file back to `length` bytes, durably."""
        try:
            os.ftruncate(self._fd, length)
            os.fsync(self._fd)
        except OSError as exc:
            raise self._named(exc) from None

    def _named(self, exc: OSError) -> OSError:
        """The error with the file's path: the step's one line says which file failed
        (full_disk_named), whatever the error (a file size limit, an I/O error)."""
        exc.filename = exc.filename or str(self.path)
        return exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# MySQL's TIMESTAMP columns, which the server hands in the session's time_zone: there the
# two instants of a daylight-saving fold read alike, and the file is the rows' only copy.
# The columns of a MySQL table an archive file reads through an expression.
_READ_AS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t AND DATA_TYPE IN ('timestamp', 'float')"
)
# A TIMESTAMP column as the instant it holds, as UTC text with its offset. UNIX_TIMESTAMP
# of a TIMESTAMP column is its stored value, read in no zone, and added to the epoch as a
# DATETIME no zone reads it either (nor does the session's time_zone change, which the
# purge's cutoff is compared in). Written as Python writes a time (a fraction only where
# there is one); 0 is the zero date and NULL is NULL, both kept as the server hands them.
_INSTANT = (
    "IF(UNIX_TIMESTAMP({c}), DATE_FORMAT(TIMESTAMP'1970-01-01 00:00:00' + INTERVAL "
    "UNIX_TIMESTAMP({c}) SECOND, IF(UNIX_TIMESTAMP({c}) = FLOOR(UNIX_TIMESTAMP({c})), "
    "'%Y-%m-%dT%H:%i:%s+00:00', '%Y-%m-%dT%H:%i:%s.%f+00:00')), {c})"
)
# A FLOAT column as the value it holds: the server writes a FLOAT in 6 digits
# (1234567.875 as 1234570), a DOUBLE in every digit it needs.
_WHOLE_FLOAT = "CAST({c} AS DOUBLE)"
_READ_AS = {"timestamp": _INSTANT, "float": _WHOLE_FLOAT}


def read_as(conn: Connection, table: str) -> dict[str, str]:
    """The columns of a MySQL table an archive file reads through an expression, each
    with it ({c} the quoted column): a TIMESTAMP as the exact instant in UTC, whatever
    the session's time_zone; a FLOAT as all of its value."""
    return {
        str(name): _READ_AS[str(kind).lower()]
        for name, kind in conn.execute(text(_READ_AS_SQL), {"t": table})
    }


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """The rows as the file holds them: one JSON object a line. An aware time keeps its
    offset (psycopg's timestamptz; MySQL's TIMESTAMP arrives as UTC text, read_as); JSON
    and intervals read as the server's text, and floats that are not finite, are written
    as exactread.py says."""
    lines = [encoded_row(dict(zip(columns, row, strict=True)), _jsonable) for row in rows]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _not_made_here(info: os.stat_result, identity: Mapping[str, Any], keep: int) -> str | None:
    """Why the opened file is not the one the purge made and checkpointed, if it is not."""
    if not stat.S_ISREG(info.st_mode):
        return f"is {kind_of(info.st_mode)}, not the file this purge made"
    if (info.st_dev, info.st_ino) != (identity.get("device"), identity.get("inode")):
        return "was replaced: it is not the file this purge made"
    if info.st_size < keep:
        return (
            f"holds {info.st_size:,} bytes, fewer than the {keep:,} this purge wrote and "
            "checkpointed: rows archived by its earlier batches are missing"
        )
    return None


def _not_its_bytes(fd: int, stretch: Sequence[Any]) -> str | None:
    """Why the file's bytes in a checkpointed stretch (start, end, SHA-256) are not those
    the run wrote, if they are not: a file put in its place can have the same inode
    number (ext4 reuses them) and length."""
    start, end, digest = int(stretch[0]), int(stretch[1]), str(stretch[2])
    if hashlib.sha256(os.pread(fd, end - start, start)).hexdigest() == digest:
        return None
    return (
        f"was replaced or changed: its bytes {start:,} to {end:,} are not those this purge "
        "wrote and checkpointed"
    )


def _exists(path: Path) -> str:
    try:
        kind = kind_of(os.lstat(path).st_mode)
    except OSError:
        kind = "a file"
    return (
        f"archive file {path} already exists ({kind}); a purge archives only into a new file "
        "it makes: give a path that does not exist yet (an empty file there may be one a "
        "stopped purge made before its first checkpoint: remove it and resume)"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"cannot archive a value of type {type(value).__name__}")
