"""The statuses a run ends in, and which of them are final: plain names, so that the
command line lists them without loading the step loop."""

from __future__ import annotations

# Run outcomes.
COMPLETED = "completed"
COMPLETED_WITH_DENIALS = "completed_with_denials"
DENIED = "denied"
FAILED = "failed"
WAITING_APPROVAL = "waiting_approval"
OUT_OF_WINDOW = "out_of_window"
ABORTED = "aborted"
INTERRUPTED = "interrupted"
# A run in one of these is over: `aishell resume` takes none of them (commands/runs.py).
FINISHED = (COMPLETED, COMPLETED_WITH_DENIALS, DENIED)
RUN_STATUSES = (
    "running",
    COMPLETED,
    COMPLETED_WITH_DENIALS,
    DENIED,
    FAILED,
    WAITING_APPROVAL,
    OUT_OF_WINDOW,
    ABORTED,
    INTERRUPTED,
)
