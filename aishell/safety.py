"""The safety policy: which steps need a person's yes, and why."""

from __future__ import annotations

from dataclasses import dataclass

from aishell.config import SafetyLevel
from aishell.registry import Category, RiskLevel, ToolDefinition

# The lowest risk that needs approval at each safety level.
APPROVAL_FROM: dict[str, RiskLevel] = {
    "strict": RiskLevel.MEDIUM,
    "moderate": RiskLevel.HIGH,
    "permissive": RiskLevel.CRITICAL,
}
PRODUCTION_APPROVAL_FROM = RiskLevel.MEDIUM


@dataclass(frozen=True)
class Verdict:
    risk: RiskLevel
    requires_approval: bool
    reasons: tuple[str, ...]


def check(tool: ToolDefinition, safety_level: SafetyLevel, environment: str) -> Verdict:
    """The verdict for running `tool` at this safety level on a target of this environment."""
    risk = tool.risk_level
    reasons: list[str] = []
    threshold = APPROVAL_FROM[safety_level]
    if risk.rank >= threshold.rank:
        reasons.append(
            f"{risk.value} risk needs approval at the {safety_level} safety level "
            f"(from {threshold.value})"
        )
    if environment == "production" and risk.rank >= PRODUCTION_APPROVAL_FROM.rank:
        reasons.append(f"the target is production: {risk.value} risk needs approval")
    if tool.requires_approval:
        reasons.append(f"{tool.name} always needs approval")
    if tool.destructive:
        reasons.append(f"{tool.name} modifies or removes data")
    if tool.category is Category.DDL:
        reasons.append(f"{tool.name} changes the schema")
    return Verdict(risk=risk, requires_approval=bool(reasons), reasons=tuple(reasons))
