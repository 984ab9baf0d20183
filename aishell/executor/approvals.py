"""Asking for a step's approval, and what each answer does to the step and the run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.executor.asked import figures_when_asked
from aishell.executor.context import RunContext
from aishell.executor.results import StepResult
from aishell.executor.resume import approved_before, outgrown, verdict_facts
from aishell.executor.statuses import ABORTED
from aishell.executor.stopping import Stop
from aishell.plan.model import Step
from aishell.policy.approvers import Answer, ApprovalRequest, Decision
from aishell.policy.rules import Verdict
from aishell.registry import ToolDefinition
from aishell.tool.context import ToolContext


def approve(
    run: RunContext,
    step: Step,
    result: StepResult,
    tool: ToolDefinition,
    verdict: Verdict,
    stored: Mapping[str, Any] | None,
    ctx: ToolContext | None = None,
) -> Decision:
    """Ask the approver, unless an approval from an earlier go of the run still covers
    the step as judged now; the answer is recorded, and a deny, defer or quit ends it.

    The request (the verdict shown, and whether only a named approval may cover it) is
    committed before the question, so it holds however the prompt ends. Given the step's
    context, the figures the question shows are read as it is asked (asked.py)."""
    facts = verdict_facts(result, verdict)
    grew: list[str] = []
    earlier = run.store.last_approval(run.run_id, result.index) if stored else None
    if approved_before(stored, earlier):
        grew = outgrown(earlier, facts)
        if not grew and earlier is not None:
            result.approval = _shown(earlier["decision"], earlier)
            result.answered_now = False
            return Decision.APPROVE
        run.record_event(result.index, "approval_outgrown", {"grew": grew})
    run.store.record_request(run.run_id, result.index, bool(result.personal), facts)
    estimate = figures_when_asked(run, result, ctx) if ctx is not None else result.estimate
    with run.stopping.asking():
        answer = run.approver.decide(_request(run, step, result, tool, estimate or {}))
    decided = {"decided_by": answer.decided_by, "how": answer.how, "reason": answer.reason}
    run.store.record_approval(
        run.run_id,
        result.index,
        answer.decision.value,
        answer.decided_by,
        answer.how,
        answer.reason,
        # Only an answer at the prompt about this very step names it ("all" does not).
        named=answer.how == "prompt",
        given_for=facts,
    )
    result.approval = _shown(answer.decision.value, decided)
    result.answered_now = answer.waited
    _settle(run, step, result, answer, grew)
    return answer.decision


def _settle(
    run: RunContext, step: Step, result: StepResult, answer: Answer, grew: list[str]
) -> None:
    """What the answer does to the step, and to the run."""
    if answer.decision is Decision.DENY:
        run.finish(result, "denied", error=f"denied by {answer.decided_by}: {answer.reason}")
    elif answer.decision is Decision.DEFER:
        if result.personal:
            # `aishell approve RUN` alone will not cover it; the store says why.
            run.record_event(result.index, "named_approval_needed", {"reasons": result.personal})
        why = list(result.reasons)
        if grew:
            why.insert(0, "its earlier approval no longer covers it: " + ", ".join(grew))
        run.finish(result, "waiting_approval", error="; ".join(why))
    elif answer.decision is Decision.STOP:
        run.finish(result, "waiting_approval", error=f"not answered: {answer.reason}")
        raise Stop(
            ABORTED,
            f"no answer at {step.id} ({answer.reason}); `aishell resume {run.run_id}` asks again",
        )
    elif answer.decision is Decision.QUIT:
        run.finish(result, "denied", error=f"run stopped by {answer.decided_by}")
        raise Stop(ABORTED, f"stopped by {answer.decided_by} at {step.id}")


def _shown(decision: str, decided: Mapping[str, Any]) -> dict[str, str]:
    return {
        "decision": decision,
        "by": decided["decided_by"],
        "how": decided["how"],
        "reason": decided["reason"],
    }


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
    run: RunContext,
    step: Step,
    result: StepResult,
    tool: ToolDefinition,
    estimate: dict[str, Any],
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
        locks=result.locks,
        estimate=estimate,
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
