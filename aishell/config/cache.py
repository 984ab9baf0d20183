"""The listings' cache: what a full load checked (the config, the tool catalog's listing),
kept as JSON in a private file of the home, so that a listing whose sources are unchanged
uses it without loading pydantic, SQLAlchemy or the SQL parser (docs/performance.md).

An entry is used only when everything it was made from is as it was:
- its key: the sha256 of every source file's path and bytes (the config's layers, each
  tool file), with whatever else the caller counts (installed plugins);
- the code that checked them: aishell's own folder and Python, and the file of
  every module (outside the standard library) that the checking process had loaded, by
  its inode, size and modification time as that process first saw them;
- the file itself: a regular file of this user's, readable by no one else.
Anything else is a miss, and a miss loads in full, as if there were no cache: a file that
the full load refuses is refused with its own error, and nothing is written then. A
file that cannot be written (a read-only home) only costs the next listing a full load.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from aishell.errors import AishellError, ConfigError

CACHE_FOLDER = "cache"
# This aishell's folder: another installation's entries are not this one's.
_AISHELL = str(Path(__file__).resolve().parent.parent)
# An entry is a listing: far below this; a larger file is not one of ours.
MAX_CACHE_BYTES = 16 << 20
# What changes every entry's meaning: a new shape of entry gets a new number.
FORMAT = 1


def cache_file(state_home: Path, name: str) -> Path:
    """Where the entry `name` (config, catalog) of a home's cache is kept."""
    return state_home / CACHE_FOLDER / f"{name}.json"


def digest(parts: Iterable[str | bytes]) -> str:
    """The sha256 of parts, each length-prefixed (no two lists of parts share a digest),
    after aishell's folder and Python (its version is in its code: code_stamp)."""
    hashed = hashlib.sha256()
    runtime = (f"{FORMAT}", _AISHELL, sys.version, sys.prefix)
    for part in (*runtime, *parts):
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        hashed.update(len(data).to_bytes(8, "big") + data)
    return hashed.hexdigest()


def _in_stdlib(path: str, stdlib: str) -> bool:
    site = f"{os.sep}site-packages{os.sep}"
    return path.startswith(stdlib) and site not in path


# Each module file as this process first saw it: the code it runs is what was there then.
# A process that lives on (`serve`, a fleet worker) while aishell is upgraded under it
# keeps its old code, so it neither stamps its entries with the new files nor takes an
# entry the new code made; and a process with many modules loaded (a plugin host) looks
# at each file once, not at every entry.
_first_seen: dict[str, tuple[int, int, int] | None] = {}


def _file_as_first_seen(path: str) -> tuple[int, int, int] | None:
    """The file's inode, size and modification time when this process first looked."""
    try:
        return _first_seen[path]
    except KeyError:
        pass
    try:
        found = os.stat(path)
        seen: tuple[int, int, int] | None = (found.st_ino, found.st_size, found.st_mtime_ns)
    except OSError:
        seen = None
    _first_seen[path] = seen
    return seen


def code_stamp() -> list[list[Any]]:
    """Every loaded module's source file outside the standard library, with its inode,
    size and modification time: the code that just checked what an entry holds."""
    stdlib = os.path.dirname(os.__file__) + os.sep
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and not _in_stdlib(path, stdlib):
            files.add(path)
    stamp = []
    for path in sorted(files):
        seen = _file_as_first_seen(path)
        if seen is not None:
            stamp.append([path, *seen])
    return stamp


def _code_unchanged(stamp: Any) -> bool:
    if not isinstance(stamp, list) or not stamp:
        return False
    try:
        for path, ino, size, mtime in stamp:
            if _file_as_first_seen(path) != (ino, size, mtime):
                return False
    except (TypeError, ValueError):
        return False
    return True


def read_entry(path: Path) -> dict[str, Any] | None:
    """The entry kept at `path`, if it is this user's alone and the code that made it is
    unchanged; None for anything else (no entry, another's file, a torn one)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        private = found.st_uid == os.geteuid() and not found.st_mode & 0o077
        if not stat.S_ISREG(found.st_mode) or not private or found.st_size > MAX_CACHE_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as file:
            raw = file.read(MAX_CACHE_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not _code_unchanged(entry.get("code")):
        return None
    return entry


def cached(path: Path, key: str) -> Any:
    """The data kept at `path` under `key`, or None."""
    entry = read_entry(path)
    if entry is None or entry.get("key") != key:
        return None
    return entry.get("data")


def keep(path: Path, key: str, data: Any) -> None:
    """Keep `data` under `key` at `path`: written whole under a new name and renamed, mode
    0600, in a folder of mode 0700 (made in a home that is there: never the home itself).
    Data that JSON would not give back as it is (a date in a tool's example) is not kept;
    nor is anything when the folder cannot be written."""
    try:
        kept = json.dumps(data, sort_keys=True)
        if json.loads(kept) != data:
            return
    except (TypeError, ValueError):
        return
    # The data checked alone: the code's stamp (a file per module) is not read back.
    stamped = json.dumps({"code": code_stamp(), "key": key}, sort_keys=True)
    text = f'{stamped[:-1]}, "data": {kept}}}'
    # Here, not at the top: only a miss writes.
    from aishell.files import write_beside

    with suppress(OSError, AishellError):
        # The cache's own folder, in a home that is there: a listing makes no home.
        with suppress(FileExistsError):
            os.mkdir(path.parent, 0o700)
            os.chmod(path.parent, 0o700)
        write_beside(path, text.encode(), "The listings' cache", error=ConfigError, mode=0o600)
