"""A SQLite state store's file: that it is still the file this process opened, that a
store with history is not silently replaced by an empty one, and consistent copies.

- Identity. When a store is opened, the device and inode of its path are recorded;
  every commit then makes one os.stat of the path (microseconds) and compares. A file
  that was deleted, replaced by another, or emptied (truncated to 0 bytes) under a
  running process is StateVanished: what the process writes from then on is in no
  store, so the run stops with one line saying so (exit code 1).
- History marker. Once a store has tables, a small file `<store>.has-history` is kept
  beside it (written once). Where the marker is, a store file that is missing, empty
  (0 bytes) or holds no aishell tables is refused, naming what is missing and how to
  restore it; deleting the marker too is how a person starts a new, empty store.
- Side files. The -wal and -shm files must be writable before any step runs: SQLite
  maps -shm into memory and a read-only one ends the process with SIGBUS.
- Copies. backup_copy writes a consistent copy with SQLite's backup API (what the
  -wal file holds too), mode 0600, next to the store (`aishell doctor --backup-state`).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import sqlite3
from contextlib import closing, suppress
from datetime import UTC, datetime
from pathlib import Path

from aishell.diskfaults import at_size_limit, size_limit_line, size_or_zero
from aishell.errors import EXIT_FAILED, StateError

MARKER_SUFFIX = ".has-history"
BACKUP_INFIX = ".backup-"
# What the names of a store's copies add to its own: `doctor --backup-state`'s, and the
# one made before an upgrade (history.copy_aside).
STORE_COPIES = (BACKUP_INFIX, ".before-")


class StateVanished(StateError):
    """The state store's file was deleted, replaced or emptied under this process."""

    exit_code = EXIT_FAILED


class FileIdentity:
    """The device and inode of a SQLite store's file, as it was opened."""

    def __init__(self, path: Path) -> None:
        # Absolute: a later chdir must not make the same file look gone.
        self.path = path.absolute()
        found = os.stat(path)
        self.dev, self.ino = found.st_dev, found.st_ino
        self.lost: str | None = None

    def check(self) -> None:
        """Raise StateVanished unless the path is still the file that was opened, with
        content: one os.stat, on every commit."""
        if self.lost is None:
            try:
                found = os.stat(self.path)
            except FileNotFoundError:
                problem = "was deleted"
            except OSError as exc:
                problem = f"can no longer be found ({exc.strerror})"
            else:
                if found.st_dev == self.dev and found.st_ino == self.ino and found.st_size:
                    return
                same = found.st_dev == self.dev and found.st_ino == self.ino
                problem = "was emptied (0 bytes)" if same else "was replaced by another file"
            self.lost = (
                f"The state store {self.path} {problem} while this process was using it: "
                "what it recorded since is in no store, so it stopped; put back a copy "
                f"({self.path.name}{BACKUP_INFIX}*, {self.path.name}.before-*) and check the "
                "target before running again"
            )
        raise StateVanished(self.lost)


