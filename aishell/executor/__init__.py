"""The step loop: policy, approval, substitution, execution with a deadline, checkpoint.

By subject: loop (Executor: the step loop), step (one step's rules in order), parallel
(a parallel group's read-only steps at once, each on its own connection), prepare
(what a step waits for, its parameters, SQL and verdict), attempts (running the tool),
retry (retries and reconnecting), resume (what a stored step state means on resume),
stopping (signals, the run's time limit, `aishell stop`, a lost run lock), requested
(`aishell stop` reaching a statement gone silent), planninglimit (the time limit over
planning), approvals, audit (the guard and the statement log), effects (the backup
catalog), estimates, statuses (how a run ends), results (StepResult, RunResult, the
run's outcome).

Each name's module is imported when the name is first used (aishell.lazy): the run
statuses a command line lists cost no import of the step loop.
"""

from typing import TYPE_CHECKING

from aishell.lazy import exports

__all__ = [
    "ABORTED",
    "COMPLETED",
    "COMPLETED_WITH_DENIALS",
    "DENIED",
    "FAILED",
    "FINAL_STEP_STATES",
    "FINISHED",
    "INTERRUPTED",
    "OUT_OF_WINDOW",
    "RUN_STATUSES",
    "WAITING_APPROVAL",
    "Executor",
    "Observer",
    "RunResult",
    "StepResult",
    "estimate_effect",
    "subject",
]

if TYPE_CHECKING:
    from aishell.executor.estimates import estimate_effect, subject
    from aishell.executor.loop import Executor
    from aishell.executor.results import Observer, RunResult, StepResult
    from aishell.executor.resume import FINAL_STEP_STATES
    from aishell.executor.statuses import (
        ABORTED,
        COMPLETED,
        COMPLETED_WITH_DENIALS,
        DENIED,
        FAILED,
        FINISHED,
        INTERRUPTED,
        OUT_OF_WINDOW,
        RUN_STATUSES,
        WAITING_APPROVAL,
    )
else:
    __getattr__, __dir__ = exports(
        __name__,
        __all__,
        {
            "aishell.executor.estimates": ("estimate_effect", "subject"),
            "aishell.executor.loop": ("Executor",),
            "aishell.executor.results": ("Observer", "RunResult", "StepResult"),
            "aishell.executor.statuses": (
                "ABORTED",
                "COMPLETED",
                "COMPLETED_WITH_DENIALS",
                "DENIED",
                "FAILED",
                "FINISHED",
                "INTERRUPTED",
                "OUT_OF_WINDOW",
                "RUN_STATUSES",
                "WAITING_APPROVAL",
            ),
            "aishell.executor.resume": ("FINAL_STEP_STATES",),
        },
    )
