"""Asking for a step's approval, and what each answer does to the step and the run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.approval import ApprovalRequest, Decision
from aishell.executor.context import RunContext
from aishell.executor.results import ABORTED, StepResult
from aishell.executor.stopping import Stop
from aishell.plan import Step
from aishell.registry import ToolDefinition


def approve(run: RunContext, step: Step, result: StepResult, tool: ToolDefinition) -> Decision:
    """Ask the approver; the answer is recorded, and a deny, defer or quit ends the step."""
    answer = run.approver.decide(_request(run, step, result, tool))
    run.store.record_approval(
        run.run_id,
        result.index,
        answer.decision.value,
        answer.decided_by,
        answer.how,
        answer.reason,
    )
    result.approval = {
        "decision": answer.decision.value,
        "by": answer.decided_by,
        "how": answer.how,
        "reason": answer.reason,
    }
    if answer.decision is Decision.DENY:
        run.finish(result, "denied", error=f"denied by {answer.decided_by}: {answer.reason}")
    elif answer.decision is Decision.DEFER:
        if result.personal:
            # `aishell approve RUN` alone will not cover it; the store says why.
            run.record_event(result.index, "named_approval_needed", {"reasons": result.personal})
        run.finish(result, "waiting_approval", error="; ".join(result.reasons))
    elif answer.decision is Decision.STOP:
        run.finish(result, "waiting_approval", error=f"not answered: {answer.reason}")
        raise Stop(
            ABORTED,
            f"no answer at {step.id} ({answer.reason}); `aishell resume {run.run_id}` asks again",
        )
    elif answer.decision is Decision.QUIT:
        run.finish(result, "denied", error=f"run stopped by {answer.decided_by}")
        raise Stop(ABORTED, f"stopped by {answer.decided_by} at {step.id}")
    return answer.decision


def notify(
    run: RunContext, result: StepResult, tool: ToolDefinition, params: dict[str, Any]
) -> None:
    """A step that needs no approval but is worth a note in the run's log (with the
    step's start or end: a note is no reason for a commit of its own)."""
    run.store.queue_event(
        run.run_id,
        result.index,
        "notify",
        {"tool": tool.name, "risk_level": tool.risk_level.value, "params": params},
    )


def _request(
    run: RunContext, step: Step, result: StepResult, tool: ToolDefinition
) -> ApprovalRequest:
    """All an approver is shown: the step, its SQL, its risk and the whole plan."""
    return ApprovalRequest(
        run_id=run.run_id,
        target=run.target.name,
        environment=run.target.config.environment,
        step_index=result.index,
        step_id=step.id,
        tool=tool.name,
        description=tool.description,
        params=result.params,
        sql=result.sql,
        risk=result.risk_level,
        confirmation=result.confirmation,
        reasons=tuple(result.reasons),
        risks=tool.risks_on(run.target.dialect),
        mitigations=tuple(result.mitigations),
        personal=tuple(result.personal),
        estimate=result.estimate or {},
        rationale=step.rationale,
        plan=tuple(
            (s.id, s.tool, _subject_of(s.params), run.registry.get(s.tool).risk_level.value)
            for s in run.plan.steps
        ),
    )


def _subject_of(params: Mapping[str, Any]) -> str:
    table = params.get("table")
    if isinstance(table, str):
        return table
    tables = params.get("tables")
    return ", ".join(tables) if isinstance(tables, list) else str(tables or "")
