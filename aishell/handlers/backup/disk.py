"""Files a backup writes on disk: each written whole under a temporary name, and a full
disk named as the full disk it is.

A full disk is reported with one line naming the file, the file system and its free
space, never as a fault of the backup.
"""

from __future__ import annotations

import errno
import os
import resource
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from aishell.diskfaults import REFUSALS, is_no_space, no_space_line, quota_line, sqlite_hides
from aishell.errors import StepFailed
from aishell.files import check_replaceable, make_private_dirs, make_private_file
from aishell.handlers.backup.processes import ToolFailed
from aishell.tool.context import ToolContext

# How tools say that the user's quota on the disk they write to is used up (EDQUOT, 122
# on Linux), and that it, or the disk, is full (SQLite: "database or disk is full").
QUOTA = ("disk quota exceeded", "errno 122", "errcode: 122")
LOCAL_NO_SPACE = ("no space left on device", "disk is full", "errno 28", "errcode: 28", *QUOTA)
# And how servers say it of their own disk.
SERVER_NO_SPACE = (*LOCAL_NO_SPACE, "could not extend file", "could not write to file", "is full")


def says_no_space(exc: BaseException, phrases: tuple[str, ...] = LOCAL_NO_SPACE) -> bool:
    if is_no_space(exc):
        return True
    return any(phrase in _said(exc) for phrase in phrases)


def _said(exc: BaseException) -> str:
    return (
        exc.stderr if isinstance(exc, ToolFailed) else str(getattr(exc, "orig", None) or exc)
    ).lower()


def disk_full(
    path: Path, doing: str, after: str = "", exc: BaseException | None = None
) -> StepFailed:
    """The one line for no room left (diskfaults.no_space_line), with what a backup can
    do: a used-up quota (`exc` EDQUOT, or a program that says so) named as that."""
    tail = f"; {after}" if after else ""
    fix = f"free space there, or set backup_dir to a larger disk, and retry{tail}"
    if exc is not None and not is_no_space(exc) and any(q in _said(exc) for q in QUOTA):
        return StepFailed(quota_line(path, doing, fix))
    return StepFailed(no_space_line(path, doing, fix, exc))


def _hidden(path: Path, exc: BaseException) -> BaseException:
    """SQLite's "disk I/O error" or "disk is full" as the OSError a write in path's
    folder meets now (a used-up quota, a read-only file system, a full disk), naming
    path; other errors as they are."""
    probed = sqlite_hides(path, _said(exc))
    return exc if probed is None else OSError(probed.errno, probed.strerror, str(path))


@contextmanager
def writing(path: Path, doing: str, after: str = "") -> Iterator[None]:
    """A full disk or quota while path is written ends the step with disk_full's line;
    a file size limit reached, or a folder that refuses the file, with cannot_write's."""
    try:
        yield
    except (OSError, sqlite3.Error, DBAPIError, ToolFailed) as exc:
        cause = _hidden(path, exc)
        if says_no_space(cause):
            raise disk_full(path, doing, after, cause) from None
        refused = cannot_write(path, cause, doing)
        if refused is not None:
            raise refused from None
        raise


# The largest single write SQLite makes (its largest page): a write that failed within
# this much of the process's file size limit failed at the limit.
_LARGEST_WRITE = 65536


def cannot_write(path: Path, exc: BaseException, doing: str) -> StepFailed | None:
    """The one line for a backup's file or folder it cannot write, naming it and the
    cause: the process's file size limit, a folder that is not one, no permission. None
    for any other error, or an OSError about another file (a program it starts)."""
    named = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else path
    if named != path and named not in path.parents:
        return None
    elsewhere = "or set backup_dir (config/aishell.yaml) to a folder aishell may write in"
    limit = _size_limit()
    if limit is not None and _at_limit(path, exc, limit):
        return StepFailed(
            f"File size limit reached while {doing} {path}: this process may write files "
            f"of at most {limit:,} bytes (`ulimit -f`, a service's LimitFSIZE); raise the "
            "limit and retry"
        )
    if not isinstance(exc, OSError):
        return None
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((p for p in (path, *path.parents) if p.exists()), path)
        if not blocking.is_dir():
            return StepFailed(
                f"{blocking} is not a folder, so {doing} {path} failed; move it away, "
                f"{elsewhere}, and retry"
            )
    cause = REFUSALS.get(exc.errno or 0)
    if cause is None:
        return None
    return StepFailed(
        f"Cannot write {named} while {doing} {path}: {cause}; let aishell's user write "
        f"there, {elsewhere}, and retry"
    )


def _size_limit() -> int | None:
    """The most bytes this process may write into one file (None: no limit)."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _at_limit(path: Path, exc: BaseException, limit: int) -> bool:
    """Whether the write failed for the size limit: the system says so (EFBIG), or
    SQLite, which says only "disk I/O error", stopped with its file at the limit."""
    if isinstance(exc, OSError):
        return exc.errno == errno.EFBIG
    if not isinstance(exc, sqlite3.Error | DBAPIError):
        return False
    try:
        return path.stat().st_size + _LARGEST_WRITE > limit
    except OSError:
        return False


def made_folder(folder: Path) -> Path:
    """A backup folder, made private where missing; a file in its way (it, or a folder
    above it) ends the step with cannot_write's line naming that file."""
    with writing(folder, "making the backup folder"):
        make_private_dirs(folder)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
    return folder


def destination(ctx: ToolContext, suffix: str, kind: str = "full") -> Path:
    """A new backup's path: in the target's folder, named by kind and time."""
    if ctx.backup_dir is None:
        raise StepFailed("No backup folder configured (backup_dir in config/aishell.yaml)")
    folder = made_folder(ctx.backup_dir / ctx.target)
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
    with writing(partial, doing):
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
