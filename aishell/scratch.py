"""Scratch files, scratch databases and child processes, and what killed runs leave of them.

A process killed with SIGKILL, or by the power going, cleans up nothing. So each scratch
thing is recorded in the state store before it is made, with the process that makes it,
and forgotten once it is gone; what a process that died left behind is removed by the
next run and by `aishell doctor --clean`. Child processes (dump and restore tools) run in
their own process group and get SIGKILL from the kernel when aishell dies (Linux
PR_SET_PDEATHSIG), so an orphaned dump does not go on filling the disk.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aishell.errors import StepFailed, StepInterrupted, StepTimeout
from aishell.pipereader import STREAM_CHUNK, PipeReader
from aishell.sqltext import quote_identifier, text
from aishell.state import process_started

if TYPE_CHECKING:
    from aishell.state import StateStore

FILE = "file"  # removed whole, with SQLite's journal files beside it
BACKUP = "backup"  # a finished file that is a backup only once its manifest exists
DATABASE = "database"  # a scratch database on a target's server
PROCESS = "process"  # a child process and its process group

# The only database names a scratch entry may drop: a damaged or edited state store
# must never be able to name a real database.
SCRATCH_DATABASE = re.compile(r"aishell_verify_[0-9a-f]{10}")
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")

# How often a waiting child's run is asked whether it should stop.
POLL_SECONDS = 0.25

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class Ledger:
    """Where a run records its scratch things; without a store it records nothing."""

    def __init__(
        self,
        store: StateStore | None = None,
        run_id: str | None = None,
        target: str | None = None,
    ) -> None:
        self.store, self.run_id, self.target = store, run_id, target

    def record(self, kind: str, name: str, **details: Any) -> int | None:
        if self.store is None:
            return None
        return self.store.record_scratch(
            kind, name, run_id=self.run_id, target=self.target, details=details
        )

    def update(self, entry: int | None, **details: Any) -> None:
        if self.store is not None and entry is not None:
            self.store.update_scratch(entry, details)

    def forget(self, entry: int | None) -> None:
        if self.store is not None and entry is not None:
            self.store.forget_scratch(entry)

    def abandon(self, entry: int | None) -> None:
        """This process could not remove the thing: the next run, or `aishell doctor
        --clean`, removes it as if its maker had died."""
        self.update(entry, abandoned=True)

    @contextmanager
    def file(self, path: Path) -> Iterator[Path]:
        """A scratch file, removed afterwards (with any journal SQLite left beside it)."""
        entry = self.record(FILE, str(path))
        try:
            yield path
        finally:
            if _remove_file(path):
                self.forget(entry)
            else:
                self.abandon(entry)

    def clean_dead(self, engine: Engine | None) -> dict[str, Any]:
        """Remove what dead processes left: every file and process, and the scratch
        databases on this run's target (others wait for their own target's next run, or
        `aishell doctor --clean`). Recorded as an event of the run."""
        if self.store is None:
            return {"removed": [], "kept": [], "forgotten": 0}
        outcome = clean(
            self.store,
            lambda name: engine if name == self.target else None,
            quiet_unreachable=True,
        )
        if (outcome["removed"] or outcome["kept"]) and self.run_id is not None:
            self.store.record_event(self.run_id, None, "scratch_cleaned", outcome)
        return outcome


def _remove_file(path: Path) -> bool:
    """Remove a file and its SQLite journal files; False when one could not be removed."""
    removed = True
    for leftover in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDECARS)):
        try:
            leftover.unlink(missing_ok=True)
        except IsADirectoryError:
            removed = False  # a scratch name never names a folder: leave it alone
        except OSError:
            removed = False
    return removed


# --- child processes ----------------------------------------------------------------------


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: the kernel kills it when aishell dies.

    Strictly, when the thread that started it ends; that thread waits for the child."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # aishell died before the line above took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group, and reap the child."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _start(
    argv: list[str], env: dict[str, str], stdin: IO[bytes] | None, stdout: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            process_group=0,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    except FileNotFoundError:
        raise StepFailed(
            f"{argv[0]} is not installed; install the database's client tools"
        ) from None


def run_child(
    argv: list[str],
    *,
    env: dict[str, str],
    ledger: Ledger,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | int = subprocess.PIPE,
    should_stop: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
    watch: Callable[[int], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a client tool to its end, recorded in the ledger before it starts.

    It runs in its own process group (a terminal's Ctrl-C reaches aishell, which then
    stops it) and dies with aishell. Its group is killed when the run is asked to stop,
    when the step's time (deadline, on time.monotonic()) runs out, and on any error.
    `watch` is called with its pid every POLL_SECONDS while it runs (progress figures).
    """
    entry = ledger.record(PROCESS, argv[0])
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = _start(argv, env, stdin, stdout)
        ledger.update(entry, pid=proc.pid, pgid=proc.pid, started=process_started(proc.pid))
        out, err = _wait(proc, argv[0], should_stop, deadline, watch)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    finally:
        if proc is not None and proc.returncode is None:
            _last_look(proc, watch)
            kill_group(proc)
        ledger.forget(entry)


