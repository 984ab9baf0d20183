"""What a step's stored state means when its run resumes.

A resumed run starts from what the store holds: succeeded, denied and skipped steps are
kept as they are (a succeeded step's output feeds later steps as before); a step that
failed or was running when its process died is in doubt, and its tool looks for its
effect before anything runs it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.results import StepResult
from aishell.guard import Guard
from aishell.plan import Step
from aishell.registry import Implementation, ToolContext, ToolDefinition

# Step states a resumed run keeps as they are.
FINAL_STEP_STATES = ("succeeded", "denied", "skipped")
# Step states whose effect on the database is unknown after the run stopped.
IN_DOUBT_STATES = ("running", "interrupted", "failed")


def is_final(stored: Mapping[str, Any]) -> bool:
    """Kept as it is: never run again."""
    return stored["status"] in FINAL_STEP_STATES


def restore(result: StepResult, stored: Mapping[str, Any]) -> None:
    result.status = stored["status"]
    result.output = stored["output"]
    result.error = stored["error"]
    result.params = stored["params"]
    result.sql = stored["sql"] or []
    result.attempts = stored["attempts"]


def approved_before(stored: Mapping[str, Any] | None) -> bool:
    """Approved in an earlier go of the run: it is not asked again."""
    return stored is not None and stored["status"] == "approved"


def may_run_again(
    run: RunContext,
    step: Step,
    result: StepResult,
    tool: ToolDefinition,
    impl: Implementation,
    params: dict[str, Any],
    ctx: ToolContext,
    stored: Mapping[str, Any] | None,
) -> bool:
    """Whether the step may go on to run; False when a person has to decide first.

    A step that failed, or was running when its process died, is in doubt: the server
    may have committed its work after the client died, so the tool looks for its effect
    first. A step whose effect is found ends succeeded here (the caller sees it)."""
    if stored is None or stored["status"] not in IN_DOUBT_STATES:
        return True
    was = stored["status"]
    with audited(
        run, ctx.connection, result.index, 0, Guard(label=step.id, memory=run.guard_memory)
    ):
        done = impl.check_done(params, ctx)
    run.record_event(result.index, "in_doubt", {"was": was, "effect_found": done})
    if done:
        result.output = {"recovered": True, "note": f"its effect was found after it {was}"}
        run.finish(result, "succeeded")
        return True
    if done is False or tool.idempotent:
        return True
    run.finish(
        result,
        "waiting_approval",
        error=(
            f"it {'was running when its process stopped' if was != 'failed' else 'failed'}, "
            f"its effect is unknown and {tool.name} is not idempotent; check the database, "
            f"then `aishell approve {run.run_id} --step {result.index}` to run it again, "
            "or --mark-done / --skip"
        ),
    )
    return False
