"""Why a write failed, as one line naming the file, the cause and the fix, wherever
aishell writes (the state store, backups, archive files, plans, the config, metrics): a
full file system (ENOSPC); a used-up disk quota (EDQUOT), which leaves the file system
room, so it is never called full; the process's file size limit (EFBIG); a read-only
file system (EROFS) or a permission refused (EACCES, EPERM). SQLite says "disk I/O
error" for all but a full disk: `probe_write` asks the folder itself what it refuses.
"""

from __future__ import annotations

import errno
import os
import pwd
import resource
import secrets
import shutil
from contextlib import suppress
from pathlib import Path

# What stops a file or folder being written, besides the room for it: the cause in words.
REFUSALS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted (its mode, owner or an immutable flag)",
    errno.EROFS: "the file system is read-only",
}


def is_no_space(exc: BaseException) -> bool:
    """The file system, or the user's quota on it, has no room left."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space_line(path: Path, doing: str, fix: str, exc: BaseException | None = None) -> str:
    """The one line for no room left, wherever aishell writes: which file, which file
    system, how much is free, and what to do (`fix`); a quota used up (`exc` EDQUOT)
    said as that, whose file system may have room to spare."""
    if isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
        return quota_line(path, doing, fix)
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(folder)
    files = os.statvfs(folder)
    if files.f_files and not files.f_favail:  # its bytes free, and no file may be made
        return (
            f"No space left on device: the file system at {mount_point(folder)} has no "
            f"free inodes (all {files.f_files:,} files it may hold are made) while {doing} "
            f"{path}; {fix}"
        )
    return (
        f"No space left on device: the file system at {mount_point(folder)} is full "
        f"({usage.free:,} of {usage.total:,} bytes free) while {doing} {path}; {fix}"
    )


def quota_line(path: Path, doing: str, fix: str) -> str:
    """The one line for a disk quota used up (EDQUOT) while writing `path`."""
    return (
        f"Disk quota exceeded: the quota of user {_user()} on {disk_space(path)} is used up "
        f"while {doing} {path}; have the quota raised, or {fix}"
    )


def refused_line(path: Path, doing: str, fix: str, exc: BaseException) -> str | None:
    """The one line for a write the file system refuses, not for room (EROFS, EACCES,
    EPERM): which file, why and what to do (`fix`, else); None for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in REFUSALS:
        return None
    if exc.errno == errno.EROFS:
        why = f"the file system at {mount_point(path)} is read-only"
        remedy = "remount it read-write"
    else:
        why = f"{REFUSALS[exc.errno]} for user {_user()}"
        remedy = f"let {_user()} write in {path.parent}"
    return f"{exc.strerror}: {why} while {doing} {path}; {remedy}, or {fix}"


def _user() -> str:
    """Whose quota it is: the user new files belong to (not $USER, which sudo keeps)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no name (a container's)
        return str(os.geteuid())


def probe_write(folder: Path) -> OSError | None:
    """What writing a new file of LARGEST_WRITE bytes in `folder` meets now: the OSError,
    whose errno is the cause SQLite's "disk I/O error" hides (EDQUOT, ENOSPC, EROFS,
    EACCES, EFBIG), or None where it is written and synced. The file is removed."""
    probe = folder / f".aishell-probe-{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(probe, flags, 0o600)
    except OSError as exc:
        return exc
    try:
        view = memoryview(bytes(LARGEST_WRITE))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        with suppress(OSError):
            probe.unlink()
    return None


def sqlite_hides(path: Path, message: str) -> OSError | None:
    """The OSError behind SQLite's "disk I/O error" or "disk is full" about `path` (a
    used-up quota, a read-only file system, a full disk), as a write in its folder meets
    it now; None for any other message, or where the folder takes the write."""
    said = message.lower()
    if ("disk i/o error" not in said and "disk is full" not in said) or not path.parent.is_dir():
        return None
    return probe_write(path.parent)


def file_size_limit() -> int | None:
    """The most bytes this process may write into one file (`ulimit -f`, a service's
    LimitFSIZE); None where there is no limit."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


# The largest single write SQLite makes (its largest page): a write that failed within
# this much of the file size limit failed at the limit.
LARGEST_WRITE = 65536


def at_size_limit(*paths: Path) -> bool:
    """Whether one of `paths` stands within LARGEST_WRITE of this process's file size
    limit: where SQLite, which says only "disk I/O error", met the limit (EFBIG)."""
    limit = file_size_limit()
    if limit is None:
        return False
    for path in paths:
        with suppress(OSError):
            if path.stat().st_size + LARGEST_WRITE > limit:
                return True
    return False


def size_limit_line(path: Path, doing: str) -> str:
    """The one line for a write past this process's file size limit (EFBIG, or SQLite's
    "disk I/O error" at the limit): the disk has room, the process may not use it."""
    limit = file_size_limit()
    most = f"at most {limit:,} bytes" if limit is not None else "no larger file"
    return (
        f"File size limit reached while {doing} {path}: this process may write files of "
        f"{most} (`ulimit -f`, a service's LimitFSIZE); raise the limit and try again"
    )


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds path (or would hold it)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def size_or_zero(path: Path) -> int:
    """The file's size; 0 for one that is not there or cannot be looked at."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def disk_space(path: Path) -> str:
    """Which file system holds path and how much of it is free, as a full disk's
    message says it: "the file system at /var (12,288 of 8,388,608 bytes free)"."""
    mount = mount_point(path)
    try:
        usage = shutil.disk_usage(mount)
    except OSError:
        return f"the file system at {mount}"
    return f"the file system at {mount} ({usage.free:,} of {usage.total:,} bytes free)"
