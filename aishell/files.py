"""Files by what they are, not by their path (and why a write of one failed: diskfaults).

A path names whatever is there when it is opened: a FIFO that never ends, /dev/zero that
never stops, a directory, a symbolic link to any of them, or another home's file. So a
file aishell reads is opened without blocking, checked on the opened descriptor to be a
regular file, and read with a bound; a file aishell writes is written whole under a new
name beside its target, flushed, and renamed only over a regular file (or nothing); a
file aishell appends to (a purge's archive) is new, made by it, and outside the folders
aishell keeps for itself.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aishell.diskfaults import is_no_space, no_space_line, refused_line, size_limit_line
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


def file_in_the_way(path: Path) -> Path | None:
    """The nearest thing above `path` that is there, when it is not a folder (a regular
    file where a folder must be, the cause of ENOTDIR); None when it is a folder."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def check_replaceable(path: Path, what: str, error: ErrorKind = UsageError) -> None:
    """Refuse a target that is there and is not a regular file (a directory, a device, a
    FIFO, a socket, or a symbolic link to anything), or that a file above it keeps from
    being one (a path under a regular file)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        blocking = file_in_the_way(path) if exc.errno == errno.ENOTDIR else None
        if blocking is not None:
            raise error(
                f"{what} {path} cannot be written: {blocking} is a file, not a folder; move "
                "it away, or give a path in a folder"
            ) from None
        raise error(f"{what} {path} cannot be checked: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(
            f"{what} {path} is {kind_of(info.st_mode)}; aishell replaces only a regular "
            "file: give the path of a new or regular file"
        )


def write_beside(
    path: Path,
    data: bytes,
    what: str,
    error: ErrorKind = UsageError,
    mode: int | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write `data` to `path` whole: under a new name in the same folder, flushed to disk,
    then renamed over `path`, which must be a regular file or absent. Its mode is
    `mode`, else private (file_mode()), whatever the umask. `check` is given the new
    file before the rename: what it raises leaves `path` as it was."""
    check_replaceable(path, what, error)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    wanted = file_mode() if mode is None else mode
    try:
        fd = os.open(temporary, flags, wanted)
    except OSError as exc:
        said = _write_failed(path, what, exc)
        raise error(said or f"{what} {path} cannot be written: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, wanted)  # the umask narrows a new file's mode, or widens none
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            said = _write_failed(path, what, exc)
            if said is None:
                raise
            raise error(said) from None
        finally:
            os.close(fd)
        if check is not None:
            check(temporary)
        # Checked again just before the rename: what stood there may have changed.
        check_replaceable(path, what, error)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _write_failed(path: Path, what: str, exc: OSError) -> str | None:
    """diskfaults' one line for a write of `path` that failed: no room, a quota, the file
    size limit, a read-only file system, a permission; None for any other error."""
    doing = f"writing {what[:1].lower()}{what[1:]}"
    if exc.errno == errno.ENOENT and not path.parent.is_dir():
        return (
            f"{what} {path} cannot be written: its folder {path.parent} does not exist; "
            "create it, or give a path in a folder that does"
        )
    if exc.errno == errno.EFBIG:
        return size_limit_line(path, doing)
    if is_no_space(exc):
        return no_space_line(path, doing, "free space there, or write it elsewhere", exc)
    return refused_line(path, doing, "write it elsewhere", exc)


def fsync_dir(path: Path) -> None:
    """Make a new name in a folder durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# What aishell writes (backups, manifests, archives, plans, metrics, scratch copies) is
# its owner's alone, or readable by its group too when config says so
# (files.group_readable), whatever the umask. Set once the config is loaded.
_group_readable = False


def set_group_readable(readable: bool) -> None:
    """Whether the files and folders aishell makes from now on are its group's to read."""
    global _group_readable
    _group_readable = readable


def file_mode() -> int:
    """The mode of a file aishell makes: 0600, or 0640 with files.group_readable."""
    return 0o640 if _group_readable else 0o600


def dir_mode() -> int:
    """The mode of a folder aishell makes: 0700, or 0750 with files.group_readable."""
    return 0o750 if _group_readable else 0o700


def make_private_dirs(folder: Path, mode: int | None = None) -> None:
    """Create `folder` and any missing parent, each with `mode`, else dir_mode(),
    whatever the umask."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for each in reversed(missing):
        try:
            os.mkdir(each, 0o700)
        except FileExistsError:  # another process made it first: it is that one's
            continue
        os.chmod(each, dir_mode() if mode is None else mode)


def make_private_file(path: Path) -> Path:
    """An empty private file at `path` (or the regular file there, its contents kept),
    with file_mode(), for a program or library to write into: the mode a file is made
    with is the one it keeps when written again or renamed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return path


def open_private(path: Path) -> BinaryIO:
    """`path` opened for writing from its start, made with file_mode() if new, and
    brought to it if it was there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, file_mode())
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


@dataclass(frozen=True)
class TooOpen:
    """A file or folder under a tree aishell keeps whose mode lets more people in than
    configured, and the chmod that closes it."""

    path: Path
    mode: int
    fix: str
    # Where path is a symbolic link: the file or folder it leads to, whose mode this is.
    through: Path | None = None


def own_mode(path: Path) -> int | None:
    """The permission bits of path itself: None for a symbolic link (whose own bits
    mean nothing) or a path that cannot be read, as for a missing file."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return None if stat.S_ISLNK(info.st_mode) else stat.S_IMODE(info.st_mode)


def too_open(tree: Path, limit: int = 10_000) -> Iterator[TooOpen]:
    """What under `tree` (not itself: it may be a mount point or a folder the user
    chose; at most `limit` entries looked at) has group or other bits beyond dir_mode()
    / file_mode(). A symbolic link is judged by what it leads to, which is where
    aishell writes and others could replace what it wrote; the walk does not follow it."""
    seen = 0
    for folder, dirs, files in os.walk(tree):
        below = () if Path(folder) == tree else (Path(folder),)
        links = (Path(folder) / name for name in dirs if (Path(folder) / name).is_symlink())
        for path in (*below, *links, *(Path(folder) / name for name in files)):
            seen += 1
            if seen > limit:
                return
            found = _mode_too_open(path)
            if found is not None:
                yield found
        dirs.sort()


def _mode_too_open(path: Path) -> TooOpen | None:
    through = Path(os.path.realpath(path)) if path.is_symlink() else None
    mode = own_mode(through or path)
    if mode is None:
        return None
    wanted = dir_mode() if path.is_dir() else file_mode()
    if not mode & 0o077 & ~wanted:
        return None
    closed = mode & ~(0o077 & ~wanted)
    return TooOpen(path, mode, f"chmod {closed:o} {through or path}", through)


@dataclass(frozen=True)
class PrivatePlaces:
    """The folders aishell keeps for itself, where no file a step or a plan writes may
    go: anywhere under `trees` (backups, config), directly in `folders` (the state
    store's folder, the signing key's folder); and the folders aishell reads tools and
    config from, where a new .yaml is read as one and a bad one stops every command:
    anywhere under `sources`, directly in `source_folders` (those that hold the home).
    Compared by real path and by device and inode."""

    trees: tuple[Path, ...] = ()
    folders: tuple[Path, ...] = ()
    sources: tuple[Path, ...] = ()
    source_folders: tuple[Path, ...] = ()

    def refusal(self, path: Path) -> str | None:
        """Why a new file at `path` (its folder resolved) would be in one of them."""
        parent, ids = _lineage(path)
        for tree in self.trees:
            if _under(parent, ids, tree):
                return f"it is inside {tree}, which aishell keeps for itself"
        for folder in self.folders:
            if _same_dir(parent, folder):
                return f"it is directly in {folder}, which holds aishell's state and key"
        return self.source_refusal(path)

    def source_refusal(self, path: Path) -> str | None:
        """Why a file at `path` would be in a folder aishell reads tools or config from."""
        parent, ids = _lineage(path)
        for source in self.sources:
            if _under(parent, ids, source):
                return f"it is inside {source}, which aishell reads tools and config from"
        for folder in self.source_folders:
            if _same_dir(parent, folder):
                return f"it is directly in {folder}, which aishell reads tools and config from"
        return None


def _lineage(path: Path) -> tuple[Path, set[tuple[int, int]]]:
    """The real folder of `path`, and the device and inode of it and every folder above."""
    parent = Path(os.path.realpath(path.parent))
    return parent, {i for i in map(_dir_id, [parent, *parent.parents]) if i is not None}


def _under(parent: Path, ids: set[tuple[int, int]], tree: Path) -> bool:
    real = Path(os.path.realpath(tree))
    return parent.is_relative_to(real) or _dir_id(real) in ids


def _same_dir(one: Path, other: Path) -> bool:
    real = Path(os.path.realpath(other))
    same = _dir_id(real)
    return Path(os.path.realpath(one)) == real or (same is not None and same == _dir_id(one))


def private_places(
    home: Path,
    state_home: Path,
    backup_dir: Path,
    config_dirs: Iterable[Path],
    sources: Iterable[Path] = (),
) -> PrivatePlaces:
    """A home's private places: its backups and config anywhere below, no file of its
    own directly in the home or the state folder (state.db, its journal, the key), and
    `sources`, the folders it reads tools and config from (the agents' folders, the
    site's catalog_paths, the plugins' tool folders, the state folder's cache)."""
    real_home = Path(os.path.realpath(home))
    config_dirs = list(config_dirs)
    # A config folder that holds the home (a named --config in /tmp) is the user's, not ours.
    own = [d for d in config_dirs if not real_home.is_relative_to(os.path.realpath(d))]
    trees = [backup_dir, *own]
    if not real_home.is_relative_to(os.path.realpath(state_home)):
        trees.append(state_home)  # a state folder of its own (the user's platform folders)
    # Agents' files are read from a config folder's agents/, even one that holds the home;
    # a folder read from that holds the home (catalog_paths: ["."]) has only its own files
    # read, and the home's folders stay the archives' to use.
    read = dict.fromkeys([*own, *(d / "agents" for d in config_dirs), *sources])
    holds_home = [d for d in read if real_home.is_relative_to(os.path.realpath(d))]
    # One inside a tree is kept already, and said so as aishell always has.
    real_trees = [os.path.realpath(t) for t in trees]
    below = [d for d in read if d not in holds_home]
    below = [d for d in below if not any(_within(d, tree) for tree in real_trees)]
    return PrivatePlaces(tuple(trees), (home, state_home), tuple(below), tuple(holds_home))


def _within(path: Path, real_tree: str) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(real_tree)


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
    "TooOpen",
    "check_replaceable",
    "dir_mode",
    "file_in_the_way",
    "file_mode",
    "fsync_dir",
    "kind_of",
    "make_private_dirs",
    "make_private_file",
    "open_private",
    "private_places",
    "read_regular",
    "set_group_readable",
    "too_open",
    "write_beside",
]
