"""Child processes (dump and restore tools), run so that nothing outlives aishell.

Each runs in its own process group and gets SIGKILL from the kernel when aishell dies
(Linux PR_SET_PDEATHSIG), so an orphaned dump does not go on filling the disk.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from contextlib import suppress
from typing import IO, TYPE_CHECKING

from aishell.errors import StepFailed, StepInterrupted, StepTimeout
from aishell.scratch.ledger import Ledger
from aishell.scratch.leftovers import PROCESS
from aishell.scratch.pipereader import STREAM_CHUNK, PipeReader
from aishell.state.processes import process_started

if TYPE_CHECKING:
    pass


# How often a waiting child's run is asked whether it should stop.
POLL_SECONDS = 0.25

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


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
    the pipes meanwhile (aishell/scratch/pipereader.py), so the child does not wait for what
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
