"""Failures of the state store itself (locked, damaged, read-only, full, unreachable),
each told as one StateError line: where the store is, what is wrong, what to do."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    IntegrityError,
    OperationalError,
)

from aishell.diskfaults import (
    REFUSALS,
    at_size_limit,
    disk_space,
    quota_line,
    size_limit_line,
    sqlite_hides,
)
from aishell.errors import StateError
from aishell.files import file_in_the_way
from aishell.units import took

# Seconds a SQLite store waits for another process's lock, unless the URL's `timeout`
# (state.busy_timeout_ms) says otherwise.
DEFAULT_BUSY_TIMEOUT = 10.0
# Less free space than this, where SQLite reports an I/O error, is a full disk.
_NEARLY_FULL = 1 << 20


def busy_timeout_of(url: str) -> float:
    try:
        parsed = make_url(url)
        return float(parsed.query.get("timeout") or DEFAULT_BUSY_TIMEOUT)  # type: ignore[arg-type]
    except (ArgumentError, TypeError, ValueError):
        return DEFAULT_BUSY_TIMEOUT


def is_fault(exc: DBAPIError) -> bool:
    """A failure of the store rather than of a statement: the file or server cannot be
    used (SQLite reports a damaged file as a bare DatabaseError), or the server refused
    its login a right the store needs (PostgreSQL's refusal is a ProgrammingError)."""
    if isinstance(exc, OperationalError) or type(exc) is DatabaseError:
        return True
    return _refused_a_right(str(exc.orig or exc).lower())


def raced(exc: DBAPIError) -> bool:
    """What processes opening one new store at once meet, and a second look resolves."""
    message = str(exc.orig).lower()
    return isinstance(exc, IntegrityError) or "exist" in message or "locked" in message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_path(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _writable(path: Path) -> bool:
    """Whether this process may write the file (if it is there) and its folder; a
    read-only mount refuses even root."""
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(path.parent, os.W_OK)


def _nearly_full(path: Path) -> bool:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def _refused_a_right(lower: str) -> bool:
    """A server's refusal of a privilege the login lacks (MySQL's "ALTER command denied",
    PostgreSQL's "permission denied for schema public"), not of the login itself
    ("Access denied for user", a password that failed: state.url's to fix)."""
    return "permission denied" in lower or "command denied" in lower


def _server_error(location: str, message: str) -> StateError:
    """state_error's line for a store on a server."""
    lower, where = message.lower(), f"The state store {location}"
    if "read-only" in lower or "read only" in lower:
        return StateError(
            f"{where} is read-only ({message}); point state.url at a writable primary"
        )
    if "disk full" in lower or "no space" in lower:
        return StateError(f"{where} has no space left ({message}); free space on its server")
    if _refused_a_right(lower):
        return StateError(
            f"{where} refused what aishell asked of it ({message}); grant the login of "
            "state.url the rights to create, alter, read and write the tables of its "
            "database (or schema), or point state.url at a login that has them"
        )
    return StateError(
        f"Cannot use the state store {location}: {message}; check that its server is up, "
        "and state.url and state.password_env in the config"
    )


def state_error(location: str, url: str, exc: DBAPIError, busy_timeout: float) -> StateError:
    """One line: where the state store is, what is wrong with it, and what to do."""
    message = _first_line(exc.orig or exc)
    lower = message.lower()
    where = f"The state store {location}"
    path = sqlite_path(url)
    if path is None:
        return _server_error(location, message)
    if "locked" in lower or "busy" in lower:
        return StateError(
            f"{where} is locked by another process (still locked after "
            f"{took(busy_timeout, None)}); "
            "let that process finish and try again, or raise state.busy_timeout_ms"
        )
    if "not a database" in lower or "malformed" in lower or "encrypted" in lower:
        return StateError(
            f"{where} is damaged ({message}); move it aside with its -wal and -shm files and "
            "put back a copy, or delete its .has-history file beside it too to let aishell "
            "start a new, empty one there"
        )
    journals = [path.with_name(path.name + suffix) for suffix in ("-wal", "-journal")]
    if ("i/o" in lower or "full" in lower) and at_size_limit(path, *journals):
        return StateError(size_limit_line(path, "writing the state store"))
    probed = sqlite_hides(path, lower)
    hidden = None if probed is None else probed.errno
    if hidden == errno.EDQUOT:
        fix = "free space within it, or point state.url at another disk"
        return StateError(quota_line(path, "writing the state store", fix))
    if (
        hidden == errno.ENOSPC
        or "full" in lower
        or (("i/o" in lower or "unable to open" in lower) and _nearly_full(path))
    ):
        return StateError(
            f"The disk holding the state store {location} is full: {disk_space(path)} "
            f"({message}); free space there, or point state.url at another disk"
        )
    blocking = file_in_the_way(path)
    if "unable to open" in lower and blocking is not None:
        return StateError(
            f"{where} cannot be opened: {blocking} is a file, not a folder; move it away, "
            "or point state.url elsewhere"
        )
    if "unable to open" in lower and not path.parent.is_dir():
        return StateError(
            f"{where} cannot be opened: its folder {path.parent} does not exist; create it, "
            "or point state.url elsewhere"
        )
    if "readonly" in lower or "read-only" in lower or hidden in REFUSALS or not _writable(path):
        return StateError(
            f"{where} is read-only ({message}); make the file and its folder writable for "
            "this user, or point state.url at a writable place"
        )
    return StateError(
        f"{where} cannot be used ({message}); check the file, its folder and their disk"
    )
