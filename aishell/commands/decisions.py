"""What a person decides about a run: approve, deny, mark done or skip the steps that
wait for them, or ask a running run to stop."""

from __future__ import annotations

from typing import Any

from aishell.config.models import Config
from aishell.config.selection import select_targets
from aishell.errors import UsageError
from aishell.executor import COMPLETED_WITH_DENIALS, DENIED
from aishell.policy.approvers import current_user
from aishell.policy.rules import named_approval_needed
from aishell.state.store import StateStore, signed_store
from aishell.terminal import printable

DECISIONS = {
    "approved": "aishell approve",
    "denied": "aishell deny",
    "succeeded": "aishell approve --mark-done",
    "skipped": "aishell approve --skip",
}


def decide_steps(
    config: Config,
    run_id: str,
    decision: str,
    step: int | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Decide on the steps of a run that wait for a person (all, or step N).

    approved: run it on resume; denied: never; succeeded (--mark-done): a person
    checked that its effect is there; skipped: leave it out. The last two need a
    step and a reason.
    """
    if decision not in DECISIONS:
        raise UsageError(
            f"Unknown decision {printable(repr(decision[:80]))}; decisions are: "
            f"{', '.join(DECISIONS)}"
        )
    how = DECISIONS[decision]
    if decision in ("succeeded", "skipped") and (step is None or not reason):
        raise UsageError(f"`{how}` needs --step N and --reason")
    with signed_store(config) as store:
        run = store.get_run(run_id)
        asked = {
            s["index"]: store.last_request(run["run_id"], s["index"])
            for s in run["steps"]
            if s["status"] == "waiting_approval"
        }
        waiting, held = _steps_to_decide(run, decision, step, asked)
        user = current_user()
        why = reason or f"{decision} with `{how}`"
        for s in waiting:
            _record(store, run["run_id"], s["index"], decision, how, why, step, asked)
        status = run["status"]
        if decision == "denied" and step is None and not held:
            status = _end_denied(store, run, user, why)
        return {
            "run_id": run["run_id"],
            "run_status": status,
            "decision": decision,
            "steps": [{"index": s["index"], "tool": s["tool"]} for s in waiting],
            "still_waiting": [
                {"index": s["index"], "tool": s["tool"], "why": "needs its own approval"}
                for s in held
            ],
            "decided_by": user,
            "reason": why,
        }


def list_approvals(config: Config, targets: str | None = None) -> list[dict[str, Any]]:
    """The steps waiting for a person's approval, oldest run first: of the targets the
    selector `targets` picks (config/selection.py), else of every run in the store."""
    names = None if targets is None else select_targets(config, targets)
    # A list checks no signature: `aishell approve` does, before it decides.
    with StateStore(config.state_url) as store:
        return store.waiting_approvals(names)


def _record(
    store: StateStore,
    run_id: str,
    index: int,
    decision: str,
    how: str,
    why: str,
    step: int | None,
    asked: dict[int, dict[str, Any] | None],
) -> None:
    """One step's decision, and the status it gives the step."""
    user = current_user()
    request = asked.get(index)
    store.record_approval(
        run_id,
        index,
        decision,
        user,
        how,
        why,
        # Given by its number: a person's yes for that very step.
        named=step is not None,
        # The verdict the step waits with: resume compares today's with it.
        given_for=request["given_for"] if request else None,
    )
    if decision == "succeeded":
        output = {"marked_done_by": user, "reason": why}
        store.step_finished(run_id, index, "succeeded", output=output)
    else:
        error = None if decision == "approved" else why
        store.set_step_status(run_id, index, decision, error)


def _end_denied(store: StateStore, run: dict[str, Any], user: str, why: str) -> str:
    """`aishell deny RUN_ID` ends the run: what had not run never will (each step left
    says so), and the run is denied, with no `resume` needed to find that out. A step
    denied by its number leaves the run to `resume`, which runs what does not need it."""
    error = f"denied by {user} with `aishell deny`: {why}"
    for left in run["steps"]:
        if left["status"] in ("pending", "deferred"):
            store.set_step_status(run["run_id"], left["index"], "skipped", "not run: " + error)
    # As a run that went on past its denials would end (executor.results.outcome).
    changed = any(s["status"] == "succeeded" and s["risk_level"] != "safe" for s in run["steps"])
    status = COMPLETED_WITH_DENIALS if changed else DENIED
    store.finish_run(run["run_id"], status, error)
    return status


def _steps_to_decide(
    run: dict[str, Any],
    decision: str,
    step: int | None,
    asked: dict[int, dict[str, Any] | None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The waiting steps this decision covers, and those it leaves waiting: a step only a
    person may pass is approved by its number, never in a batch."""
    waiting = [s for s in run["steps"] if s["status"] == "waiting_approval"]
    if step is not None:
        chosen = [s for s in run["steps"] if s["index"] == step]
        if not chosen:
            raise UsageError(f"Run {run['run_id']} has no step {step}")
        if chosen[0]["status"] != "waiting_approval":
            listed = ", ".join(str(s["index"]) for s in waiting) or "none"
            raise UsageError(
                f"Step {step} of run {run['run_id']} is {chosen[0]['status']}, not waiting "
                f"for approval (waiting: {listed})"
            )
        waiting = chosen
    if not waiting:
        raise UsageError(f"Run {run['run_id']} has no step waiting for approval")
    if decision != "approved" or step is not None:
        return waiting, []
    named = _named_approval_needed(run, asked)
    held = [s for s in waiting if s["index"] in named]
    waiting = [s for s in waiting if s["index"] not in named]
    if not waiting:
        first = held[0]["index"]
        raise UsageError(
            f"Step {first} of run {run['run_id']} needs its own approval: "
            f"{named_approval_needed(named[first])}: "
            f"`aishell approve {run['run_id']} --step {first}`"
        )
    return waiting, held


def _named_approval_needed(
    run: dict[str, Any], asked: dict[int, dict[str, Any] | None]
) -> dict[int, list[str]]:
    """The steps of a run the policy said only a person may pass, with the reasons: by
    the signed request written before each question (it holds however the prompt
    ended), and by the events of runs stored before requests were kept."""
    named = {
        e["step_index"]: list(e["data"].get("reasons") or [])
        for e in run.get("events") or []
        if e["kind"] == "named_approval_needed" and e["step_index"] is not None
    }
    for index, request in asked.items():
        if request is not None and request["named"]:
            named[index] = list(request["given_for"].get("personal") or []) or ["named"]
    return named


def stop_run(config: Config, run_id: str) -> dict[str, Any]:
    """Ask a running run to stop after its current statement or batch, resumably."""
    with StateStore(config.state_url) as store:
        run = store.get_run(run_id)
        if run["status"] != "running":
            raise UsageError(f"Run {run['run_id']} is {run['status']}, not running")
        user = current_user()
        store.request_stop(run["run_id"], user)
        return {"run_id": run["run_id"], "requested_by": user}
