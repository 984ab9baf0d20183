"""The JSON lines file a purge copies rows into before it deletes them.

Each batch is appended, flushed and fsynced before the batch's delete commits, and
the file's length after every batch is checkpointed; a resumed purge first cuts the
file back to the last length whose batch is known to have committed, so the file
holds every deleted row exactly once. The file is new, made by the purge (O_EXCL, mode
0600), and only the run that made it writes to it again: a resume reopens it only while
it is still that regular file (same device and inode) and at least as long as checkpointed.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from aishell.errors import StepFailed
from aishell.files import file_mode, fsync_dir, kind_of, make_private_dirs

# Appending, never following a symbolic link at the file's own name.
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveFile:
    """An archive file this purge made, open for appending."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._file = os.fdopen(fd, "ab")  # held open across batches
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
    def reopen(cls, path: Path, identity: Mapping[str, Any], keep: int, fix: str) -> ArchiveFile:
        """The file this purge made (same device and inode), still a regular file holding at
        least the `keep` bytes checkpointed, cut back to them; anything else is refused
        with `fix`, the way to go on."""
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
        if problem is not None:
            os.close(fd)
            raise StepFailed(f"archive file {path} {problem}; {fix}")
        if info.st_size > keep:
            # Rows of a batch that never committed: they are still in the table.
            os.ftruncate(fd, keep)
            os.fsync(fd)
        return cls(path, fd)

    @property
    def offset(self) -> int:
        # The file's length, not the write position: after a truncation the position
        # stays at the old end until the next write.
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def append(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Write the rows and make them durable; returns the file's new length."""
        lines = [
            json.dumps(dict(zip(columns, row, strict=True)), default=_jsonable, sort_keys=False)
            for row in rows
        ]
        if lines:
            self._file.write(("\n".join(lines) + "\n").encode())
            self._file.flush()
            os.fsync(self._file.fileno())
        return self.offset

    def close(self) -> None:
        self._file.close()


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
