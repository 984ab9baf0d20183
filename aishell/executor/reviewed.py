"""What a saved plan's preview showed of each step (`reviewed`: its statements, its
risk, reasons and lock waits), which `aishell apply` holds the step to: a step that
would now do more than was shown needs a person's yes to that very step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from aishell.executor.resume import locks_added, locks_shown, reason_kind, statements_shown
from aishell.plan.model import Plan
from aishell.policy.rules import Confirmation, Verdict
from aishell.risk import RiskLevel
from aishell.tool.locks import StepLocks


def not_shown(
    plan: Plan,
    step_id: str,
    shown: tuple[Sequence[str], StepLocks | None],
    writes: bool,
    verdict: Verdict,
) -> Verdict:
    """A saved plan's step (`apply`) that would now do more than its preview showed when
    the plan was saved: a statement it did not show (a rebuild found nothing to do then,
    a table bloated since), a higher risk or a new reason (a trigger, a cascade added
    since), a longer lock wait (the target's raised since). The yes given for the plan
    was for what was shown: this needs a person's yes to this very step, naming what is
    new. `shown`: the step's statements and locks as it would run now."""
    if not writes:
        return verdict
    sql, locks = shown
    new = _statements_not_shown(plan, step_id, sql) + _judged_higher(plan, step_id, verdict)
    new += _locks_not_shown(plan, step_id, locks)
    if not new:
        return verdict
    needs = verdict.confirmation if verdict.requires_approval else Confirmation.CONFIRM
    return replace(
        verdict,
        confirmation=needs,
        reasons=(*verdict.reasons, *new),
        personal=(*verdict.personal, *new),
    )


def _statements_not_shown(plan: Plan, step_id: str, sql: Sequence[str]) -> list[str]:
    reviewed = plan.reviewed.get("statements")
    shown = reviewed.get(step_id) if isinstance(reviewed, dict) else None
    if not isinstance(shown, list):
        return []
    added = [each for each in statements_shown(sql) if each not in set(shown)]
    return [f"a statement the saved plan did not show: {added[0][:120]}"] if added else []


def _judged_higher(plan: Plan, step_id: str, verdict: Verdict) -> list[str]:
    """The step's risk above, and its reasons besides, those the saved plan showed."""
    judged = plan.reviewed.get("judged")
    then = judged.get(step_id) if isinstance(judged, dict) else None
    if not isinstance(then, dict):
        return []  # a plan saved before its steps' judgements were kept
    found: list[str] = []
    risk = then.get("risk")
    if risk in set(RiskLevel) and verdict.risk.rank > RiskLevel(risk).rank:
        found.append(f"judged {verdict.risk} now; the saved plan showed it {risk}")
    known = {reason_kind(r) for r in then.get("reasons") or [] if isinstance(r, str)}
    found += [
        f"a reason the saved plan did not show: {r}"
        for r in verdict.reasons
        if reason_kind(r) not in known
    ]
    return found


def _locks_not_shown(plan: Plan, step_id: str, locks: StepLocks | None) -> list[str]:
    judged = plan.reviewed.get("judged")
    then = judged.get(step_id) if isinstance(judged, dict) else None
    if not isinstance(then, dict):
        return []
    return [
        f"the saved plan did not show {each}"
        for each in locks_added(then.get("locks"), locks_shown(locks))
    ]
