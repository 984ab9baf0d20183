"""The approval policy, the one place its rules live: whether a step may run now,
whether a person must say yes, whether a flag may say it for them, and why.

A verdict carries the reasons and mitigations shown to the person, a confirmation
level (none, notify, confirm, review), the reasons no flag waives (a purge over its
limits, a restore over tables that hold data: only a person's yes for that step), and,
when the step must not start now, why (outside the maintenance window, past its time
budget, business hours). The executor, previews, `apply`, `ask`, the scheduler and the
approvers all ask this module; none decides on its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aishell.config.kinds import Category
from aishell.config.models import (
    BackupRequired,
    BusinessHours,
    MaintenanceWindow,
    MaxTableSize,
    PurgeLimits,
)
from aishell.config.options import SAFETY_LEVELS
from aishell.guard.statements import classify
from aishell.policy.hours import (
    allowed_at,
    hours_text,
    window_defer,
    window_end,
)
from aishell.policy.measured import Measure, TableMeasure
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel
from aishell.tool.context import Implementation
from aishell.units import exact, percent, percent_up

# The lowest risk that needs approval at each safety level.
APPROVAL_FROM: dict[str, RiskLevel] = {
    "strict": RiskLevel.MEDIUM,
    "moderate": RiskLevel.HIGH,
    "permissive": RiskLevel.CRITICAL,
}
PRODUCTION_APPROVAL_FROM = RiskLevel.MEDIUM
DEFAULT_PURGE_LIMITS = PurgeLimits(type="purge_limits")


class Confirmation(StrEnum):
    NONE = "none"  # runs
    NOTIFY = "notify"  # runs, and an event is recorded for the notifier
    CONFIRM = "confirm"  # needs a yes
    REVIEW = "review"  # needs a yes after the whole plan is shown


@dataclass(frozen=True)
class StepFacts:
    """What the policy knows about one step, gathered by the executor just before it runs."""

    tool: ToolDefinition
    tables: tuple[str, ...] = ()
    rows: Mapping[str, int] | None = None
    # Rows and bytes as measured (measured.py) for a limit the step is judged on; the
    # catalog's estimates (`rows`) only where nothing could measure (a preview offline).
    measures: Mapping[str, TableMeasure] | None = None
    now: datetime | None = None
    last_backup: datetime | None = None
    backup_in_run: bool = False
    expected_seconds: float | None = None
    expected_basis: str = ""
    params: Mapping[str, Any] | None = None
    # The tool's own estimate of its effect (rows a purge would delete, of how many).
    effect: Mapping[str, Any] | None = None
    # The target's engine: the mitigations shown are the tool's for it (None: all).
    dialect: str | None = None
    # False when, as rendered, the step writes nothing (may_write): it is judged
    # as a read, and runs under a guard that lets no write through.
    writes: bool = True


@dataclass(frozen=True)
class Verdict:
    risk: RiskLevel
    confirmation: Confirmation
    reasons: tuple[str, ...]
    mitigations: tuple[str, ...]
    defer: str | None = None
    # Reasons that need a person's yes for this very step: no flag covers them.
    personal: tuple[str, ...] = ()

    @property
    def requires_approval(self) -> bool:
        return self.confirmation in (Confirmation.CONFIRM, Confirmation.REVIEW)

    def to_dict(self) -> dict[str, Any]:
        return {
            "risk_level": self.risk.value,
            "confirmation": self.confirmation.value,
            "requires_approval": self.requires_approval,
            "reasons": list(self.reasons),
            "personal": list(self.personal),
            "mitigations": list(self.mitigations),
            "defer": self.defer,
        }


# The highest risk a flag (--yes, --approve-up-to) may approve in advance: critical
# steps always need a person to look at them.
MAX_PRE_APPROVAL = RiskLevel.HIGH


def flag_approves(up_to: RiskLevel, risk: RiskLevel, personal: tuple[str, ...]) -> bool:
    """Whether a flag approving up to `up_to` covers a step of `risk`: never a critical
    step, never one with reasons only a person may waive."""
    return not personal and risk.rank <= min(up_to.rank, MAX_PRE_APPROVAL.rank)


def named_approval_needed(personal: tuple[str, ...] | list[str]) -> str | None:
    """Why `aishell approve RUN` without --step does not cover a step, if it does not."""
    if not personal:
        return None
    return "; ".join(personal) + " (no flag covers this: approve this step by its number)"


@dataclass(frozen=True)
class SafetyPolicy:
    safety_level: str
    environment: str
    target: str
    constraints: Sequence[Any] = ()

    @property
    def all_constraints(self) -> tuple[Any, ...]:
        """The configured constraints, and the default purge limits on each of the defaults'
        tools that no configured purge_limits lists: one replaces them for its tools only."""
        listed = {t for c in self.constraints if isinstance(c, PurgeLimits) for t in c.tools}
        left = [t for t in DEFAULT_PURGE_LIMITS.tools if t not in listed]
        default = DEFAULT_PURGE_LIMITS.model_copy(update={"tools": left})
        return (*self.constraints, default) if left else tuple(self.constraints)

    def purge_limits(self, tool: str) -> PurgeLimits | None:
        """The tightest share limit that names the tool: where several do, each holds."""
        found = [c for c in self.all_constraints if isinstance(c, PurgeLimits) and tool in c.tools]
        return min(found, key=lambda c: c.max_share) if found else None

    def check(self, facts: StepFacts) -> Verdict:
        if not facts.writes and facts.tool.risk_level is not RiskLevel.SAFE:
            # What it may do is what it runs: reads, which need no yes and no window.
            facts = replace(facts, tool=replace(facts.tool, risk_level=RiskLevel.SAFE))
        tool = facts.tool
        risk, user_code = _user_code(facts)
        reasons: list[str] = []
        threshold = APPROVAL_FROM[self.safety_level]
        if risk.rank >= threshold.rank:
            reasons.append(
                f"{risk.value} risk needs approval at the {self.safety_level} safety level "
                f"(from {threshold.value})"
            )
        if self.environment == "production" and risk.rank >= PRODUCTION_APPROVAL_FROM.rank:
            reasons.append(
                f"target '{self.target}' is production: medium risk and above need approval"
            )
        if tool.requires_approval:
            reasons.append(f"{tool.name} always needs approval")
        if tool.destructive:
            reasons.append(f"{tool.name} modifies or removes data")
        if tool.category is Category.DDL:
            reasons.append(f"{tool.name} changes the schema")
        defer = None
        personal: list[str] = []
        for constraint in self.all_constraints:
            if isinstance(constraint, MaxTableSize):
                reasons += _max_table_size(constraint, facts)
            elif isinstance(constraint, BackupRequired) and facts.writes:
                reasons += _backup_required(constraint, facts, self.target)
            elif isinstance(constraint, MaintenanceWindow):
                defer = defer or window_defer(constraint, facts.now, risk, _expected(facts))
            elif isinstance(constraint, BusinessHours):
                defer = defer or _business_hours(constraint, facts)
            elif isinstance(constraint, PurgeLimits):
                personal += _purge_limits(constraint, facts)
        personal += _replaces_data(facts, self.target)
        cascades, fires = _reaches_beyond(facts)
        personal += cascades
        reasons += fires
        reasons += user_code
        reasons += personal
        if reasons and (
            risk is RiskLevel.CRITICAL or tool.destructive or tool.category is Category.DDL
        ):
            confirmation = Confirmation.REVIEW
        elif reasons:
            confirmation = Confirmation.CONFIRM
        elif risk is not RiskLevel.SAFE:
            confirmation = Confirmation.NOTIFY
        else:
            confirmation = Confirmation.NONE
        return Verdict(
            risk=risk,
            confirmation=confirmation,
            reasons=tuple(reasons),
            mitigations=tool.mitigations_on(facts.dialect),
            defer=defer,
            personal=tuple(personal),
        )

    def window_closes(
        self, tool: ToolDefinition, now: datetime, risk: RiskLevel | None = None
    ) -> datetime | None:
        """When the window the step runs in closes (its time budget), by its `risk` as judged."""
        if (risk or tool.risk_level).rank <= RiskLevel.LOW.rank:
            return None
        closes: list[datetime] = []
        for constraint in self.constraints:
            if isinstance(constraint, MaintenanceWindow):
                local = now.astimezone(ZoneInfo(constraint.timezone))
                hours, days = set(constraint.allowed_hours), set(constraint.days)
                if allowed_at(local, hours, days):
                    end = window_end(local, hours, days)
                    if end is not None:
                        closes.append(end)
        return min(closes) if closes else None


class DurationHistory(Protocol):
    def step_durations(self, tool: str, subject: str | None, limit: int = 5) -> list[float]: ...

    def backup_for(self, database: str, run_id: str | None = None) -> datetime | None: ...


# Without history, a step is assumed to rewrite its table at this rate; the median of
# earlier runs of the same tool on the same table replaces the guess once there is one.
_ASSUMED_BYTES_PER_SECOND = 50 * 2**20


class TableSizes(Protocol):
    """What the policy reads of a step's tables: the target's catalog, as the caller
    holds it (current for these tables)."""

    def rows(self, table: str) -> int | None: ...

    def size(self, table: str) -> int | None: ...


def gather_facts(
    policy: SafetyPolicy,
    tool: ToolDefinition,
    params: Mapping[str, Any],
    catalog: TableSizes,
    *,
    effect: Mapping[str, Any] | None,
    now: datetime,
    store: DurationHistory | None,
    backup_in_run: bool = False,
    dialect: str | None = None,
    writes: bool = True,
    measure: Measure | None = None,
    database: Callable[[], str | None] | None = None,
    run_id: str | None = None,
) -> StepFacts:
    """What the policy needs to know of one step, read the same way for a run, a dry
    run and a plan's preview, so that all three give the same verdict. `measure`: the
    tables' rows and bytes as they are (measured.py), for a step that a row limit
    judges; without it (offline), the catalog's estimates. `database` (backup_identity)
    and `run_id`: whose backups count, the run's own unverified."""
    tables = tool.tables_in(params)
    rows: dict[str, int] = {}
    measures = None
    if tool.risk_level is not RiskLevel.SAFE and policy.constraints:
        rows = {t: n for t in tables if (n := catalog.rows(t)) is not None}
        limit = row_limit(policy, tool) if writes else None
        if limit is not None and tables and measure is not None:
            measures = measure(tables, limit)
    expected, basis = None, ""
    has_window = any(isinstance(c, MaintenanceWindow) for c in policy.constraints)
    if has_window and tool.risk_level.rank > RiskLevel.LOW.rank:
        expected, basis = _expected_seconds(store, tool, tables, catalog)
    needs_backup = any(isinstance(c, BackupRequired) for c in policy.constraints)
    last_backup = None
    if needs_backup and database is not None and store is not None and (found := database()):
        last_backup = store.backup_for(found, run_id)
    return StepFacts(
        tool=tool,
        tables=tables,
        rows=rows,
        measures=measures,
        now=now,
        last_backup=last_backup,
        backup_in_run=needs_backup and backup_in_run,
        expected_seconds=expected,
        expected_basis=basis,
        params=params,
        effect=effect,
        dialect=dialect,
        writes=writes,
    )


