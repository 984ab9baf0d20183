"""Why a run stops before its end: a signal, its time limit, `aishell stop`, a lost run lock.

A stop never cuts a step's bookkeeping short: no new step starts, a running statement is
cancelled, the step ends interrupted and `aishell resume` goes on from there.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from aishell.signalrelay import relayed
from aishell.state.store import StateStore
from aishell.targets.deadlines import stop_statement
from aishell.targets.limits import Limits, limits_of
from aishell.targets.locks import RunLock
from aishell.units import took

# How often a run asks the server whether its lock's session lives, by a round trip:
# a session the server ended shows at once on its socket, this catches a lost network.
LOCK_CHECK_SECONDS = 10.0
# How long the lease watcher waits on the lock's socket before it looks whether the
# run ended: the bound on its thread's end, not on noticing a loss (that is at once).
LEASE_POLL_SECONDS = 0.25
# How long the main thread has to run the signal handler before the signal is sent on
# to it: a thread blocked in a read (the approval prompt) sees only its own signals.
HANDLER_WAIT_SECONDS = 0.2
# How often a stop looks whether the statement it cancelled has ended.
STOP_POLL_SECONDS = 0.05


# The runs of this process now, each by its Stopping: what stop_all() ends (the
# scheduler's own stop, whose runs run on its threads, where no signal reaches them).
_RUNNING: set[Stopping] = set()
_RUNNING_LOCK = threading.Lock()


# By thread: the event that stops the runs the thread starts, and why (stops_with).
_THREAD = threading.local()


@contextmanager
def stops_with(stop: threading.Event, why: str) -> Iterator[None]:
    """The runs this thread starts meanwhile stop before their next step, as `why`, once
    `stop` is set: one that was still planning when stop_all() came (no run to reach
    yet) stops as it begins, resumably, instead of running its steps."""
    _THREAD.stop = (stop, why)
    try:
        yield
    finally:
        _THREAD.stop = None


def stop_all(why: str) -> None:
    """Stop every run of this process as a signal would: no new statement, the running
    one cancelled, its socket closed if the server answers neither (cancel_running)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for stopping in running:
        stopping.signal = stopping.signal or why
        stopping.cancel_running()


# What a lost run lock stops a run as, where a signal's name would be.
LOCK_LOST = "the loss of the run lock"
# What a run without a lock (a dry run) stops as once its server stopped answering.
SERVER_SILENT = "the server's silence"


class Interrupted(BaseException):
    """SIGINT or SIGTERM between statements: like KeyboardInterrupt, never swallowed."""


