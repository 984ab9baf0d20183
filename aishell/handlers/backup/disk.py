"""Files a backup writes on disk: each written whole under a temporary name, and a full
disk named as the full disk it is.

A full disk is reported with one line naming the file, the file system and its free
space, never as a fault of the backup.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed
from aishell.files import (
    check_replaceable,
    is_no_space,
    make_private_dirs,
    make_private_file,
    no_space_line,
)
from aishell.handlers.backup.processes import ToolFailed
from aishell.tool.context import ToolContext

# How tools and SQLite say that the disk they write to is full.
LOCAL_NO_SPACE = ("no space left on device", "disk is full", "errno 28", "errcode: 28")
# And how servers say it of their own disk.
SERVER_NO_SPACE = (*LOCAL_NO_SPACE, "could not extend file", "could not write to file", "is full")


def says_no_space(exc: BaseException, phrases: tuple[str, ...] = LOCAL_NO_SPACE) -> bool:
    if is_no_space(exc):
        return True
    said = exc.stderr if isinstance(exc, ToolFailed) else str(getattr(exc, "orig", None) or exc)
    return any(phrase in said.lower() for phrase in phrases)


def disk_full(path: Path, doing: str, after: str = "") -> StepFailed:
    """The one line for a full disk (files.no_space_line), with what a backup can do."""
    tail = f"; {after}" if after else ""
    fix = f"free space there, or set backup_dir to a larger disk, and retry{tail}"
    return StepFailed(no_space_line(path, doing, fix))


@contextmanager
def writing(path: Path, doing: str, after: str = "") -> Iterator[None]:
    """A full disk while path is written ends the step with disk_full's line."""
    try:
        yield
    except (OSError, sqlite3.Error, DBAPIError, ToolFailed) as exc:
        if says_no_space(exc):
            raise disk_full(path, doing, after) from None
        raise


def destination(ctx: ToolContext, suffix: str, kind: str = "full") -> Path:
    """A new backup's path: in the target's folder, named by kind and time."""
    if ctx.backup_dir is None:
        raise StepFailed("No backup folder configured (backup_dir in config/aishell.yaml)")
    folder = ctx.backup_dir / ctx.target
    make_private_dirs(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"{ctx.target}-{kind}-{stamp}-{uuid.uuid4().hex[:6]}{suffix}"


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def partial_file(final: Path, ctx: ToolContext, doing: str = "writing") -> Iterator[Path]:
    """A temporary name that becomes `final` only when the block succeeds; recorded
    before it exists, removed (with any journal SQLite left beside it) if it fails.
    Durable when the block ends: the file synced, renamed, then its folder synced (the
    rename is on disk before anyone is told the file is there)."""
    partial = final.with_name(final.name + ".partial")
    check_replaceable(final, "Backup file", StepFailed)
    check_replaceable(partial, "Backup file", StepFailed)
    with ctx.scratch.file(partial), writing(partial, doing):
        make_private_file(partial)  # the mode it keeps when a program writes into it
        yield partial
        _fsync(partial)
        # Renamed only over a regular file (or nothing): never over a link or a device.
        check_replaceable(final, "Backup file", StepFailed)
        partial.replace(final)
        _fsync_folder(final.parent)