def may_write(
    tool: ToolDefinition, impl: Implementation, rendered: Sequence[str], dialect: str
) -> bool:
    """Whether a step may write: its tool is not safe, and it is not a step that, as its
    tool rendered it, writes nothing (every statement it gives only reads, and its
    implementation writes nothing it does not render: a rebuild that found no index
    over the threshold). A step that may not needs no approval for its tool's risk: it
    runs as a read, the guard refusing any write and the session read-only, so that
    what was judged is what runs."""
    if tool.risk_level is RiskLevel.SAFE:
        return False
    if not impl.reads_when_it_renders_reads:
        return True
    return any(classify(sql, dialect).writes for sql in rendered)


def _expected_seconds(
    store: DurationHistory | None,
    tool: ToolDefinition,
    tables: tuple[str, ...],
    catalog: TableSizes,
) -> tuple[float | None, str]:
    history = store.step_durations(tool.name, ",".join(tables) or None) if store else []
    if history:
        return statistics.median(history), f"median of {len(history)} earlier run(s)"
    sizes = [catalog.size(t) for t in tables]
    if tables and all(s is not None for s in sizes):
        total = sum(s or 0 for s in sizes)
        return total / _ASSUMED_BYTES_PER_SECOND, f"estimated from {total:,} bytes of data"
    return None, ""


