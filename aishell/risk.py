"""Risk levels, lowest first: what a step may do to a database if it goes wrong."""

from __future__ import annotations

from enum import StrEnum


class RiskLevel(StrEnum):
    SAFE = "safe"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)


_ORDER = list(RiskLevel)
