"""The run's time limit over its planning, which counts towards it, also on a server that
stopped answering (stopping.Stopping keeps the limit once the run began)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from aishell.agents.bounded import planning_deadline
from aishell.errors import AishellError, PlanningStopped, TargetUnreachable
from aishell.executor.stopping import STOP_POLL_SECONDS
from aishell.targets.deadlines import cut_if_unanswered, in_flight
from aishell.targets.limits import Limits, limits_of
from aishell.units import took


@contextmanager
def planning_limit(
    engine: Engine, run_limit: tuple[float, str] | None, run_started: float
) -> Iterator[None]:
    """The run's time limit over its planning, which counts towards it: a catalog read
    still waiting on the server at the limit is given read_timeout_seconds more, then
    cut off (cut_if_unanswered), and a connect is given up (Limits.stop); planning then
    ends with PlanningStopped. A read the server answers, or none waiting, and planning
    goes on: the run it starts stops before its first step, resumably.

    run_limit: the limit in seconds and the setting it comes from; run_started: when
    the run began (time.monotonic())."""
    if run_limit is None:
        yield
        return
    seconds, setting = run_limit
    opened: list[Connection] = []
    # What waited on the server at the limit: an error planning ends with is its.
    waited: list[Connection] = []
    # The target's limits, which the limit stopped: a connect they gave up is why too.
    stopped_limits: list[Limits] = []

    def track(conn: Connection) -> None:
        opened.append(conn)

    def reached() -> None:
        # A connect under way (a silent server's) is given up, as a run's stop gives it
        # up: it has no statement to cut.
        limits = limits_of(engine)
        if limits is not None:
            limits.stop()
            stopped_limits.append(limits)
        waited.extend(_cut_waiting(opened))

    event.listen(engine, "engine_connect", track)
    timer = threading.Timer(max(seconds - (time.monotonic() - run_started), 0.0), reached)
    timer.daemon = True
    timer.start()
    stopped = (
        f"interrupted by the run-time limit of {took(seconds, None)} ({setting}) while planning"
    )
    try:
        with planning_deadline(run_started + seconds, stopped):
            yield
    except Exception as exc:
        gave_up = any(limits.connects_given_up for limits in stopped_limits)
        if not (waited and isinstance(exc, DBAPIError)) and not (
            gave_up and isinstance(exc, DBAPIError | TargetUnreachable)
        ):
            raise
        # The server's error for what waited at the limit (its socket closed): this is why.
        why = f"; {exc}" if isinstance(exc, AishellError) else ""
        raise PlanningStopped(
            f"{stopped}, before any run was recorded: nothing was changed{why}"
        ) from None
    finally:
        timer.cancel()
        event.remove(engine, "engine_connect", track)


def _cut_waiting(opened: list[Connection]) -> list[Connection]:
    """Those of `opened` whose statement waits on the server, each cut off if it still
    waits read_timeout_seconds from now (cut_if_unanswered, on a thread of its own)."""
    waiting = []
    for conn in list(opened):
        mark = in_flight(conn)
        if mark is None:
            continue
        waiting.append(conn)
        threading.Thread(
            target=cut_if_unanswered,
            args=(conn, partial(_answered, conn, mark)),
            name="aishell-stop",
            daemon=True,
        ).start()
    return waiting


def _answered(conn: Connection, mark: object, seconds: float) -> bool:
    """Waits up to seconds for the statement marked `mark` on conn to end; whether it did."""
    until = time.monotonic() + seconds
    while in_flight(conn) is mark:
        if time.monotonic() >= until:
            return False
        time.sleep(STOP_POLL_SECONDS)
    return True
