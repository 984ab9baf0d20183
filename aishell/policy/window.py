"""A person's decision to run one run outside the maintenance window: `--ignore-window`
with the `--reason` it always needs. It lifts the window and nothing else: approvals,
purge limits and the safety level judge every step as before.

Light on purpose: the command line checks the flags with it before anything is
planned, so it imports no SQLAlchemy and no other rule of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aishell.errors import UsageError

# The event the decision is stored as, beside the run's other decisions.
WINDOW_IGNORED = "window_ignored"


@dataclass(frozen=True)
class WindowOverride:
    """Who lifted the maintenance window for a run, and why."""

    by: str
    reason: str

    def to_event(self) -> dict[str, Any]:
        return {"decision": "ignore_window", "by": self.by, "reason": self.reason}


def window_override(ignore_window: bool, reason: str | None, by: str) -> WindowOverride | None:
    """The decision the flags make, or None; refused without a reason, because nobody can
    be asked for one later (a scheduled or non-interactive run), and a reason given
    without --ignore-window would be recorded for nothing."""
    text = " ".join((reason or "").split())
    if not ignore_window:
        if text:
            raise UsageError(
                "--reason says why the maintenance window is ignored; give it with "
                "--ignore-window, or leave it out"
            )
        return None
    if not text:
        raise UsageError(
            "--ignore-window needs --reason: say why this run may go outside the "
            "maintenance window (recorded with who asked)"
        )
    return WindowOverride(by=by, reason=text)
