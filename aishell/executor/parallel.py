"""A parallel group's steps (plan/groups.py: consecutive, read-only, none needing
another): their tools run at the same time, each on a connection of its own, at most
the agent's max_parallel_steps at once.

Every rule of a step but its tool's run stays on the main thread, in plan order: what
it waits for, its preparation, the resume rule and any approval are settled for each
step of the group before the first of them starts, so a prompt (where the policy asks
for one) comes before the group runs, never while it runs. Then the tools run on a pool
of threads, each under its own guard, audit and deadline, in a read-only session.

The state store has one connection: while the group runs it is reached through one
lock (Serialized), and each step's start commits before its first statement and its
end as soon as it ends (RunContext.durable_steps), whichever thread records them, so a
run killed inside a group keeps the steps that ended and resumes the others. A stop (a
signal, the run's time limit, `aishell stop`, a lost run lock) cancels the statements
running, starts no further step of the group and leaves those pending for `aishell
resume`; a step that fails does the same, and the run then fails on it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from aishell.errors import AishellError
from aishell.executor.context import RunContext
from aishell.executor.prepare import PreparedStep
from aishell.executor.results import Observer, StepResult
from aishell.executor.resume import is_final, restore
from aishell.executor.statuses import FAILED, INTERRUPTED
from aishell.executor.step import ready_step, tool_step
from aishell.executor.stopping import Stop
from aishell.plan.model import Step
from aishell.scratch.ledger import Ledger
from aishell.state.store import StateStore
from aishell.tool.context import ToolContext
from aishell.tool.readings import TableReadings

# How often the main thread, waiting for the group's steps, looks whether to stop.
POLL_SECONDS = 0.2


class Serialized:
    """An object whose every method runs under one lock: the state store (one
    connection) and the observer (one display) while a group's threads share them."""

    def __init__(self, inner: Any, lock: threading.RLock) -> None:
        self._inner, self._lock = inner, lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value
        lock = self._lock

        def serialized(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return serialized


@dataclass
class Member:
    """A step of the group, its result, and its state from an earlier go of the run."""

    step: Step
    result: StepResult
    stored: Mapping[str, Any] | None


@dataclass
class _Ready:
    """A step whose tool is ready to run, with what its preparation measured."""

    member: Member
    prepared: PreparedStep
    step_cache: dict[str, Any]


def run_group(
    run: RunContext,
    members: list[Member],
    outputs: Mapping[str, Any],
    waiting: set[str],
    ctx: ToolContext,
    connect: Callable[[], Connection],
    slots: int,
) -> None:
    """Every step of one group: readied in order on ctx, then their tools at once, up to
    `slots` of them, each on a connection `connect` makes; the steps' results hold how
    each ended. Raises Stop as a step run alone would (a failed step, a stop)."""
    with _serialized(run):
        ready: list[_Ready] = []
        for member in members:
            if member.stored is not None and is_final(member.stored):
                restore(member.result, member.stored)
                continue
            reason = run.stopping.reason()
            if reason:
                raise Stop(INTERRUPTED, reason)
            prepared = ready_step(
                run, member.step, member.result, outputs, waiting, ctx, member.stored
            )
            if prepared is not None:
                ready.append(_Ready(member, prepared, ctx.step_cache))
        if ready:
            _pool(run, ready, waiting, ctx, connect, slots)


def _pool(
    run: RunContext,
    ready: list[_Ready],
    waiting: set[str],
    ctx: ToolContext,
    connect: Callable[[], Connection],
    slots: int,
) -> None:
    """The ready steps' tools on at most `slots` threads; the first Stop or error ends
    the group once the steps already running have ended."""
    pending = deque(ready)
    running: dict[Future[None], _Ready] = {}
    first: BaseException | None = None
    with ThreadPoolExecutor(min(slots, len(ready)), thread_name_prefix="aishell-step") as pool:
        try:
            while pending or running:
                while pending and len(running) < slots and first is None:
                    reason = run.stopping.reason()
                    if reason:
                        first = Stop(INTERRUPTED, reason)
                        break
                    item = pending.popleft()
                    running[pool.submit(_one, run, item, waiting, ctx, connect)] = item
                if not running:
                    break
                done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    del running[future]
                    error = future.exception()
                    if error is not None and first is None:
                        first = error
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # A signal raised here, on the main thread (Interrupted,
                # KeyboardInterrupt): the steps running are cancelled and end
                # interrupted before it goes on.
                run.stopping.signal = run.stopping.signal or "SIGINT"
                run.stopping.cancel_running()
            _drain(running)
            raise
    if first is not None:
        raise first


def _drain(running: Mapping[Future[None], _Ready]) -> None:
    """Wait for the steps still running to end, whatever comes meanwhile."""
    for future in running:
        while True:
            try:
                future.exception()
                break
            except BaseException:  # a second signal: keep waiting
                continue


def _one(
    run: RunContext,
    item: _Ready,
    waiting: set[str],
    ctx: ToolContext,
    connect: Callable[[], Connection],
) -> None:
    """One step's tool, on a thread of the pool and a connection of its own."""
    member = item.member
    try:
        conn = connect()
    except AishellError as exc:  # the target refused another connection
        run.finish(member.result, "failed", error=str(exc))
        raise Stop(FAILED, f"{member.step.id} ({member.step.tool}) failed: {exc}") from None
    own = replace(
        ctx,
        conn=conn,
        step_cache=item.step_cache,
        # What a step reads of its tables is its own while others read at once.
        table_readings=TableReadings(keeps_held=ctx.dry_run),
        scratch=Ledger(run.store, run.run_id, run.target.name),
        backup_catalog=lambda: run.store.list_backups(run.target.name),
        every_backup=run.store.list_backups,
    )
    try:
        tool_step(run, member.step, member.result, item.prepared, own, waiting)
    finally:
        for opened in {id(c): c for c in (conn, own.conn) if c is not None}.values():
            with suppress(SQLAlchemyError):
                opened.close()


@contextmanager
def _serialized(run: RunContext) -> Iterator[None]:
    """While the group runs: the store and the observer under one lock, and each
    step's start and end committed on its own."""
    lock = threading.RLock()
    store, observer = run.store, run.observer
    run.store = cast(StateStore, Serialized(store, lock))
    run.stopping.store = run.store
    run.observer = cast(Observer, Serialized(observer, lock))
    run.durable_steps = True
    try:
        yield
    finally:
        run.store, run.observer, run.stopping.store = store, observer, store
        run.durable_steps = False
