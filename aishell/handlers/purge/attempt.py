"""One run of a purge step across the reconnects within it: its clock, its deadline, the
figures it reports, and how it stops resumably, naming where its checkpoint stands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aishell.errors import StepFailed
from aishell.tool.context import ToolContext
from aishell.units import took


@dataclass
class Attempt:
    """One run of the step, across the reconnects within it: its clock, its deadline and
    the figures it reports."""

    started: float
    deadline: float | None
    deadline_reason: str | None
    resumed: bool
    size: int
    # How far ahead the read for a batch's first old row looks (batches.py).
    stretch: int
    durations: list[float] = field(default_factory=list)
    throttled_seconds: float = 0.0
    deleted_here: int = 0
    reconnects: int = 0
    # Connections lost since the last batch committed: a server that drops every new
    # session is not reconnected to for ever.
    lost_in_a_row: int = 0


# A walk ends this long before the step's time limit (the agent's max_execution_time):
# room for its last checkpoint and output, so that the step ends by itself, succeeded,
# rather than being cut there and failed, its batches done all the same.
STEP_LIMIT_ROOM_SECONDS = 1.0


def deadline_of(
    params: Mapping[str, Any], ctx: ToolContext, started: float
) -> tuple[float | None, str | None]:
    """The earliest of the step's run time, the maintenance window's end and the step's
    time limit, and why. The time limit cancels only a statement in flight: a walk that
    did not hold to it went on through its pauses and throttle waits, unbounded."""
    deadlines: list[tuple[float, str]] = []
    if ctx.deadline is not None:
        deadlines.append(
            (
                ctx.deadline - STEP_LIMIT_ROOM_SECONDS,
                "close to the step's time limit (max_execution_time)",
            )
        )
    if params.get("run_time_seconds"):
        seconds = float(params["run_time_seconds"])
        deadlines.append((started + seconds, f"run time ({took(seconds, None)}) used up"))
    if ctx.ends_at is not None and ctx.seconds_left is not None:
        deadlines.append(
            (started + ctx.seconds_left, f"maintenance window closes at {ctx.ends_at:%H:%M %Z}")
        )
    if not deadlines:
        return None, None
    return min(deadlines)


def stopped_resumably(ctx: ToolContext, why: str, hint: str) -> StepFailed:
    """The step's failure, one line: why, where the checkpoint stands, how to go on."""
    progress = ctx.load_progress() or {}
    batches, rows = int(progress.get("batches", 0)), int(progress.get("rows_deleted", 0))
    # A batch checkpointed but not known to have committed: the resume looks.
    doubt = " (and one batch in doubt, which the resume checks)" if progress.get("pending") else ""
    return StepFailed(
        f"{why}; stopped after {batches} batches and {rows:,} rows{doubt}, checkpointed: "
        f"`aishell resume {ctx.run_id}` goes on from there ({hint})",
        {"rows_deleted": rows, "batches": batches, "resumable": True},
    )


def first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text_ = str(inner).strip()
    return text_.splitlines()[0] if text_ else type(inner).__name__
