"""One step of a run, by its rules in order: what it waits for, its preparation, a dry
run's preview, the maintenance window, the resume rule, approval, then its tool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from aishell.config.kinds import Category
from aishell.executor.approvals import approve, notify
from aishell.executor.attempts import run_tool
from aishell.executor.context import RunContext
from aishell.executor.covered import measure_subject
from aishell.executor.prepare import (
    PreparedStep,
    apply_verdict,
    prepare,
    preview_offline,
    settle_dependencies,
)
from aishell.executor.results import StepResult
from aishell.executor.resume import (
    may_run_again,
    outgrown,
    reviewed_estimate,
    verdict_facts,
)
from aishell.executor.statuses import FAILED
from aishell.executor.stopping import Stop
from aishell.plan.model import Step
from aishell.plan.references import find_references
from aishell.policy.approvers import Decision
from aishell.policy.rules import Confirmation
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel
from aishell.tool.context import ToolContext


def run_step(
    run: RunContext,
    step: Step,
    result: StepResult,
    outputs: Mapping[str, Any],
    waiting: set[str],
    ctx: ToolContext,
    stored: Mapping[str, Any] | None,
) -> None:
    """Take the step as far as it goes now; `waiting` collects the steps left for later
    (and those that need them), `stored` is its state from an earlier go of the run."""
    prepared = ready_step(run, step, result, outputs, waiting, ctx, stored)
    if prepared is not None:
        tool_step(run, step, result, prepared, ctx, waiting)


def ready_step(
    run: RunContext,
    step: Step,
    result: StepResult,
    outputs: Mapping[str, Any],
    waiting: set[str],
    ctx: ToolContext,
    stored: Mapping[str, Any] | None,
) -> PreparedStep | None:
    """Every rule of the step before its tool runs; the step ready for its tool, or
    None when it ended or waits before that (a parallel group readies its steps one
    by one, then runs their tools at once: executor/parallel.py)."""
    tool = run.registry.get(step.tool)
    impl = tool.implementation(run.target.dialect)
    _fresh_context(run, result, ctx)
    needed = [r.step_id for r in find_references([step.params, step.condition])]
    needed += list(step.depends_on)
    earlier = run.earlier(result.index)
    absent = settle_dependencies(run, step, result, needed, earlier, waiting)
    if absent is None:
        return None
    unresolved = [d for d in needed if d not in outputs and d not in absent and d in earlier]
    if run.dry_run and unresolved:
        # Earlier steps were only previewed, so their outputs do not exist yet.
        preview_offline(run, result, step, impl, ctx, (outputs, absent), frozenset(unresolved))
        return None
    prepared = prepare(run, step, result, tool, impl, outputs, absent, ctx)
    if prepared is None:
        return None
    verdict = prepared.verdict
    apply_verdict(result, verdict)

    if run.dry_run:
        if _runs_in_dry_run(tool):
            return prepared
        run.finish(result, "previewed")
        return None

    if verdict.defer:
        waiting.add(step.id)
        run.finish(result, "deferred", error=verdict.defer)
        return None
    if not may_run_again(run, step, result, tool, impl, prepared.params, ctx, stored):
        waiting.add(step.id)
        return None
    if result.status == "succeeded":  # its effect was found: it ran before the crash
        return None
    if verdict.requires_approval:
        again = partial(prepare, run, step, result, tool, impl, outputs, absent, ctx)
        return _approved(run, step, result, prepared, ctx, stored, waiting, again)
    if verdict.confirmation is Confirmation.NOTIFY:
        notify(run, result, tool, prepared.params)
    return prepared


# A person may answer minutes after the question, while the table is written or the
# window closes: the step is measured and judged again after a yes at the prompt, and
# asked about again when what it acts on grew meanwhile, at most this many times.
_ASKED_AT_MOST = 3


def _approved(
    run: RunContext,
    step: Step,
    result: StepResult,
    prepared: PreparedStep,
    ctx: ToolContext,
    stored: Mapping[str, Any] | None,
    waiting: set[str],
    measure: Callable[[], PreparedStep | None],
) -> PreparedStep | None:
    """The step as approved now, or None when it does not run now (denied, deferred,
    waiting, or skipped on its second measure)."""
    for _ in range(_ASKED_AT_MOST):
        result.subject = measure_subject(run, result, prepared.tool, ctx)
        decision = approve(run, step, result, prepared.tool, prepared.verdict, stored, ctx)
        if decision is Decision.DEFER:
            waiting.add(step.id)
        if decision is not Decision.APPROVE:
            return None
        if not result.answered_now:
            return prepared  # given before the question (a flag, an earlier approval)
        ctx.step_cache = {}
        again = measure()
        if again is None:
            return None
        apply_verdict(result, again.verdict)
        if again.verdict.defer:
            waiting.add(step.id)
            run.finish(result, "deferred", error=again.verdict.defer)
            return None
        result.subject = measure_subject(run, result, again.tool, ctx)
        given = run.store.last_approval(run.run_id, result.index)
        grew = outgrown(given, verdict_facts(result, again.verdict))
        if not again.verdict.requires_approval or not grew:
            return again
        run.record_event(result.index, "approval_outgrown", {"grew": grew, "while": "asked"})
        result.reasons.insert(0, "changed while the question waited: " + ", ".join(grew))
        prepared, stored = again, None
    waiting.add(step.id)
    run.finish(
        result,
        "waiting_approval",
        error="what it acts on kept changing while it was asked about; `aishell resume "
        f"{run.run_id}` asks again",
    )
    return None


def tool_step(
    run: RunContext,
    step: Step,
    result: StepResult,
    prepared: PreparedStep,
    ctx: ToolContext,
    waiting: set[str],
) -> None:
    """The step's tool, readied by ready_step, and what its end means for the run."""
    run_tool(run, result, prepared, ctx)
    if not run.dry_run:
        _after_tool(step, result, prepared.tool, waiting)


def _after_tool(step: Step, result: StepResult, tool: ToolDefinition, waiting: set[str]) -> None:
    """A step stopped at a limit only a person passes waits; a failed one stops the run."""
    if result.status == "waiting_approval":
        waiting.add(step.id)
    elif result.status == "failed":
        raise Stop(FAILED, f"{step.id} ({tool.name}) failed: {result.error}")


def _fresh_context(run: RunContext, result: StepResult, ctx: ToolContext) -> None:
    """The step's own cache, its first attempt, and where an earlier go of it got to (a
    purge stopped at its limit: its estimate says so before anyone is asked)."""
    ctx.step_cache = {}
    ctx.attempt = 1
    ctx.load_progress = lambda: run.store.get_progress(run.run_id, result.index)
    ctx.reviewed_estimate = reviewed_estimate(run.plan, result.step_id)
    # A dry run only previews what its earlier steps make (a backup a cleanup counts).
    before = run.plan.steps[: result.index] if run.dry_run else ()
    ctx.previewed_before = tuple((s.tool, s.params) for s in before)
    # Before the step is rendered: a purge held to it shows the count it reads for it.
    ctx.max_share = run.max_share(result.tool)


def _runs_in_dry_run(tool: ToolDefinition) -> bool:
    return tool.risk_level is RiskLevel.SAFE and tool.category is Category.ANALYSIS