class Stop(Exception):
    """Ends the step loop with a run status."""

    def __init__(self, status: str, error: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error


@dataclass(eq=False)
class Stopping:
    """What may stop one executor's run, and the means to cancel its running statement."""

    store: StateStore
    target: str
    # The run's lock on the target's database, watched while the run lasts (lease()).
    run_lock: RunLock | None = None
    run_id: str = ""
    # Set once a signal came or the run's time limit was reached: what stops the run.
    signal: str | None = None
    # Set by the lease watcher once the lock's session is gone: the run stops.
    lock_lost: bool = False
    # Who asked with `aishell stop`, once a watch of the store saw it while a statement
    # waited (executor/requested.py); None until then.
    requested: str | None = None
    # What ended the lease watcher when it failed in a way it does not expect: the run
    # stops then too, as no one is left to watch its lock.
    watch_failed: str | None = None
    # The connections steps' statements run on now (several while a parallel group
    # runs, executor/parallel.py); a stop cancels what runs on each.
    _running: list[Connection] = field(default_factory=list)
    # Those a stop is cancelling now (cancel_running), each once.
    _cancelling: list[Connection] = field(default_factory=list)
    # The limits of every target a step ran on: a stop that finds no step on a
    # connection (a step connecting again, between steps) still gives up their connects.
    _targets: list[Limits] = field(default_factory=list)
    # Reentrant: the signal handler reads `running` on the main thread, which may hold
    # it at that moment (a step entering or leaving its connection).
    _guard: threading.RLock = field(default_factory=threading.RLock)
    # The target's engine: a stop gives up its connects, also before the first step.
    engine: Engine | None = None
    # Whether a person is asked now on the main thread (asking()), and whether the
    # signal handlers that end that wait are installed (signals()).
    _asking: bool = False
    _prompt_wakes: bool = False

    def __post_init__(self) -> None:
        limits = limits_of(self.engine) if self.engine is not None else None
        if limits is not None:
            self._targets.append(limits)

    @property
    def running(self) -> Connection | None:
        """A connection a step's statements run on now; None when no step is sending."""
        with self._guard:
            return self._running[-1] if self._running else None

    def enter(self, conn: Connection) -> None:
        """A step's statements run on conn from now on (audit.audited)."""
        limits = limits_of(conn.engine)
        with self._guard:
            self._running.append(conn)
            if limits is not None and not any(t is limits for t in self._targets):
                self._targets.append(limits)

    def leave(self, conn: Connection) -> None:
        """The step left conn: nothing of it runs there any more."""
        with self._guard:
            self._running = [c for c in self._running if c is not conn]
            self._cancelling = [c for c in self._cancelling if c is not conn]

    def _on(self, conn: Connection) -> bool:
        with self._guard:
            return any(c is conn for c in self._running)

    def reason(self) -> str | None:
        """Why the run must stop now, as its error says it; None to go on."""
        # The first cause is the run's: a lock lost after the time limit or a signal
        # came (a frozen server fails the lease too) does not take its place.
        if self.lock_lost and self.signal in (None, LOCK_LOST, SERVER_SILENT):
            return self._lost()
        if self.signal:
            return f"interrupted by {self.signal}; continue with `aishell resume {self.run_id}`"
        who = self.requested or self.store.stop_requested(self.run_id)
        if who:
            return (
                f"stopped by {who} with `aishell stop`; "
                f"continue with `aishell resume {self.run_id}`"
            )
        return None

    def _lost(self) -> str:
        """Why the run stopped once its lock (or liveness watch) said it was lost."""
        lock = self.run_lock
        if self.watch_failed is not None:
            return (
                f"target '{self.target}': the watch on the run's session failed "
                f"({self.watch_failed}), so the run stopped rather than go on unwatched; "
                f"continue with `aishell resume {self.run_id}`"
            )
        silence = lock.silence() if lock is not None else None
        if lock is not None and not lock.held:
            return (
                f"target '{self.target}': {silence or 'the server stopped answering'}, so "
                f"the run stopped; continue with `aishell resume {self.run_id}`"
            )
        if silence:
            return (
                f"lost the run lock on target '{self.target}': {silence}, so the run stopped "
                "before another run could share the database; "
                f"continue with `aishell resume {self.run_id}`"
            )
        return (
            f"lost the run lock on target '{self.target}': the server ended the "
            "session that held it (a terminated backend, a KILL, an idle timeout) or "
            "another process took it after a restart, so the run stopped before another "
            "run could share the database; "
            f"continue with `aishell resume {self.run_id}`"
        )

    def cause(self) -> str | None:
        """What stopped the run while a step ran, as the step's error begins; None: no
        signal, time limit, lost lock or seen `aishell stop`."""
        if self.signal:
            return f"interrupted by {self.signal}"
        if self.requested:
            return f"stopped by {self.requested} with `aishell stop`"
        return None

    def connections(self) -> list[Connection]:
        """The connections steps' statements run on now."""
        with self._guard:
            return list(self._running)

    def wait(self, seconds: float) -> None:
        """Sleep `seconds` (a retry's backoff), or less once a stop came (a signal, the
        time limit, the run lock lost): the retry then sees the stop, not the wait's end."""
        ends = time.monotonic() + seconds
        while self.signal is None and not self.lock_lost:
            left = ends - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, STOP_POLL_SECONDS))

    def lose_lock(self) -> None:
        """The run lock is gone: no new statement is sent, the running one is cancelled."""
        self.lock_lost = True
        # What every statement's audit and a step's end look at (see audit.audited).
        held = self.run_lock is None or self.run_lock.held
        self.signal = self.signal or (LOCK_LOST if held else SERVER_SILENT)
        self.cancel_running()

    @contextmanager
    def known(self) -> Iterator[None]:
        """While the run lasts, stop_all() reaches it."""
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        stop = getattr(_THREAD, "stop", None)
        if stop is not None and stop[0].is_set():
            self.signal = self.signal or stop[1]
        try:
            yield
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Watch the run lock's session while the run lasts, on a thread of its own.

        A session the server ended (pg_terminate_backend, KILL, an idle timeout) makes
        its idle socket readable at once; the watcher then asks the server, and on a
        loss stops the run (lose_lock). A round trip every LOCK_CHECK_SECONDS catches
        what a socket does not show. No round trip is added to any statement.
        """
        lock = self.run_lock
        stirred = lock.stirred if lock is not None else None
        if lock is None or stirred is None:
            yield
            return
        stop = threading.Event()
        # Written to when the run ends: the watcher's wait ends then, not a poll later.
        woken, wake = socket.socketpair()

        def watch() -> None:
            checked = time.monotonic()
            while not stop.is_set():
                seen = stirred(LEASE_POLL_SECONDS, woken.fileno())
                if stop.is_set():
                    return
                if seen or time.monotonic() - checked >= LOCK_CHECK_SECONDS:
                    checked = time.monotonic()
                    if not lock.holds():
                        self.lose_lock()
                        return
                    if seen:  # a message the server may send an idle session: read
                        stop.wait(LEASE_POLL_SECONDS)

        def watch_or_stop() -> None:
            # Fail closed: a watcher ended by an error would leave the run going on with
            # nobody looking at its lock.
            try:
                watch()
            except Exception as exc:
                said = str(exc).strip().splitlines()
                name = type(exc).__name__
                self.watch_failed = f"{name}: {said[0]}" if said else name
                self.lose_lock()

        watcher = threading.Thread(target=watch_or_stop, name="aishell-lease", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            wake.send(b"x")
            watcher.join(LEASE_POLL_SECONDS * 4)
            wake.close()
            woken.close()

    @contextmanager
    def asking(self) -> Iterator[None]:
        """While a person is asked: a stop (the time limit, a lost run lock) ends the
        wait at once, as Ctrl-C does, leaving the step waiting, rather than whenever the
        person answers (a run left at a prompt held its lock past every limit)."""
        self._asking = True
        try:
            yield
        finally:
            self._asking = False

    def cancel_running(self) -> None:
        """Cancel what runs on each step's connection and, if the server answers neither
        it nor the cancel within the target's read_timeout_seconds, close its socket: the
        step then ends interrupted even on a server that stopped answering. On threads
        of their own: the callers (the signal, lease and time-limit watchers) never wait
        on a server. Once per step, whichever stop came first."""
        with self._guard:
            fresh = [c for c in self._running if not any(c is d for d in self._cancelling)]
            self._cancelling.extend(fresh)
            targets = list(self._targets)
        for limits in targets:
            limits.stop()
        for running in fresh:
            self._cancel(running)
        main = threading.main_thread().ident
        if self._asking and self._prompt_wakes and main is not None:
            # The main thread waits in a read of the terminal: the handler ends it.
            signal.pthread_kill(main, signal.SIGINT)

    def _cancel(self, running: Connection) -> None:
        def ended(seconds: float) -> bool:
            # What runs at the stop is over once the step left the connection (its
            # bookkeeping closed, see audit.audited). Not when no statement of its own
            # waits: the guard's catalog lookup before a statement waits on the server
            # too, unmarked, and a step still on the connection at the bound has none
            # left to send (the audit refuses every statement once a stop came).
            until = time.monotonic() + seconds
            while self._on(running):
                if time.monotonic() >= until:
                    return False
                time.sleep(STOP_POLL_SECONDS)
            return True

        threading.Thread(
            target=stop_statement, args=(running, ended), name="aishell-stop", daemon=True
        ).start()

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM: no new step starts; a running statement is cancelled.

        Python runs a signal handler only between bytecodes of the main thread, never
        while a driver's C call blocks it. The signal reaches a thread of its own at
        once through the wakeup fd (signalrelay), which cancels the running statement;
        the Python handler then sees the cancelled step.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        # Whether the Python handler ran in the main thread. The kernel may deliver the
        # signal to any thread; the main thread, blocked reading the prompt's answer,
        # then never wakes. The watcher sends the signal on to it once.
        handled = threading.Event()

        def handler(signum: int, _frame: Any) -> None:
            first = not handled.is_set()
            handled.set()
            # The first cause stays the run's (a time limit reached before the signal).
            self.signal = self.signal or signal.Signals(signum).name
            if first and self.running is None:
                raise Interrupted(self.signal)

        main = threading.main_thread().ident

        def cancel(signum: int, leaving: threading.Event) -> None:
            self.signal = self.signal or signal.Signals(signum).name
            self.cancel_running()
            if not handled.wait(HANDLER_WAIT_SECONDS) and not leaving.is_set() and main:
                signal.pthread_kill(main, signum)

        with relayed((signal.SIGINT, signal.SIGTERM), handler, cancel, "aishell-signals"):
            self._prompt_wakes = True
            try:
                yield
            finally:
                self._prompt_wakes = False

    @contextmanager
    def time_limit(
        self, run_limit: tuple[float, str] | None, run_started: float | None
    ) -> Iterator[None]:
        """Past the run's time limit the run stops as on SIGTERM: the running statement
        is cancelled, the step ends interrupted, and `aishell resume` goes on.

        run_limit: the limit in seconds and the setting it comes from; run_started: when
        the run began (time.monotonic()), planning included; None counts from now.
        """
        if run_limit is None:
            yield
            return
        seconds, setting = run_limit
        spent = 0.0 if run_started is None else time.monotonic() - run_started

        def reached() -> None:
            self.signal = self.signal or f"the run-time limit of {took(seconds, None)} ({setting})"
            self.cancel_running()

        timer = threading.Timer(max(seconds - spent, 0.0), reached)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
