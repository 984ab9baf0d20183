"""One execution of a plan: what the per-step rules read, and how a step's end is recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from aishell.config.kinds import Capability, Category
from aishell.config.models import AgentConfig
from aishell.executor.failures import rollback
from aishell.executor.results import Observer, StepResult
from aishell.executor.statuses import INTERRUPTED
from aishell.executor.stopping import Stop, Stopping
from aishell.guard.memory import GuardMemory
from aishell.plan.model import Plan
from aishell.policy.approvers import Approver
from aishell.policy.rules import SafetyPolicy
from aishell.registry import Registry, ToolDefinition
from aishell.risk import RiskLevel
from aishell.state.store import StateStore
from aishell.targets.engines import Target
from aishell.targets.identity import backup_identity
from aishell.targets.tables import TableCatalog


def takes_backup(tool: ToolDefinition) -> bool:
    """Whether a step of the tool takes a backup (what a preview counts as a backup
    earlier in the run): it declares backup_create. Validating or restoring a backup
    (backup_restore) takes none."""
    return Capability.BACKUP_CREATE in tool.required_capabilities


@dataclass
class RunContext:
    """The run's plan, its steps' results so far and the executor's settings."""

    run_id: str
    plan: Plan
    results: list[StepResult]
    dry_run: bool
    registry: Registry
    store: StateStore
    target: Target
    agent: AgentConfig
    policy: SafetyPolicy
    approver: Approver
    observer: Observer
    clock: Callable[[], datetime]
    stopping: Stopping
    # Opens another configured target read-only (a replica a purge watches).
    open_target: Callable[[str], Connection] | None = None
    # The target's tables, read once; what a step may have changed is read again.
    catalog: TableCatalog | None = None
    # What the guard learned (functions that may write, statements that only read),
    # for every step's guard.
    guard_memory: GuardMemory = field(default_factory=GuardMemory)
    # While a parallel group runs (parallel.py): each step's start and end commits on
    # its own, as it happens. (A quick step's start and end otherwise ride with the
    # next commit, which the store tracks for one step at a time.)
    durable_steps: bool = False
    # Where each step's result is in results, by step id.
    positions: dict[str, int] = field(init=False)
    # How far backup_before has looked, and whether a backup had succeeded by there.
    _backups_seen: tuple[int, bool] = field(default=(0, False), init=False)
    # Which database the target reaches (backup_identity), read once when first asked.
    _database: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.positions = {r.step_id: r.index for r in self.results}
        self.guard_memory.trusted = tuple(self.target.config.trusted_functions)

    def earlier(self, index: int) -> Mapping[str, StepResult]:
        """The steps before the step at index, by id."""
        return Earlier(self.results, index, self.positions)

    def database(self) -> str:
        """Which database the run's target reaches (targets.identity.backup_identity),
        read on a connection of its own the first time a step asks: the one whose
        backups a backup_required counts. The run lock and a resume's check of the
        plan's database hold it to the same database for the rest of the run."""
        if self._database is None:
            with self.target.connect_apart() as conn:
                self._database = backup_identity(conn)
        return self._database

    def backup_before(self, index: int) -> bool:
        """Whether a dry run's step before the step at index would take a backup of the
        target: nothing is taken, and a step that would take one counts, as in a plan's
        preview. A run's own backups are in the backup catalog (effects.py), where the
        policy finds them with their database and their age (a run resumed days later
        has a backup days old), and where a cleanup or a failed validation since is
        seen; so in a run this is always False.

        Steps are prepared in order and an earlier step's status is final by then (one
        left waiting does not run again in this go), so each result is looked at once
        per run, not once per later step."""
        if not self.dry_run:
            return False
        seen, found = self._backups_seen if self._backups_seen[0] <= index else (0, False)
        for result in self.results[seen:index]:
            found = found or self._took_backup(result)
        self._backups_seen = (index, found)
        return found

    def _took_backup(self, result: StepResult) -> bool:
        return result.status == "previewed" and takes_backup(self.registry.get(result.tool))

    def max_share(self, tool: str) -> float | None:
        """The share of its table a purge by `tool` may take; None when not held to one."""
        limits = self.policy.purge_limits(tool)
        return limits.max_share if limits is not None else None

    def interrupted(
        self, result: StepResult, conn: Connection, error: str, started: float | None = None
    ) -> Stop:
        """A step a stop ended (a signal, the time limit, `aishell stop`): what it began
        is rolled back and it ends interrupted, for `aishell resume` to take it again.
        Returns the Stop that ends the run, for the caller to raise."""
        rollback(conn)
        self.finish(result, "interrupted", error=error, started=started)
        return Stop(INTERRUPTED, self.stopping.reason())

    def record_event(self, index: int, kind: str, data: dict[str, Any]) -> None:
        self.store.record_event(self.run_id, index, kind, data)

    def finish(
        self,
        result: StepResult,
        status: str,
        *,
        error: str | None = None,
        started: float | None = None,
        output_text: str | None = None,
    ) -> None:
        """A step's end: committed to the store before anything else happens.
        `output_text`: result.output as dumps() wrote it, not encoded again."""
        # A step that started wrote its params and SQL then: they are not written twice
        # (for a step of thousands of tables, or one reading a whole health report).
        started_here = result.status == "running"
        result.status, result.error = status, error
        if started is not None:
            result.seconds = round(time.monotonic() - started, 3)
        self.store.step_finished(
            self.run_id,
            result.index,
            status,
            output=result.output,
            output_text=output_text,
            error=error,
            sql=None if started_here else result.sql,
            resolved_params=None if started_here else result.params,
            replayable=started_here
            and status == "succeeded"
            and not self.durable_steps
            and self._replayable(result),
        )
        self.observer.step_finished(result, len(self.results))

    def _replayable(self, result: StepResult) -> bool:
        """Whether running the step again would do no more than it did: its tool reads,
        or maintains tables in place, and may run twice. (Whether it sent a write that
        is not repeatable, or one to a large table, the store knows: its audit row is
        committed.) A tool that acts outside the database (a backup) is not."""
        tool = self.registry.get(result.tool)
        return tool.idempotent and (
            tool.risk_level is RiskLevel.SAFE or tool.category is Category.MAINTENANCE
        )


class Earlier(Mapping[str, StepResult]):
    """The steps before one step, by id, without copying them for every step."""

    def __init__(self, results: list[StepResult], index: int, by_id: dict[str, int]) -> None:
        self._results, self._index, self._by_id = results, index, by_id

    def __getitem__(self, step_id: str) -> StepResult:
        position = self._by_id[step_id]
        if position >= self._index:
            raise KeyError(step_id)
        return self._results[position]

    def __iter__(self) -> Iterator[str]:
        return (r.step_id for r in self._results[: self._index])

    def __len__(self) -> int:
        return self._index