def stream_child(
    argv: list[str],
    *,
    env: dict[str, str],
    ledger: Ledger,
    should_stop: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
    quiet: tuple[float, Callable[[], None]] | None = None,
    watch: Callable[[int], None] | None = None,
) -> Generator[bytes, None, subprocess.CompletedProcess[bytes]]:
    """run_child for a tool whose output is read as it comes: yields its stdout chunk by
    chunk and returns its end (stdout empty). Closing the generator early, or any error
    while its output is read, kills the tool's group. `quiet`: (seconds, call), called
    while the tool has written nothing for that long, at most that often; it may raise
    to stop the tool. `watch`: as run_child's."""
    entry = ledger.record(PROCESS, argv[0])
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = _start(argv, env, None, subprocess.PIPE)
        ledger.update(entry, pid=proc.pid, pgid=proc.pid, started=process_started(proc.pid))
        assert proc.stdout is not None and proc.stderr is not None
        with suppress(OSError):  # fewer, larger reads; the default pipe holds 64 KiB
            fcntl.fcntl(proc.stdout, fcntl.F_SETPIPE_SZ, STREAM_CHUNK)
        err = yield from _pump(proc, argv[0], should_stop, deadline, quiet, watch)
        return subprocess.CompletedProcess(argv, proc.returncode, b"", err)
    finally:
        if proc is not None:
            if proc.returncode is None:
                _last_look(proc, watch)
                kill_group(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        ledger.forget(entry)


def _last_look(proc: subprocess.Popen[bytes], watch: Callable[[int], None] | None) -> None:
    """`watch` once more before the child is killed: what it notes of the child (its
    server connections, whose sessions are ended after it) may be newer than its last
    call, a poll ago."""
    if watch is not None:
        with suppress(Exception):  # the kill must happen whatever the watch does
            watch(proc.pid)


def _check(
    proc: subprocess.Popen[bytes],
    program: str,
    should_stop: Callable[[], bool],
    deadline: float | None,
    watch: Callable[[int], None] | None = None,
) -> None:
    if should_stop():
        _last_look(proc, watch)
        kill_group(proc)
        raise StepInterrupted(f"{program} was stopped: the run was asked to stop")
    if deadline is not None and time.monotonic() > deadline:
        _last_look(proc, watch)
        kill_group(proc)
        raise StepTimeout(f"{program} ran past the step's time limit and was killed")


def _wait(
    proc: subprocess.Popen[bytes],
    program: str,
    should_stop: Callable[[], bool],
    deadline: float | None,
    watch: Callable[[int], None] | None = None,
) -> tuple[bytes, bytes]:
    while True:
        try:
            return proc.communicate(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        _check(proc, program, should_stop, deadline, watch)
        if watch is not None:
            watch(proc.pid)


def _pump(
    proc: subprocess.Popen[bytes],
    program: str,
    should_stop: Callable[[], bool],
    deadline: float | None,
    quiet: tuple[float, Callable[[], None]] | None = None,
    watch: Callable[[int], None] | None = None,
) -> Generator[bytes, None, bytes]:
    """Yield the child's stdout as it comes, keep its stderr, then wait for its end;
    asked every POLL_SECONDS whether to stop, however busy the output. A thread drains
    the pipes meanwhile (aishell/pipereader.py), so the child does not wait for what
    is done with each chunk."""
    assert proc.stdout is not None and proc.stderr is not None
    reader = PipeReader(proc.stdout.fileno(), proc.stderr.fileno())
    try:
        checked = heard = time.monotonic()
        while (chunk := reader.next_chunk(POLL_SECONDS)) != b"":
            if chunk is not None:
                heard = time.monotonic()
                yield chunk
            if time.monotonic() - checked >= POLL_SECONDS:
                checked = time.monotonic()
                _check(proc, program, should_stop, deadline, watch)
                if watch is not None:
                    watch(proc.pid)
                if quiet is not None and checked - heard >= quiet[0]:
                    heard = checked  # asked again after as long a silence
                    quiet[1]()
    finally:
        # On the way out after a failure the caller kills the child; the reading
        # thread stops at once either way.
        said = reader.close()
    while True:
        try:
            proc.wait(timeout=POLL_SECONDS)
            return said
        except subprocess.TimeoutExpired:
            _check(proc, program, should_stop, deadline, watch)


# --- what dead runs left -------------------------------------------------------------------


class _Kept(Exception):
    """An entry that could not be removed now, and why; elsewhere: its target is not
    one this caller can reach (a run reaches only its own)."""

    def __init__(self, why: str, elsewhere: bool = False) -> None:
        super().__init__(why)
        self.elsewhere = elsewhere


def leftovers(store: StateStore) -> list[dict[str, Any]]:
    """What processes that died left behind and is still there (nothing is touched; a
    scratch database counts as there, since only its server can tell)."""
    return [_shown(entry) for entry in store.scratch_of_dead_runs() if _there(entry)]


def clean(
    store: StateStore,
    engine_for: Callable[[str], Engine | None],
    *,
    quiet_unreachable: bool = False,
) -> dict[str, Any]:
    """Remove what processes that died left behind: kill their child processes first
    (an orphaned restore holds its scratch database), then delete files, then drop
    scratch databases through engine_for(target). What cannot be removed is kept, with
    why; quiet_unreachable leaves out the databases of targets engine_for does not give.
    Entries of things already gone are forgotten and counted."""
    removed: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    forgotten = 0
    order = {PROCESS: 0, FILE: 1, BACKUP: 1, DATABASE: 2}
    for entry in sorted(store.scratch_of_dead_runs(), key=lambda e: order.get(e["kind"], 3)):
        try:
            done = _remove(entry, engine_for) if _there(entry) else None
        except _Kept as why:
            if not (quiet_unreachable and why.elsewhere):
                kept.append({**_shown(entry), "why": str(why)})
            continue
        store.forget_scratch(entry["id"])
        if done is None:
            forgotten += 1
        else:
            removed.append({**_shown(entry), "done": done})
    return {"removed": removed, "kept": kept, "forgotten": forgotten}


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": entry["kind"],
        "name": entry["name"],
        "run_id": entry["run_id"],
        "target": entry["target"],
        "pid": entry["details"].get("pid") if entry["kind"] == PROCESS else entry["pid"],
        "recorded_at": entry["created_at"],
    }


def _child_running(details: dict[str, Any]) -> bool:
    """Is the recorded child still running, and still that child (not a later process
    that got its pid)?"""
    pid, started = details.get("pid"), details.get("started")
    if not isinstance(pid, int) or not started:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and fields[19].decode() == started


def _there(entry: dict[str, Any]) -> bool:
    kind, path = entry["kind"], Path(entry["name"])
    if kind == PROCESS:
        # Without a pid the run died before the child started; a child that did start
        # died with it (the kernel's parent-death signal).
        return _child_running(entry["details"])
    if kind == FILE:
        return any(path.with_name(path.name + s).exists() for s in ("", *SQLITE_SIDECARS))
    if kind == BACKUP:
        # A renamed file with its manifest is a finished backup, whatever the run did next.
        return path.exists() and not path.with_name(path.name + ".manifest.json").exists()
    return True


def _remove(entry: dict[str, Any], engine_for: Callable[[str], Engine | None]) -> str:
    kind, name = entry["kind"], entry["name"]
    if kind == PROCESS:
        return _kill_orphan(entry["details"])
    if kind in (FILE, BACKUP):
        if not _remove_file(Path(name)):
            raise _Kept(f"cannot delete {name}; delete it by hand")
        return "deleted"
    if kind == DATABASE:
        return _drop_database(name, entry["target"], engine_for)
    raise _Kept(f"unknown kind of scratch entry '{kind}'; this aishell is older than the entry")


def _kill_orphan(details: dict[str, Any]) -> str:
    pid = details["pid"]
    pgid = details.get("pgid")
    try:
        if pgid == pid:
            os.killpg(pid, signal.SIGKILL)  # the child and anything it started
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "already gone"
    except PermissionError:
        raise _Kept(f"not allowed to kill process {pid}; kill it as its owner") from None
    return f"killed process group {pid}" if pgid == pid else f"killed process {pid}"


def _drop_database(
    name: str, target: str | None, engine_for: Callable[[str], Engine | None]
) -> str:
    if not SCRATCH_DATABASE.fullmatch(name):
        raise _Kept(f"'{name}' is not a name aishell gives scratch databases; not dropped")
    engine = engine_for(target) if target else None
    if engine is None:
        raise _Kept(
            f"target '{target}' is not configured; drop database {name} on its server by hand",
            elsewhere=True,
        )
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
            quoted = quote_identifier(admin.dialect, name)
            if admin.dialect.name == "postgresql":
                # A CREATE DATABASE whose client died still finishes on the server, after
                # this drop would have found nothing: it is ended first (and waited for).
                admin.execute(
                    text(
                        "SELECT pg_catalog.pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                        "WHERE pid <> pg_catalog.pg_backend_pid() "
                        "AND query ILIKE 'CREATE DATABASE%' "
                        "AND position(:name in query) > 0"
                    ),
                    {"name": name},
                ).all()
                # FORCE ends the sessions of a restore that outlived its run.
                admin.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            else:
                _end_sessions_in(admin, name)
                admin.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise _Kept(
            f"cannot drop {name} on target '{target}': {first[0] if first else exc}"
        ) from None
    return f"dropped on target '{target}'"


def _end_sessions_in(admin: Connection, name: str) -> None:
    """MySQL/MariaDB: end the sessions still in a scratch database (a restore that
    outlived its run would hold the drop back for as long as it waits)."""
    sessions = admin.execute(
        text(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
            "AND (DB = :name OR (INFO LIKE 'CREATE DATABASE%' AND LOCATE(:name, INFO) > 0))"
        ),
        {"name": name},
    ).all()
    for (session,) in sessions:
        with suppress(SQLAlchemyError):  # it may have ended by itself meanwhile
            admin.execute(text("KILL CONNECTION :id"), {"id": int(session)})