def tighter_or_equal(level: str, than: str) -> bool:
    return SAFETY_LEVELS.index(level) <= SAFETY_LEVELS.index(than)


# --- constraints -----------------------------------------------------------------------


def row_limit(policy: SafetyPolicy, tool: ToolDefinition) -> int | None:
    """The highest max_table_size that judges this tool's steps, if any does: a count
    up to one row past it decides every lower one too."""
    limits = [
        c.max_rows
        for c in policy.constraints
        if isinstance(c, MaxTableSize) and (c.tools is None or tool.name in c.tools)
    ]
    return max(limits) if limits else None


def _max_table_size(constraint: MaxTableSize, facts: StepFacts) -> list[str]:
    if constraint.tools is not None and facts.tool.name not in constraint.tools:
        return []
    if facts.tool.risk_level is RiskLevel.SAFE:
        return []
    limit = f"max_table_size ({constraint.max_rows:,} rows)"
    reasons = []
    for table in facts.tables:
        measured = (facts.measures or {}).get(table)
        if measured is not None:
            over = measured.over(constraint.max_rows)
            if over:
                reasons.append(f"table '{table}' has {measured.shown}, over {limit}")
            elif over is None:
                # What could not be measured is judged as over: a person says yes.
                why = measured.unknown or "its size does not bound them"
                reasons.append(
                    f"table '{table}': its rows could not be counted against {limit} ({why})"
                )
            continue
        rows = (facts.rows or {}).get(table)
        if rows is not None and rows > constraint.max_rows:
            reasons.append(f"table '{table}' has about {rows:,} rows, over {limit}")
    return reasons


