"""What a step's stored state means when its run resumes.

A resumed run starts from what the store holds: succeeded, denied and skipped steps are
kept as they are (a succeeded step's output feeds later steps as before); a step that
failed or was running when its process died is in doubt, and its tool looks for its
effect before anything runs it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy.exc import DBAPIError

from aishell.errors import AishellError
from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.covered import measure_subject, subject_changes
from aishell.executor.results import StepResult
from aishell.guard.connection import Guard
from aishell.plan.model import Plan, Step
from aishell.policy.rules import Verdict
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel
from aishell.tool.context import Implementation, ToolContext
from aishell.tool.locks import StepLocks
from aishell.units import exact, percent_up

# Step states a resumed run keeps as they are.
FINAL_STEP_STATES = ("succeeded", "denied", "skipped")
# Step states whose effect on the database is unknown after the run stopped.
IN_DOUBT_STATES = ("running", "interrupted", "failed")
# How a step in doubt ended, as the line that asks a person to decide says it.
_HOW_IT_ENDED = {"failed": "failed", "interrupted": "was interrupted"}
# Step states in which a yes on record still stands (see approved_before). Not
# waiting_approval: a step there waits for a person's new answer (a purge at its share
# limit, a step whose effect is unknown, a question left unanswered).
_APPROVAL_KEPT_STATES = (*IN_DOUBT_STATES, "deferred")
# How much more than it was approved for a step may find and still be covered: two
# estimates of one table differ a little, and on a table still being written rows keep
# passing the cutoff; anything beyond is a new fact that a person has to see.
_SLACK: dict[str, Callable[[float], float]] = {
    "rows": lambda rows: rows * 1.05 + 10,
    "share": lambda share: share + 0.02,
}
# Figures inside a reason ("22%", "1,000 rows", "30 days", "2.5s"): a number that
# begins a word, never digits inside a name (notes1, notes2_ibfk_1) or a quoted one,
# which are kept as they are (the first alternatives).
_FIGURES = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|\'(?:[^\']|\'\')*\'|(?<![\w$])\d[\d,.]*')


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


def approved_before(
    stored: Mapping[str, Any] | None, earlier: Mapping[str, Any] | None = None
) -> bool:
    """Approved in an earlier go of the run: asked again only if its verdict grew. A
    step approved (`earlier`: its last answer, a yes) that then began and was stopped
    midway (a signal, the time limit), failed (a lost connection, a lock timeout) or was
    held for the window is approved still: how its last go ended is no fact it was
    approved on, and a purge goes on from its last batch."""
    if stored is None:
        return False
    if stored["status"] == "approved":
        return True
    said_yes = earlier is not None and earlier.get("decision") == "approved"
    return said_yes and stored["status"] in _APPROVAL_KEPT_STATES


def verdict_facts(result: StepResult, verdict: Verdict) -> dict[str, Any]:
    """What an approval is given for: the verdict's risk and reasons, the rows and share
    of the table the step would delete, and what it acts on (its tables and their code),
    as measured now."""
    found = facts(verdict.risk.value, verdict.reasons, verdict.personal, result.estimate)
    found["sql"] = statements_shown(result.sql)
    # What the tool said it would do (the backups a cleanup deletes), which it holds to.
    found["effect"] = estimate_shown(result.estimate)
    found["locks"] = locks_shown(result.locks)
    if result.subject is not None:
        found["subject"] = result.subject
    return found


def waiting_facts(
    run: RunContext,
    result: StepResult,
    ctx: ToolContext,
    figures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a step that waits for a person without being asked by approve() is waiting
    with (a purge stopped at its limit, a step in doubt), as verdict_facts keeps it: its
    verdict as applied, the rows and share of its estimate (or `figures`, measured
    instead: what a stopped purge counted left), its statements, and what it acts on,
    measured now. A yes by number is given for these; where the measure fails the
    facts have no subject, and a resume asks again (outgrown)."""
    effect = {**(result.estimate or {}), **(figures or {})}
    found = facts(result.risk_level, result.reasons, result.personal, effect)
    found["sql"] = statements_shown(result.sql)
    found["effect"] = estimate_shown(result.estimate)
    found["locks"] = locks_shown(result.locks)
    try:
        result.subject = measure_subject(run, result, run.registry.get(result.tool), ctx)
    except (DBAPIError, AishellError):
        # A lost server, a table held past the lock wait, a read the guard refused:
        # unmeasured, so asked again.
        with suppress(DBAPIError):
            ctx.connection.rollback()
        return found
    found["subject"] = result.subject
    return found


def statements_shown(sql: Sequence[str]) -> list[str]:
    """The statements a step shows, each with its whitespace made single spaces; its
    comments (`-- a table left out`) say what it does not send, and are left out."""
    shown = (" ".join(each.split()) for each in sql)
    return [each for each in shown if each and not each.startswith("--")]


def locks_shown(locks: StepLocks | None) -> dict[str, Any] | None:
    """The locks a step's question shows, and each lock wait that bounds them in seconds
    by the setting it comes from: how long it may queue for a lock, holding up every
    session that queues behind it, is part of what a yes is given for."""
    if locks is None:
        return None
    waits: dict[str, float] = {}
    for amount, setting in locks.waits:
        number, _, unit = amount.partition(" ")
        waits[setting] = float(number) / (1000 if unit == "ms" else 1)
    return {"taken": list(locks.taken), "waits": waits}


def estimate_shown(estimate: Mapping[str, Any] | None) -> dict[str, Any]:
    """A step's estimate as a review keeps it: without its tables' sizes, which the
    approval's subject measures (and which a step over many tables has many of)."""
    return {k: v for k, v in (estimate or {}).items() if k != "tables"}


