"""What a run and its steps come to: their statuses, their results, the run's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aishell.executor.statuses import (
    COMPLETED,
    COMPLETED_WITH_DENIALS,
    DENIED,
    FAILED,
    OUT_OF_WINDOW,
    WAITING_APPROVAL,
)
from aishell.tool.locks import StepLocks

if TYPE_CHECKING:
    # Only annotations name it: --help, which lists the run statuses, does not build it.
    class Judged(Protocol):
        """A step as the policy judged it, previewed or run."""

        @property
        def index(self) -> int: ...
        @property
        def step_id(self) -> str: ...
        @property
        def tool(self) -> str: ...
        @property
        def risk_level(self) -> str: ...
        @property
        def requires_approval(self) -> bool: ...
        @property
        def confirmation(self) -> str: ...
        @property
        def reasons(self) -> Sequence[str]: ...
        @property
        def personal(self) -> Sequence[str]: ...
        @property
        def mitigations(self) -> Sequence[str]: ...


def named(step: Judged) -> dict[str, Any]:
    """Which step it is, as --json writes it first."""
    return {"index": step.index, "step_id": step.step_id, "tool": step.tool}


def judged(step: Judged) -> dict[str, Any]:
    """What the policy said of a step, as --json and the state store write it."""
    return {
        "risk_level": step.risk_level,
        "requires_approval": step.requires_approval,
        "confirmation": step.confirmation,
        "reasons": list(step.reasons),
        "personal": list(step.personal),
        "mitigations": list(step.mitigations),
    }


@dataclass
class StepResult:
    index: int
    step_id: str
    tool: str
    rationale: str
    params: dict[str, Any]
    risk_level: str
    requires_approval: bool = False
    confirmation: str = "none"
    reasons: list[str] = field(default_factory=list)
    # Reasons only a person may waive for this step: no flag covers them.
    personal: list[str] = field(default_factory=list)
    mitigations: list[str] = field(default_factory=list)
    status: str = "pending"
    output: Any = None
    error: str | None = None
    sql: list[str] = field(default_factory=list)
    estimate: dict[str, Any] | None = None
    attempts: int = 0
    seconds: float | None = None
    approval: dict[str, str] | None = None
    # Its tool's output is the run's report (`run_report: true` in its definition).
    run_report: bool = False
    # The locks it takes on the target and the lock wait that bounds them (shown by a
    # dry run and the prompt; not stored: the catalog says it again on resume).
    locks: StepLocks | None = None
    # What it acts on, measured when it is asked about (executor/covered.py; not stored:
    # an approval keeps it with the facts it was given for).
    subject: dict[str, Any] | None = None
    # Its yes was a person's answer to its question just now (not a flag, not an
    # earlier one): step.py measures and judges it again before it runs.
    answered_now: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            **named(self),
            "rationale": self.rationale,
            "params": self.params,
            **judged(self),
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "sql": self.sql,
            "estimate": self.estimate,
            "attempts": self.attempts,
            "seconds": self.seconds,
            "approval": self.approval,
            "locks": self.locks.to_dict() if self.locks else None,
        }


@dataclass
class RunResult:
    run_id: str
    status: str
    agent: str
    target: str
    dry_run: bool
    plan_hash: str
    safety_level: str
    steps: list[StepResult]
    error: str | None = None

    @property
    def report(self) -> Any:
        for step in reversed(self.steps):
            if step.run_report and step.status == "succeeded":
                return step.output
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "agent": self.agent,
            "target": self.target,
            "dry_run": self.dry_run,
            "plan_hash": self.plan_hash,
            "safety_level": self.safety_level,
            "error": self.error,
            "steps": [s.to_dict() for s in self.steps],
            "report": self.report,
        }


class Observer(Protocol):
    """Told as each step starts and ends; the CLI draws progress with it."""

    def step_started(self, step: StepResult, total: int) -> None: ...

    def step_finished(self, step: StepResult, total: int) -> None: ...


class SilentObserver:
    """The observer of a run nobody watches."""

    def step_started(self, step: StepResult, total: int) -> None:
        pass

    def step_finished(self, step: StepResult, total: int) -> None:
        pass


def outcome(results: list[StepResult]) -> tuple[str, str | None]:
    """The run's status from its steps, once the loop went through all of them."""
    statuses = [r.status for r in results]
    # A dry run previews every step past a failed read; the failure is still its end.
    failed = next((r for r in results if r.status == "failed"), None)
    if failed is not None:
        return FAILED, f"{failed.step_id} ({failed.tool}) failed: {failed.error}"
    if "waiting_approval" in statuses:
        return WAITING_APPROVAL, _waiting(results)
    if "deferred" in statuses:
        later = [r for r in results if r.status in ("deferred", "pending")]
        why = next(r.error for r in later if r.status == "deferred")
        return OUT_OF_WINDOW, f"{len(later)} step(s) left for later: {why}"
    if "denied" in statuses:
        changed = any(r.status == "succeeded" and r.risk_level != "safe" for r in results)
        return (COMPLETED_WITH_DENIALS if changed else DENIED), None
    return COMPLETED, None


def _waiting(results: list[StepResult]) -> str:
    """The steps a person may approve now, and apart from them those left pending: `aishell
    approve --step N` takes only the first kind."""
    waiting = [r.step_id for r in results if r.status == "waiting_approval"]
    said = f"waiting for approval: {', '.join(waiting)}"
    pending = [r.step_id for r in results if r.status == "pending"]
    if pending:
        after = "it" if len(waiting) == 1 else "them"
        said += f" ({', '.join(pending)} pending after {after})"
    return said