def _purge_limits(constraint: PurgeLimits, facts: StepFacts) -> list[str]:
    if facts.tool.name not in constraint.tools:
        return []
    reasons = []
    retention = (facts.params or {}).get("retention_days")
    if isinstance(retention, int | float) and retention < constraint.min_retention_days:
        reasons.append(
            f"retention of {exact(retention)} days is under "
            f"{exact(constraint.min_retention_days)}: recent rows would be deleted"
        )
    effect = facts.effect or {}
    going, total = effect.get("rows_this_run"), effect.get("table_rows")
    if isinstance(going, int) and isinstance(total, int) and total > 0:
        share = going / total
        if share > constraint.max_share:
            about = "about " if effect.get("estimated") else ""
            reasons.append(
                f"would delete {about}{going:,} of {about}{total:,} rows "
                f"({percent_up(share)}), over max_share ({percent(constraint.max_share)})"
            )
    # The estimate above only warns ahead; the purge itself stops at max_share by its
    # own count of what it deleted, and then only a person's yes lets it go on.
    stopped = effect.get("share_stop")
    if isinstance(stopped, str) and stopped:
        reasons.append(stopped)
    return reasons


def _replaces_data(facts: StepFacts, target: str) -> list[str]:
    """A step whose own estimate says it replaces objects that hold data (a restore:
    `replaces_data`, or every object of `replaces_tables` when it does not say which)."""
    effect = facts.effect or {}
    replaced = effect.get("replaces_data", effect.get("replaces_tables"))
    if not replaced:
        return []
    names = ", ".join(str(t) for t in replaced[:10]) + (" ..." if len(replaced) > 10 else "")
    return [
        f"{facts.tool.name} replaces {len(replaced)} object(s) holding data in '{target}': {names}"
    ]


def _reaches_beyond(facts: StepFacts) -> tuple[list[str], list[str]]:
    """What the step's writes do beyond the rows they name, by its estimate
    (writereach.py): foreign keys that cascade (rows of other tables go or change, which
    no statement of the step names and a purge neither counts nor archives: a person
    says yes to that very step), and triggers and rules that fire (their writes are part
    of what is approved)."""
    effect = facts.effect or {}
    goes = ": those rows go or change with it, though no statement of the step names them"
    # A key SQLite leaves unenforced says itself that its rows stay; code whose writes
    # are not known, that they are not.
    said = effect.get("cascades") or []
    cascades = [c if "is not acted on" in c or c.endswith(" not known") else c + goes for c in said]
    return cascades, list(effect.get("fires") or [])


def _user_code(facts: StepFacts) -> tuple[RiskLevel, list[str]]:
    """The step's risk and the user-defined code its estimate names (usercode.py): code
    that may write, whatever it declares, makes the step at least high, each piece a
    reason. A step judged as a read runs under a guard that lets no write through."""
    code = list((facts.effect or {}).get("user_code") or []) if facts.writes else []
    if code:
        code.append(
            "user-defined code may write whatever it declares, so the step is at least high "
            "risk; list a function that only reads in the target's trusted_functions"
        )
    if not code or facts.tool.risk_level.rank >= RiskLevel.HIGH.rank:
        return facts.tool.risk_level, code
    return RiskLevel.HIGH, code


def _backup_required(constraint: BackupRequired, facts: StepFacts, target: str) -> list[str]:
    if facts.tool.name not in constraint.before_operations or facts.backup_in_run:
        return []
    now, newest = facts.now or datetime.now().astimezone(), facts.last_backup
    if newest is not None and now - newest <= timedelta(hours=constraint.max_age_hours):
        return []
    found = f"the newest is from {newest:%Y-%m-%d %H:%M %Z}" if newest else "none was found"
    return [
        f"{facts.tool.name} needs a verified backup of '{target}' (of the database it reaches "
        f"now) from the last {exact(constraint.max_age_hours)} h and {found}; take a backup first "
        "or approve without one"
    ]


def _expected(facts: StepFacts) -> tuple[float | None, str]:
    return facts.expected_seconds, facts.expected_basis


def _business_hours(constraint: BusinessHours, facts: StepFacts) -> str | None:
    if facts.tool.risk_level is not RiskLevel.CRITICAL or facts.now is None:
        return None
    local = facts.now.astimezone(ZoneInfo(constraint.timezone))
    if allowed_at(local, set(constraint.hours), set(constraint.days)):
        return (
            f"it is business hours ({hours_text(constraint.hours)} "
            f"{','.join(constraint.days)} {constraint.timezone}; it is {local:%a %H:%M}): "
            "critical steps wait until after"
        )
    return None
