"""The throttle a purge obeys between batches: the target's running queries and its
replicas' lag, waited out for at most max_throttle_wait_seconds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aishell.errors import TargetError
from aishell.handlers.purge.throttle import Throttle
from aishell.tool.context import ToolContext

THROTTLE_CHECK_SECONDS = 1.0
THROTTLE_WAIT_SECONDS = 1.0
# How often a pause looks whether the run was asked to stop.
STOP_LOOK_SECONDS = 0.25
# Default of max_throttle_wait_seconds (the tool's schema and the agent's config say the
# same).
MAX_THROTTLE_WAIT = 1800.0


def make_throttle(params: Mapping[str, Any], ctx: ToolContext) -> Throttle:
    replicas = []
    for name in params.get("replicas") or []:
        if ctx.open_target is None:
            raise TargetError(f"replica {name}: other targets cannot be opened here")
        replicas.append((name, ctx.open_target(name)))
    return Throttle(
        ctx.connection,
        max_running=params.get("max_running_queries"),
        max_replica_lag_seconds=params.get("max_replica_lag_seconds"),
        replicas=replicas,
        max_wait_seconds=float(params.get("max_throttle_wait_seconds", MAX_THROTTLE_WAIT)),
    )


def until_deadline(seconds: float, deadline: float | None) -> float:
    """A pause of `seconds`, cut at the deadline (time.monotonic()): a pause that went
    past it would pass the step's time limit too (attempt.deadline_of)."""
    if deadline is None:
        return seconds
    return max(0.0, min(seconds, deadline - time.monotonic()))


def rest(ctx: ToolContext, seconds: float, deadline: float | None) -> None:
    """Pause `seconds` (cut at the deadline), ended early by a stop: a pause between
    batches may be an hour (sleep_ms), and `aishell stop` or the run's time limit must
    not wait it out."""
    ends = time.monotonic() + until_deadline(seconds, deadline)
    while not ctx.should_stop():
        left = ends - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, STOP_LOOK_SECONDS))


def wait_while_busy(
    ctx: ToolContext, throttle: Throttle, deadline: float | None
) -> tuple[float, bool, str | None]:
    """Wait while the server is busy, at most the throttle's longest wait. Returns the
    seconds waited, whether to stop (asked to, or the deadline came), and the reason
    the server was still busy when the longest wait ran out (None if it did not)."""
    reason = throttle.busy()
    ctx.connection.commit()
    if reason is None:
        return 0.0, False, None
    ctx.record_event("throttled", {"reason": reason})
    began = time.monotonic()
    while reason is not None:
        ctx.report({"throttled": reason})
        waited = time.monotonic() - began
        if ctx.should_stop() or (deadline is not None and time.monotonic() >= deadline):
            return waited, True, None
        if waited >= throttle.max_wait_seconds:
            ctx.record_event(
                "throttle_gave_up", {"reason": reason, "waited_seconds": round(waited, 1)}
            )
            return waited, False, reason
        pause = min(THROTTLE_WAIT_SECONDS, throttle.max_wait_seconds - waited)
        rest(ctx, pause, deadline)
        reason = throttle.busy()
        ctx.connection.commit()
    waited = time.monotonic() - began
    ctx.record_event("throttle_released", {"waited_seconds": round(waited, 1)})
    ctx.report({"throttled": None})
    return waited, False, None
