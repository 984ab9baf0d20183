"""The step loop: policy, approval, substitution, execution with a deadline, checkpoint.

Every step's end is committed to the state store before the next step begins.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from aishell import safety, schema
from aishell.approval import ApprovalRequest, Approver, Decision
from aishell.config import AgentConfig
from aishell.errors import AishellError, SubstitutionError, TargetError
from aishell.plan import Plan, Step
from aishell.registry import Category, Registry, RiskLevel, ToolContext, ToolDefinition
from aishell.state import StateStore, dumps
from aishell.substitution import find_references, substitute
from aishell.targets import Target, check_column, check_tables, step_deadline

# Run outcomes.
COMPLETED = "completed"
COMPLETED_WITH_DENIALS = "completed_with_denials"
FAILED = "failed"
WAITING_APPROVAL = "waiting_approval"
ABORTED = "aborted"
INTERRUPTED = "interrupted"

_TRANSIENT_MARKERS = ("database is locked", "database table is locked", "busy")


@dataclass
class StepResult:
    index: int
    step_id: str
    tool: str
    rationale: str
    params: dict[str, Any]
    risk_level: str
    requires_approval: bool
    reasons: list[str]
    status: str = "pending"
    output: Any = None
    error: str | None = None
    sql: list[str] = field(default_factory=list)
    attempts: int = 0
    seconds: float | None = None
    approval: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step_id": self.step_id,
            "tool": self.tool,
            "rationale": self.rationale,
            "params": self.params,
            "risk_level": self.risk_level,
            "requires_approval": self.requires_approval,
            "reasons": self.reasons,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "sql": self.sql,
            "attempts": self.attempts,
            "seconds": self.seconds,
            "approval": self.approval,
        }


@dataclass
class RunResult:
    run_id: str
    status: str
    agent: str
    target: str
    dry_run: bool
    plan_hash: str
    steps: list[StepResult]
    error: str | None = None

    @property
    def report(self) -> Any:
        for step in reversed(self.steps):
            if step.tool == "generate_maintenance_report" and step.status == "succeeded":
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
            "error": self.error,
            "steps": [s.to_dict() for s in self.steps],
            "report": self.report,
        }


class Observer(Protocol):
    """Told as each step starts and ends; the CLI draws progress with it."""

    def step_started(self, step: StepResult, total: int) -> None: ...

    def step_finished(self, step: StepResult, total: int) -> None: ...


class _Silent:
    def step_started(self, step: StepResult, total: int) -> None:
        pass

    def step_finished(self, step: StepResult, total: int) -> None:
        pass


class _Stop(Exception):
    """Ends the step loop with a run status."""

    def __init__(self, status: str, error: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error


@dataclass
class Executor:
    registry: Registry
    store: StateStore
    target: Target
    agent: AgentConfig
    approver: Approver
    observer: Observer = field(default_factory=_Silent)
    backup_dir: Path | None = None
    _run_id: str = field(default="", init=False)
    _results: list[StepResult] = field(default_factory=list, init=False)

    def execute(self, plan: Plan, run_id: str, *, dry_run: bool) -> RunResult:
        """Run every step of plan as run_id (already created in the store)."""
        results = [self._initial(i, s) for i, s in enumerate(plan.steps)]
        self._run_id, self._results = run_id, results
        outputs: dict[str, Any] = {}
        run = RunResult(
            run_id=run_id,
            status=COMPLETED,
            agent=plan.agent,
            target=plan.target,
            dry_run=dry_run,
            plan_hash=plan.hash,
            steps=results,
        )
        conn = self.target.connect()
        ctx = ToolContext(
            conn=conn,
            dialect=self.target.dialect,
            target=self.target.name,
            dry_run=dry_run,
            backup_dir=self.backup_dir,
            run_id=run_id,
            quote_identifier=self.target.quote,
        )
        try:
            for step, result in zip(plan.steps, results, strict=True):
                self._step(step, result, outputs, ctx, dry_run)
                if result.status == "succeeded":
                    outputs[step.id] = result.output
        except _Stop as stop:
            run.status, run.error = stop.status, stop.error
        except KeyboardInterrupt:
            run.status, run.error = INTERRUPTED, "interrupted by the user"
            for result in results:
                if result.status == "running":
                    result.status, result.error = "failed", "interrupted by the user"
                    self.store.step_finished(run_id, result.index, "failed", error=result.error)
        finally:
            conn.close()
        if run.status == COMPLETED and any(r.status == "denied" for r in results):
            run.status = COMPLETED_WITH_DENIALS
        self.store.finish_run(run_id, run.status, run.error)
        return run

    def _initial(self, index: int, step: Step) -> StepResult:
        tool = self.registry.get(step.tool)
        verdict = safety.check(
            tool, self.agent.defaults.safety_level, self.target.config.environment
        )
        return StepResult(
            index=index,
            step_id=step.id,
            tool=step.tool,
            rationale=step.rationale,
            params=step.params,
            risk_level=tool.risk_level.value,
            requires_approval=verdict.requires_approval,
            reasons=list(verdict.reasons),
        )

    def _step(
        self,
        step: Step,
        result: StepResult,
        outputs: Mapping[str, Any],
        ctx: ToolContext,
        dry_run: bool,
    ) -> None:
        tool = self.registry.get(step.tool)
        impl = tool.implementation(self.target.dialect)
        run_id = self._run_id
        earlier = {r.step_id: r for r in self._results[: result.index]}
        blocked = None if step.always_run else self._blocked_by(step, earlier)
        absent = frozenset(
            sid
            for sid, r in earlier.items()
            if step.always_run and r.status in ("denied", "skipped")
        )
        if blocked:
            self._finish(result, "skipped", error=blocked)
            return
        unresolved = [
            r.step_id
            for r in find_references([step.params, step.condition])
            if r.step_id not in outputs and r.step_id not in absent
        ]
        if dry_run and unresolved:
            # Earlier steps were only previewed, so their outputs do not exist yet.
            offline = ToolContext(
                None, ctx.dialect, ctx.target, True, quote_identifier=ctx.quote_identifier
            )
            result.sql = impl.render_sql(step.params, offline)
            self._finish(result, "previewed")
            return
        try:
            if step.condition is not None and not substitute(
                step.condition, outputs, step.id, absent
            ):
                self._finish(result, "skipped", error=f"condition {step.condition} is empty")
                return
            resolved = substitute(step.params, outputs, step.id, absent)
            params = schema.with_defaults(resolved, tool.params)
            result.params = params
            problems = schema.validate(params, tool.params)
            if problems:
                raise TargetError(f"{step.id} ({tool.name}): " + "; ".join(problems))
            _check_identifiers(ctx.connection, tool, params, self.target.name)
            result.sql = impl.render_sql(params, ctx)
        except (SubstitutionError, TargetError) as exc:
            self._finish(result, "failed", error=str(exc))
            raise _Stop(FAILED, str(exc)) from None

        if dry_run:
            if _runs_in_dry_run(tool):
                self._run_tool(result, impl, params, ctx, tool)
            else:
                self._finish(result, "previewed")
            return

        if result.requires_approval:
            self._approve(step, result, tool, run_id)
            if result.status == "denied":
                return
        self._run_tool(result, impl, params, ctx, tool)
        if result.status == "failed":
            raise _Stop(FAILED, f"{step.id} ({tool.name}) failed: {result.error}")

    def _approve(self, step: Step, result: StepResult, tool: ToolDefinition, run_id: str) -> None:
        request = ApprovalRequest(
            run_id=run_id,
            target=self.target.name,
            environment=self.target.config.environment,
            step_index=result.index,
            step_id=step.id,
            tool=tool.name,
            description=tool.description,
            params=result.params,
            sql=result.sql,
            risk=result.risk_level,
            reasons=tuple(result.reasons),
            rationale=step.rationale,
        )
        answer = self.approver.decide(request)
        self.store.record_approval(
            run_id,
            result.index,
            answer.decision.value,
            answer.decided_by,
            answer.how,
            answer.reason,
        )
        result.approval = {
            "decision": answer.decision.value,
            "by": answer.decided_by,
            "how": answer.how,
            "reason": answer.reason,
        }
        if answer.decision is Decision.APPROVE:
            return
        if answer.decision is Decision.DENY:
            self._finish(result, "denied", error=f"denied by {answer.decided_by}")
            return
        if answer.decision is Decision.DEFER:
            self._finish(result, "waiting_approval", error="; ".join(result.reasons))
            raise _Stop(WAITING_APPROVAL, f"{step.id} ({tool.name}) is waiting for approval")
        self._finish(result, "denied", error=f"run stopped by {answer.decided_by}")
        raise _Stop(ABORTED, f"stopped by {answer.decided_by} at {step.id}")

    def _run_tool(
        self,
        result: StepResult,
        impl: Any,
        params: dict[str, Any],
        ctx: ToolContext,
        tool: ToolDefinition,
    ) -> None:
        limit = min(tool.max_execution_time, self.agent.defaults.max_execution_time)
        retries = self.agent.defaults.max_retries if tool.idempotent else 0
        run_id = self._run_id
        self.observer.step_started(result, 0)
        started = time.monotonic()
        for attempt in range(1, retries + 2):
            result.attempts = attempt
            result.status = "running"
            self.store.step_started(run_id, result.index, params, result.sql, attempt)
            try:
                with step_deadline(ctx.connection, limit, f"{result.step_id} ({tool.name})"):
                    output = impl.run(params, ctx)
            except AishellError as exc:  # StepTimeout and StepFailed among them
                _rollback(ctx.connection)
                self._finish(result, "failed", error=str(exc), started=started)
                return
            except DBAPIError as exc:
                _rollback(ctx.connection)
                message = _db_error(exc)
                if attempt <= retries and _transient(exc):
                    self.store.record_event(
                        run_id, result.index, "step_retry", {"attempt": attempt, "error": message}
                    )
                    time.sleep(self.agent.defaults.retry_backoff_seconds * 2 ** (attempt - 1))
                    continue
                self._finish(result, "failed", error=message, started=started)
                return
            except Exception as exc:  # a defect in a tool: the step fails, the run stops
                _rollback(ctx.connection)
                error = f"internal error in {tool.name}: {type(exc).__name__}: {exc}"
                self.store.record_event(
                    run_id, result.index, "internal_error", {"traceback": traceback.format_exc()}
                )
                self._finish(result, "failed", error=error, started=started)
                return
            # Keep in memory exactly what the store holds, so later steps see the same values.
            result.output = json.loads(dumps(output))
            self._finish(result, "succeeded", started=started)
            return

    def _finish(
        self,
        result: StepResult,
        status: str,
        *,
        error: str | None = None,
        started: float | None = None,
    ) -> None:
        result.status, result.error = status, error
        if started is not None:
            result.seconds = round(time.monotonic() - started, 3)
        self.store.step_finished(
            self._run_id,
            result.index,
            status,
            output=result.output,
            error=error,
            sql=result.sql,
            resolved_params=result.params,
        )
        self.observer.step_finished(result, 0)

    def _blocked_by(self, step: Step, done: Mapping[str, StepResult]) -> str | None:
        """Why a step cannot run because a step it needs was denied or skipped."""
        needed = [r.step_id for r in find_references([step.params, step.condition])]
        for dep in [*needed, *step.depends_on]:
            earlier = done.get(dep)
            if earlier is not None and earlier.status in ("denied", "skipped"):
                return f"it needs {dep}, which was {earlier.status}"
        return None


def _runs_in_dry_run(tool: ToolDefinition) -> bool:
    return tool.risk_level is RiskLevel.SAFE and tool.category is Category.ANALYSIS


def _check_identifiers(
    conn: Connection, tool: ToolDefinition, params: Mapping[str, Any], target: str
) -> None:
    """Names in params must exist in the target's catalog before any SQL is built."""
    for name, (kind, is_list) in schema.identifier_params(tool.params).items():
        if name not in params:
            continue
        values = params[name] if is_list else [params[name]]
        if kind == "table":
            check_tables(conn, target, values)
        elif kind == "column":
            for value in values:
                check_column(conn, params["table"], value)


def _rollback(conn: Connection) -> None:
    try:
        if conn.in_transaction():
            conn.rollback()
    except DBAPIError:
        pass


def _transient(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError) and any(
        marker in str(exc.orig).lower() for marker in _TRANSIENT_MARKERS
    )


def _db_error(exc: DBAPIError) -> str:
    text = str(exc.orig).strip() or type(exc.orig).__name__
    return text.splitlines()[0]
