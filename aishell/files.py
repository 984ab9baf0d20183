"""Files by what they are, not by their path.

A path names whatever is there when it is opened: a FIFO that never ends, /dev/zero that
never stops, a directory, a symbolic link to any of them, or another home's file. So a
file aishell reads is opened without blocking, checked on the opened descriptor to be a
regular file, and read with a bound; a file aishell writes is written whole under a new
name beside its target, flushed, and renamed only over a regular file (or nothing); a
file aishell appends to (a purge's archive) is new, made by it, and outside the folders
aishell keeps for itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aishell.errors import AishellError, UsageError

PLAN_LIMIT = 16 << 20  # a plan file: far above any plan, far below a memory problem
KEY_LIMIT = 4 << 10  # a signing key file: 65 bytes of hex and a newline

ErrorKind = type[AishellError]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a file is, in words: 'a regular file', 'a directory', 'a character device'..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def read_regular(path: Path, limit: int, what: str, error: ErrorKind = UsageError) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; anything else is
    one line (`error`). A missing file raises FileNotFoundError for the caller to word."""
    # O_NONBLOCK: opening a FIFO for reading must not wait for a writer; the descriptor's
    # own fstat says what was opened, whatever the path pointed to a moment before.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{what} {path} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(
                f"{what} {path} is {kind_of(info.st_mode)}, not a regular file; "
                "give the path of the file itself"
            )
        if info.st_size > limit:
            raise error(_too_large(what, path, info.st_size, limit))
        chunks: list[bytes] = []
        size = 0
        # Read to one byte past the limit: a file that grew since fstat is still refused.
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise error(_too_large(what, path, size, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(what: str, path: Path, size: int, limit: int) -> str:
    return f"{what} {path} is {size:,} bytes or more, over the limit of {limit:,}"


def check_replaceable(path: Path, what: str, error: ErrorKind = UsageError) -> None:
    """Refuse a target that is there and is not a regular file (a directory, a device, a
    FIFO, a socket, or a symbolic link to anything)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise error(f"{what} {path} cannot be checked: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(
            f"{what} {path} is {kind_of(info.st_mode)}; aishell replaces only a regular "
            "file: give the path of a new or regular file"
        )


def write_beside(
    path: Path, data: bytes, what: str, error: ErrorKind = UsageError, mode: int = 0o644
) -> Path:
    """Write `data` to `path` whole: under a new name in the same folder, flushed to disk,
    then renamed over `path`, which must be a regular file or absent."""
    check_replaceable(path, what, error)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, mode)
    except OSError as exc:
        raise error(f"{what} {path} cannot be written: {exc.strerror}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            if not is_no_space(exc):
                raise
            doing = f"writing {what[:1].lower()}{what[1:]}"
            fix = "free space there, or write it elsewhere"
            raise error(no_space_line(path, doing, fix)) from None
        finally:
            os.close(fd)
        # Checked again just before the rename: what stood there may have changed.
        check_replaceable(path, what, error)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(path: Path) -> None:
    """Make a new name in a folder durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(folder: Path) -> None:
    """Create `folder` and any missing parent, each readable by its owner only."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.mkdir(each, 0o700)


@dataclass(frozen=True)
class PrivatePlaces:
    """The folders aishell keeps for itself, where no archive may be written: anywhere
    under `trees` (backups, config), or directly in `folders` (the state store's folder,
    the signing key's folder), compared by real path and by device and inode."""

    trees: tuple[Path, ...] = ()
    folders: tuple[Path, ...] = ()

    def refusal(self, path: Path) -> str | None:
        """Why a new file at `path` (its folder resolved) would be in one of them."""
        parent = Path(os.path.realpath(path.parent))
        lineage = [parent, *parent.parents]
        ids = {ident for ident in map(_dir_id, lineage) if ident is not None}
        for tree in self.trees:
            real = Path(os.path.realpath(tree))
            if parent.is_relative_to(real) or _dir_id(real) in ids:
                return f"it is inside {tree}, which aishell keeps for itself"
        for folder in self.folders:
            real = Path(os.path.realpath(folder))
            same = _dir_id(real)
            if parent == real or (same is not None and same == _dir_id(parent)):
                return f"it is directly in {folder}, which holds aishell's state and key"
        return None


def private_places(
    home: Path, state_home: Path, backup_dir: Path, config_dirs: Iterable[Path]
) -> PrivatePlaces:
    """A home's private places: its backups and config anywhere below, and no file of its
    own directly in the home or the state folder (state.db, its journal, the key)."""
    real_home = Path(os.path.realpath(home))
    # A config folder that holds the home (a named --config in /tmp) is the user's, not ours.
    own = [d for d in config_dirs if not real_home.is_relative_to(os.path.realpath(d))]
    trees = [backup_dir, *own]
    if not real_home.is_relative_to(os.path.realpath(state_home)):
        trees.append(state_home)  # a state folder of its own (the user's platform folders)
    return PrivatePlaces(tuple(trees), (home, state_home))


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


__all__ = [
    "KEY_LIMIT",
    "PLAN_LIMIT",
    "PrivatePlaces",
    "check_replaceable",
    "fsync_dir",
    "kind_of",
    "make_private_dirs",
    "private_places",
    "read_regular",
    "write_beside",
]


def is_no_space(exc: BaseException) -> bool:
    """The file system (or the user's quota on it) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space_line(path: Path, doing: str, fix: str) -> str:
    """The one line for a full disk, wherever aishell writes: which file, which file
    system, how much is free, and what to do (`fix`)."""
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(folder)
    return (
        f"No space left on device: the file system at {mount_point(folder)} is full "
        f"({usage.free:,} of {usage.total:,} bytes free) while {doing} {path}; {fix}"
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


def disk_space(path: Path) -> str:
    """Which file system holds path and how much of it is free, as a full disk's
    message says it: "the file system at /var (12,288 of 8,388,608 bytes free)"."""
    mount = mount_point(path)
    try:
        usage = shutil.disk_usage(mount)
    except OSError:
        return f"the file system at {mount}"
    return f"the file system at {mount} ({usage.free:,} of {usage.total:,} bytes free)"
