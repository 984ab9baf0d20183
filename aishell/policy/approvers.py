"""Approvers decide on steps that need a person's yes. Where nobody can be asked, the
answer is to wait: a non-interactive run never approves on its own."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from aishell.errors import UsageError
from aishell.policy.rules import MAX_PRE_APPROVAL, flag_approves
from aishell.risk import RiskLevel
from aishell.tool.locks import StepLocks


class Decision(StrEnum):
    APPROVE = "approved"
    DENY = "denied"
    DEFER = "deferred"
    QUIT = "quit"
    # No answer (the input ended): the step waits and the run stops, resumably.
    STOP = "stopped"


@dataclass(frozen=True)
class ApprovalRequest:
    """Everything the person is shown before answering."""

    run_id: str
    target: str
    environment: str
    step_index: int
    step_id: str
    tool: str
    description: str
    params: dict[str, Any]
    sql: list[str]
    risk: str
    confirmation: str
    reasons: tuple[str, ...]
    risks: tuple[str, ...]
    mitigations: tuple[str, ...]
    estimate: dict[str, Any]
    rationale: str
    # (step id, tool, subject, risk) of every step: shown first for a review.
    plan: tuple[tuple[str, str, str, str], ...] = ()
    # Reasons only a person may waive, for this step by name: no flag and no "all".
    personal: tuple[str, ...] = ()
    # The locks it takes on the target and the lock wait that bounds them.
    locks: StepLocks | None = None


@dataclass(frozen=True)
class Answer:
    decision: Decision
    decided_by: str
    how: str
    reason: str
    # A person answered this very question: what the step acts on may have changed
    # while it waited, so it is measured and judged again before it runs.
    waited: bool = False


class Approver(Protocol):
    def decide(self, request: ApprovalRequest) -> Answer: ...


def current_user() -> str:
    """The OS user: who approved, denied or started something."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


@dataclass
class NonInteractive:
    """Nobody to ask: defer, so the run stops as waiting_approval."""

    why: str = "no terminal to ask on"

    def decide(self, request: ApprovalRequest) -> Answer:
        return Answer(Decision.DEFER, "aishell", "non-interactive", self.why)


@dataclass
class PreApproved:
    """Approves steps up to a risk level named by a flag; others go to `then`."""

    up_to: RiskLevel = MAX_PRE_APPROVAL
    how: str = "--yes"
    then: Approver = field(default_factory=NonInteractive)

    def __post_init__(self) -> None:
        if self.up_to.rank > MAX_PRE_APPROVAL.rank:
            raise ValueError("critical steps cannot be approved in advance")

    def decide(self, request: ApprovalRequest) -> Answer:
        if flag_approves(self.up_to, RiskLevel(request.risk), request.personal):
            return Answer(
                Decision.APPROVE,
                current_user(),
                self.how,
                f"approved in advance up to {self.up_to.value} risk",
            )
        return self.then.decide(request)


# The prompt's answers: yes, no, all (approve the rest at this risk level), quit; each
# also by its first letter, in any case.
PROMPT_CHOICES = ("yes", "no", "all", "quit")
PROMPT_ANSWERS = {
    **{choice: choice for choice in PROMPT_CHOICES},
    **{choice[0]: choice for choice in PROMPT_CHOICES},
}


# Why a step was denied when the input ended (Ctrl-D) instead of an answer.
END_OF_INPUT = "end of input"


@dataclass
class Prompting:
    """Asks a person through `ask`, which shows the request and returns one of
    PROMPT_CHOICES, or raises EOFError when the input ends: the step is not run, and
    the run stops there, to be resumed (and asked again) later."""

    ask: Callable[[ApprovalRequest], str]
    approved_risks: set[str] = field(default_factory=set)
    # Once the input has ended nobody is left to answer: every later step is a no too.
    ended: bool = False
    # The steps "all" was the answer to: one asked again (it changed while its question
    # waited) is asked, not covered by the "all" given for what it was before.
    answered_all: set[tuple[str, int]] = field(default_factory=set)

    def decide(self, request: ApprovalRequest) -> Answer:
        user = current_user()
        step = (request.run_id, request.step_index)
        if (
            request.risk in self.approved_risks
            and not request.personal
            and step not in self.answered_all
        ):
            return Answer(
                Decision.APPROVE, user, "prompt:all", f"all {request.risk} steps approved"
            )
        if self.ended:
            return Answer(Decision.STOP, user, "prompt", END_OF_INPUT)
        try:
            choice = self.ask(request)
        except EOFError:
            self.ended = True
            return Answer(Decision.STOP, user, "prompt", END_OF_INPUT)
        if choice == "yes" or (choice == "all" and request.personal):
            # "all" covers the rest of a risk level, never a step only a person may pass.
            return Answer(Decision.APPROVE, user, "prompt", "approved at the prompt", True)
        if choice == "all":
            self.approved_risks.add(request.risk)
            self.answered_all.add(step)
            reason = f"all {request.risk} steps approved"
            return Answer(Decision.APPROVE, user, "prompt:all", reason, True)
        if choice == "quit":
            return Answer(Decision.QUIT, user, "prompt", "run stopped at the prompt")
        return Answer(Decision.DENY, user, "prompt", "denied at the prompt")


def choose_approver(
    yes: bool,
    approve_up_to: str | None,
    non_interactive: bool,
    at_terminal: bool,
    ask: Callable[[ApprovalRequest], str],
) -> Approver:
    """Flags first; then a prompt (through `ask`) at a terminal; otherwise wait (fail
    closed). `at_terminal` says whether stdin is a terminal a person can answer on."""
    if non_interactive or not at_terminal:
        why = "--non-interactive" if non_interactive else "no terminal on stdin"
        fallback: Approver = NonInteractive(why=why)
    else:
        fallback = Prompting(ask=ask)
    if approve_up_to or yes:
        level = RiskLevel(approve_up_to or "high")
        how = f"--approve-up-to {level.value}" if approve_up_to else "--yes"
        return PreApproved(up_to=level, how=how, then=fallback)
    return fallback


def refuse_approval_in_advance(yes: bool, approve_up_to: str | None) -> None:
    """A schedule runs with nobody watching: a step that needs approval waits for a
    person, so a scheduled job may not carry the flags that approve in advance."""
    if yes or approve_up_to:
        raise UsageError(
            "A schedule never approves in advance: steps that need approval leave the run "
            "waiting_approval for a person (drop --yes / --approve-up-to)"
        )