def reviewed_estimate(plan: Plan, step_id: str) -> dict[str, Any] | None:
    """What a saved plan's preview showed of a step's effect (empty where it showed none:
    a plan saved before previews kept it); None for a plan saved without a preview."""
    if "statements" not in plan.reviewed:
        return None
    estimates = plan.reviewed.get("estimates")
    shown = estimates.get(step_id) if isinstance(estimates, dict) else None
    return dict(shown) if isinstance(shown, dict) else {}


def facts(
    risk: str,
    reasons: Sequence[str],
    personal: Sequence[str],
    estimate: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The facts an approval covers (see outgrown): a risk, reasons, and the rows and
    share of its table the estimate finds the step would delete, and whether those rows
    were counted."""
    effect = estimate or {}
    going, total = effect.get("rows_this_run"), effect.get("table_rows")
    rows = share = None
    if isinstance(going, int) and isinstance(total, int) and total > 0:
        rows, share = going, round(going / total, 6)
    return {
        "risk": risk,
        "reasons": list(reasons),
        "personal": list(personal),
        "rows": rows,
        "share": share,
        # Rows counted, not estimated: a purge holds to them as it deletes (purge/share.py).
        "counted": rows is not None and effect.get("estimated") is False,
    }


def outgrown(approval: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """Why an earlier approval does not cover the step as it is judged now (empty: it
    does): none on record, not given by name for a step only a person may pass, or a
    verdict that grew (a higher risk, more rows, a larger share, a new reason)."""
    if approval is None or approval["decision"] != "approved":
        return ["no approval of it is on record"]
    grew = []
    if now["personal"] and not approval["named"]:
        grew.append(f"it needs its own approval ({now['personal'][0]})")
    then = approval.get("given_for")
    if isinstance(now.get("subject"), Mapping) and not isinstance(
        (then or {}).get("subject"), Mapping
    ):
        # Given for a step whose tables were never measured for it (the yes of a run
        # stored before every request kept them, or a measure that failed): it may be
        # any table now under those names, so it covers nothing.
        grew.append("what it acts on was not measured when it was approved")
    if not isinstance(then, Mapping):
        return grew
    if RiskLevel(now["risk"]).rank > RiskLevel(then.get("risk") or "safe").rank:
        grew.append(f"risk {then.get('risk')} -> {now['risk']}")
    for key, shown in (("rows", "{:,}".format), ("share", percent_up)):
        before, after = then.get(key), now[key]
        if after is not None and (before is None or after > _SLACK[key](before)):
            was = "unmeasured" if before is None else shown(before)
            grew.append(f"{key} {was} -> {shown(after)}")
    known = {reason_kind(r) for r in then.get("reasons") or []}
    grew += [f"a new reason: {r}" for r in now["reasons"] if reason_kind(r) not in known]
    grew += _statements_added(then.get("sql"), now.get("sql"))
    grew += locks_added(then.get("locks"), now.get("locks"))
    return grew + subject_changes(then.get("subject"), now.get("subject"))


def _statements_added(then: Any, now: Any) -> list[str]:
    """The statements the step would send now that were not shown when it was approved
    (a rebuild's list of indexes grows with the index found bloated or invalid since);
    fewer than shown is covered."""
    if not isinstance(then, list) or not isinstance(now, list):
        return []  # approved before the statements were kept
    shown = set(then)
    added = [each for each in now if each not in shown]
    return [f"a statement not shown when it was approved: {each[:120]}" for each in added]


def locks_added(then: Any, now: Any) -> list[str]:
    """A lock the step would take now that was not shown when it was approved, and a
    lock wait longer than shown (the target's lock_timeout_ms raised since); a shorter
    one is covered. An approval recorded before its locks were kept covers them."""
    if not isinstance(then, Mapping) or not isinstance(now, Mapping):
        return []
    shown = set(then.get("taken") or [])
    grew = [
        f"a lock not shown when it was approved: {each}"
        for each in now.get("taken") or []
        if each not in shown
    ]
    waited = then.get("waits") or {}
    for setting, seconds in (now.get("waits") or {}).items():
        was = waited.get(setting)
        if not isinstance(was, int | float) or seconds > was:
            before = "none" if not isinstance(was, int | float) else f"{exact(was)} s"
            grew.append(f"lock wait {exact(seconds)} s ({setting}), approved at {before}")
    return grew


def reason_kind(reason: str) -> str:
    """A reason without its figures: the same reason with other numbers is not new (the
    figures themselves are compared as rows and share)."""
    return _FIGURES.sub(lambda found: "#" if found[0][0].isdigit() else found[0], reason)


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
    with audited(run, ctx, result.index, 0, Guard(label=step.id, memory=run.guard_memory)):
        done = impl.check_done(params, ctx)
    run.record_event(result.index, "in_doubt", {"was": was, "effect_found": done})
    if done:
        result.output = {"recovered": True, "note": f"its effect was found after it {was}"}
        run.finish(result, "succeeded")
        return True
    if done is False or tool.idempotent:
        return True
    # What a yes to run it again is given for, as every question's is (outgrown).
    run.store.record_request(
        run.run_id, result.index, bool(result.personal), waiting_facts(run, result, ctx)
    )
    run.finish(
        result,
        "waiting_approval",
        error=(
            f"it {_HOW_IT_ENDED.get(was, 'was running when its process stopped')}, "
            f"its effect is unknown and {tool.name} is not idempotent; check the database, "
            f"then `aishell approve {run.run_id} --step {result.index}` to run it again, "
            "or --mark-done / --skip"
        ),
    )
    return False