def marker_of(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def keep_marker(path: Path) -> None:
    """Record beside the store that it holds history (once; a failure to write it only
    loses the protection, never the run)."""
    marker = marker_of(path)
    if marker.exists():
        return
    body = {"store": str(path), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    new = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with suppress(OSError), os.fdopen(os.open(marker, new, 0o600), "w") as out:
        out.write(json.dumps(body) + "\n")


def new_private_file(path: Path) -> None:
    """A store SQLite is about to make, made first, empty and 0600 whatever the umask
    (SQLite makes a file 0644, and its journals take the file's mode). A file already
    there, or a folder that cannot be written, is left for SQLite to open or report."""
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def refuse_lost_history(path: Path, schema: tuple[bool, bool] | None = None) -> None:
    """Where the marker says a store with history was, refuse a file that is empty:
    before opening (schema None) 0 bytes; once open (schema: it has tables, they are
    aishell's) without aishell's tables. Says what is missing and how to restore it."""
    marker = marker_of(path)
    if not marker.exists():
        return
    if schema is None:
        try:
            if path.stat().st_size:
                return
            what = "is empty (0 bytes)"
        except FileNotFoundError:
            what = "is missing"
    elif schema[1]:
        return
    else:
        what = "holds another database's tables" if schema[0] else "holds no tables"
    copies = ", ".join(sorted(p.name for p in _copies(path))) or "none found beside it"
    raise StateError(
        f"The state store {path} {what}, but a store with history was there"
        f"{_marker_date(marker)}: its runs, backup catalog and schedules are missing. Put "
        f"back a copy of it (copies: {copies}); or, to start a new, empty store, move the "
        f"file aside and delete {marker}"
    )


def refuse_foreign(path: Path) -> None:
    """Before SQLite is let at it (which would switch it to WAL): a file without the
    marker whose tables none of aishell's made (no revision, no version of before) is
    another application's database, a target's perhaps, and is left as it is. A store
    aishell makes gets its version in the transaction that makes its tables, so no
    store of its own is ever found so. A file that cannot be read here (a journal to
    roll back first) is looked at again once open (StateStore._migrate)."""
    if marker_of(path).exists() or not size_or_zero(path):
        return
    try:
        uri = f"{path.absolute().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            names = [n for (n,) in conn.execute(_TABLES)]
            if not names or _versioned(conn, names):
                return
    except sqlite3.Error:
        return
    raise foreign_store(path, names)


def foreign_store(path: Path, names: list[str]) -> StateError:
    """The one line for a SQLite file that holds another application's tables."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    shown = f" ({', '.join(names[:5])}{more})" if names else ""
    return StateError(
        f"The state store {path} holds another database's tables{shown}, none of "
        "aishell's: it is not a state store, and aishell leaves it as it is; point "
        "state.url at a file of aishell's own (a new path becomes a new store)"
    )


_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' "
    "AND name NOT LIKE 'sqlite~_%' ESCAPE '~' ORDER BY name"
)
_VERSIONS = {
    "alembic_version": "SELECT 1 FROM alembic_version",
    "meta": "SELECT 1 FROM meta WHERE key = 'schema_version'",
}


def _versioned(conn: sqlite3.Connection, names: list[str]) -> bool:
    """Whether a table names the schema's version as aishell keeps it."""
    for table, sql in _VERSIONS.items():
        if table in names:
            with suppress(sqlite3.Error):
                if conn.execute(sql).fetchone():
                    return True
    return False


def _marker_date(marker: Path) -> str:
    try:
        return f" (since {json.loads(marker.read_text())['created']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _copies(path: Path) -> list[Path]:
    # Escaped: a store named with [ or * would otherwise match other files, or miss its own.
    return [c for s in STORE_COPIES for c in path.parent.glob(f"{glob.escape(path.name)}{s}*")]


def check_side_files(path: Path) -> None:
    """The store's -wal and -shm files, where they are, must be writable: SQLite maps
    -shm into memory, and a read-only one kills the process with SIGBUS. Asked with
    access(2), not by opening them: closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's own among them."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        # Looked for again when access(2) says no: another process's last close of the
        # store removes its -wal meanwhile, and a file gone is no file we cannot write.
        if not side.exists() or os.access(side, os.W_OK) or not side.exists():
            continue
        raise StateError(
            f"The state store's file {side} cannot be written; make it writable for this "
            "user (chattr -i, a read-write mount), or move the store with its -wal and "
            "-shm files somewhere writable"
        )


def backup_copy(driver: sqlite3.Connection, path: Path) -> Path:
    """A consistent copy of the open store, through SQLite's backup API, written beside
    it as <file>.backup-<UTC time>, mode 0600."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    copy = path.with_name(f"{path.name}{BACKUP_INFIX}{stamp}")
    partial = copy.with_name(copy.name + ".partial")
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with closing(sqlite3.connect(partial)) as target:
            driver.backup(target)
        os.chmod(partial, 0o600)
        os.replace(partial, copy)
    except (OSError, sqlite3.Error) as exc:
        raise copy_failed(exc, path, partial, copy) from None
    return copy


def copy_failed(exc: OSError | sqlite3.Error, path: Path, partial: Path, copy: Path) -> StateError:
    """The one line for a copy of the store not written (its partial file removed): the
    file size limit it met, or what the system or SQLite said."""
    # The copy is as large as the store: a store past the limit is a copy past it (and
    # SQLite may have emptied the partial file as it gave up).
    limited = at_size_limit(partial, path) or getattr(exc, "errno", None) == errno.EFBIG
    partial.unlink(missing_ok=True)
    if limited:
        return StateError(size_limit_line(copy, "writing a copy of the state store to"))
    return StateError(
        f"Cannot write a copy of the state store {path} to {copy} ({exc}); make room or "
        "make its folder writable, and try again"
    )
