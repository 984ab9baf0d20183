"""The `monitoring:` block of aishell.yaml: alert rules over the state store.

Its shape is the reference tutorial's (`enabled`, `metrics`, `alerts` of `condition` and
`action`); a condition is a measure against a limit (`execution_time > 1800`) or the
name of a rule that has none (`run_failed`). Which rule each condition is, and what its
limit counts, is `RULES` below: the one place a condition's words are read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aishell.config.bounds import MAX_COUNT, MAX_RUN_TIME_SECONDS
from aishell.config.fields import Number
from aishell.config.options import MAX_RETENTION_DAYS


@dataclass(frozen=True)
class RuleKind:
    """What a measure in a condition stands for: the rule it fires, and its limit's unit."""

    rule: str
    unit: str  # "" for a count, else the unit of the limit ("seconds", "hours")
    bare_limit: float | None  # the limit of the bare word (`run_failed`); None: needs one


# measure -> the rule it fires. The first two are the tutorial's own words.
RULES: dict[str, RuleKind] = {
    "errors_encountered": RuleKind("run_failed", "", None),  # failed steps of a failed run
    "execution_time": RuleKind("step_slow", "seconds", None),  # a step running this long
    "approval_wait": RuleKind("approval_waiting", "seconds", None),  # a run waiting this long
    "backup_age_hours": RuleKind("backup_stale", "hours", None),  # newest restore-proven backup
    "schedule_late": RuleKind("schedule_missed", "seconds", None),  # a due trigger unstarted
    # Bare words: a rule at its usual limit.
    "run_failed": RuleKind("run_failed", "", 0),
    "schedule_missed": RuleKind("schedule_missed", "seconds", -1),  # -1: the misfire grace
}
RULE_NAMES = tuple(sorted({kind.rule for kind in RULES.values()}))
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(?:>\s*([0-9]+(?:\.[0-9]+)?)\s*)?$")

# The tutorial's actions; both go to the configured notifiers, which read `action` in
# the message to page someone or open an incident.
Action = Literal["notify_admin", "create_incident"]
# The tutorial's metric names, taken so that its block loads as written; they select
# nothing: the state store keeps every run's steps, times and errors whatever is listed,
# and `aishell metrics` exposes them.
Metric = Literal["execution_time", "tables_processed", "indexes_rebuilt", "errors_encountered"]


class AlertRule(BaseModel):
    """One alert: a condition over the state store, and what its message asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    condition: str = Field(
        description="a measure and its limit (execution_time > 1800) or a rule's name"
    )
    action: Action = "notify_admin"
    # Only these targets (backup_stale, and runs on them); null: every target.
    targets: list[str] | None = None

    @field_validator("condition")
    @classmethod
    def _known(cls, value: str) -> str:
        parse_condition(value)
        return value

    @property
    def rule(self) -> str:
        return parse_condition(self.condition)[0].rule

    @property
    def limit(self) -> float:
        """The condition's limit in its unit; -1 for `schedule_missed`: the misfire grace."""
        return parse_condition(self.condition)[1]


def parse_condition(text: str) -> tuple[RuleKind, float]:
    """The rule a condition names and its limit; a ValueError naming what is known."""
    found = _CONDITION.match(text)
    kind = RULES.get(found.group(1)) if found else None
    if found is None or kind is None:
        raise ValueError(
            f"unknown condition {text!r}; conditions are: "
            + ", ".join(f"{name} > N" for name, k in RULES.items() if k.bare_limit is None)
            + ", "
            + ", ".join(name for name, k in RULES.items() if k.bare_limit is not None)
        )
    if found.group(2) is None:
        if kind.bare_limit is None:
            raise ValueError(f"condition {text!r} needs a limit: {found.group(1)} > N")
        return kind, kind.bare_limit
    measure, written = found.group(1), found.group(2)
    limit = float(written)
    # Some 310 digits make an infinite float, which no measure ever passes: a typo. Not
    # echoed whole: the line would be the digits.
    if not math.isfinite(limit):
        raise ValueError(
            f"condition on {measure}: a limit of {len(written)} digits is not a finite number"
        )
    # A count is whole: 0.5 failed steps is a typo, as a config's integer refuses 1.0.
    if kind.unit == "":
        if "." in written or int(written) > MAX_COUNT:
            raise ValueError(
                f"condition {text!r}: {measure} counts, so its limit is a whole number "
                f"from 0 to {MAX_COUNT}"
            )
        return kind, int(written)
    most = {"seconds": MAX_RUN_TIME_SECONDS, "hours": MAX_RETENTION_DAYS * 24}.get(kind.unit)
    if most is not None and limit > most:
        raise ValueError(f"condition {text!r}: at most {most} {kind.unit}")
    return kind, limit


class MonitoringConfig(BaseModel):
    """Alert rules, evaluated by `aishell schedule serve` and `aishell alerts check`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = False
    metrics: list[Metric] = []
    alerts: list[AlertRule] = []
    # How often `schedule serve` evaluates the rules.
    interval_seconds: Number = Field(30, ge=1, le=3600)
    # Runs older than this are not looked at (an alert already firing is followed to its
    # end whatever its age): turning monitoring on does not page for last year's runs.
    lookback_hours: Number = Field(24, gt=0, le=24 * 366)
