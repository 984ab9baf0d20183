"""Processes of their own for the tests that kill, signal or stop one, without paying
for an interpreter's start and aishell's imports each time (about a second of a core
on a loaded machine, more than many of those runs take).

multiprocessing's fork server (one per test process, started on first use) imports
aishell once (prewarmed_imports.py); each process here is a fork of that server: a
process of its own, with its own pid, that runs `aishell.cli.main` as `python -m
aishell` does, in the environment, working directory and output files the test gives,
is killed with SIGKILL or signalled like any, and ends with its own exit status. It is
not a fork of the test process, whose threads and connections it would share.

The server, not the test, is its parent and reaps it the moment it ends: its pid may
then name another process. The test signals it through a pidfd, taken while the process
waits for it to be taken, which names that process only and fails once it has ended.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tests import helpers

_SERVER = multiprocessing.get_context("forkserver")
# Taken by the server when it starts (if something else started it first, its forks
# import what they need as they go: slower, the same processes). The main module too
# (pytest's script, where there is one), or each fork would run it again.
_SERVER.set_forkserver_preload(["__main__", "tests.executor.prewarmed_imports"])


class Child:
    """A started process: as much of subprocess.Popen as the tests use."""

    def __init__(self, process: BaseProcess, pidfd: int) -> None:
        self._process = process
        self.pid: int = process.pid  # type: ignore[assignment]
        self._pidfd = pidfd
        self._close = weakref.finalize(self, os.close, pidfd)

    @property
    def returncode(self) -> int | None:
        """The exit code, or minus the signal that ended it; None while it runs."""
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(["aishell"], timeout or 0)
        self._close()
        return code

    def send_signal(self, signum: int) -> None:
        """The signal to this process; ProcessLookupError if it has ended."""
        if not self._close.alive:
            raise ProcessLookupError(f"process {self.pid} has ended")
        signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _as_started(env: Mapping[str, str], cwd: str) -> None:
    """The process's environment (the C library's too: a driver reads it there) and
    working directory, as the test would have given a subprocess."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)


def _aishell(
    args: list[str], env: dict[str, str], cwd: str, out: str, err: str, taken: Connection
) -> None:
    taken.recv()  # the test holds this process's pidfd: see the module's docstring
    taken.close()
    _as_started(env, cwd)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["aishell", *args]
    from aishell.cli import main

    try:
        main()
    finally:
        # What an interpreter's exit runs and a fork server's child does not.
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()


def start_aishell(args: Sequence[str], env: Mapping[str, str], out: Path, err: Path) -> Child:
    """`aishell args` in a process of its own; its stdout and stderr go to these files
    (stdin is /dev/null)."""
    for path in (out, err):
        path.write_bytes(b"")  # there to be read even if the process never got to them
    taken, tell = _SERVER.Pipe(duplex=False)
    process = _SERVER.Process(
        target=_aishell,
        args=(list(args), dict(env), os.getcwd(), str(out), str(err), taken),
        name="aishell",
        # Ended with the test process if a failed test left it running.
        daemon=True,
    )
    process.start()
    taken.close()
    # The process waits for the word below: until then its pid is surely its own.
    child = Child(process, os.pidfd_open(process.pid))  # type: ignore[arg-type]
    tell.send(True)
    tell.close()
    return child


def at_once(count: int, work: Callable[..., Any], rounds: list[tuple[Any, ...]]) -> list[list[Any]]:
    """tests.helpers.at_once with processes forked from the warm server instead of
    spawned (each spawned one imports aishell and the test module first). `work` must be
    a function of a module the server imports (this one), or each process imports its
    module first."""
    return helpers.at_once(count, work, rounds, context=_SERVER)


def schema_version(path: Path) -> int:
    """The schema version of the state store at path, opening (creating) it."""
    from aishell.state.store import StateStore

    with StateStore(f"sqlite:///{path}") as store:
        return store.schema_version
