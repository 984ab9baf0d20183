"""The step loop: policy, approval, substitution, execution with a deadline, checkpoint.

Every step's end is committed to the state store before the next step begins. A
resumed run starts from what the store holds: succeeded steps are never run again
and their outputs feed later steps as before.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aishell import schema
from aishell.approval import ApprovalRequest, Approver, Decision
from aishell.catalog import blocking_sessions, is_lock_timeout
from aishell.config import AgentConfig
from aishell.errors import (
    AishellError,
    StatementRefused,
    StepInterrupted,
    StepSkipped,
    TargetError,
    TargetUnreachable,
)
from aishell.guard import Guard, shapes_for
from aishell.plan import Plan, Step
from aishell.policy import Confirmation, SafetyPolicy, StepFacts, Verdict, gather_facts
from aishell.registry import (
    Category,
    Implementation,
    Registry,
    RiskLevel,
    ToolContext,
    ToolDefinition,
)
from aishell.scratch import Ledger
from aishell.sqltext import display
from aishell.state import StateStore, dumps
from aishell.substitution import find_references, substitute
from aishell.targets import (
    Target,
    check_column,
    check_tables,
    interrupt,
    is_transient,
    row_estimate,
    session_access,
    step_deadline,
    table_bytes,
    user_tables,
)

# Run outcomes.
COMPLETED = "completed"
COMPLETED_WITH_DENIALS = "completed_with_denials"
DENIED = "denied"
FAILED = "failed"
WAITING_APPROVAL = "waiting_approval"
OUT_OF_WINDOW = "out_of_window"
ABORTED = "aborted"
INTERRUPTED = "interrupted"
RUN_STATUSES = (
    "running",
    COMPLETED,
    COMPLETED_WITH_DENIALS,
    DENIED,
    FAILED,
    WAITING_APPROVAL,
    OUT_OF_WINDOW,
    ABORTED,
    INTERRUPTED,
)

# Step states a resumed run keeps as they are.
FINAL_STEP_STATES = ("succeeded", "denied", "skipped")
# Tries at a new connection after the server dropped ours, with doubling waits.
RECONNECT_ATTEMPTS = 4


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step_id": self.step_id,
            "tool": self.tool,
            "rationale": self.rationale,
            "params": self.params,
            "risk_level": self.risk_level,
            "requires_approval": self.requires_approval,
            "confirmation": self.confirmation,
            "reasons": self.reasons,
            "personal": self.personal,
            "mitigations": self.mitigations,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "sql": self.sql,
            "estimate": self.estimate,
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
    safety_level: str
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
            "safety_level": self.safety_level,
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


class _Interrupted(BaseException):
    """SIGINT or SIGTERM between statements: like KeyboardInterrupt, never swallowed."""


class _Stop(Exception):
    """Ends the step loop with a run status."""

    def __init__(self, status: str, error: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Executor:
    registry: Registry
    store: StateStore
    target: Target
    agent: AgentConfig
    approver: Approver
    observer: Observer = field(default_factory=_Silent)
    backup_dir: Path | None = None
    safety_level: str | None = None
    clock: Callable[[], datetime] = _utc_now
    # Opens another configured target read-only (a replica a purge watches).
    open_target: Callable[[str], Connection] | None = None
    # The run's time limit in seconds, and the setting it comes from.
    run_limit: tuple[float, str] | None = None
    _run_id: str = field(default="", init=False)
    _plan: Plan | None = field(default=None, init=False)
    _results: list[StepResult] = field(default_factory=list, init=False)
    _positions: dict[str, int] = field(default_factory=dict, init=False)
    _signal: str | None = field(default=None, init=False)
    # The target's tables, read once and again after any step that may change them.
    _tables: list[str] | None = field(default=None, init=False)
    _running: Connection | None = field(default=None, init=False)

    @property
    def policy(self) -> SafetyPolicy:
        return SafetyPolicy(
            safety_level=self.safety_level or self.agent.defaults.safety_level,
            environment=self.target.config.environment,
            target=self.target.name,
            constraints=self.agent.constraints,
        )

    def execute(
        self,
        plan: Plan,
        run_id: str,
        *,
        dry_run: bool,
        prior: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> RunResult:
        """Run plan as run_id (already in the store); `prior` holds stored step states."""
        results = [self._initial(i, s) for i, s in enumerate(plan.steps)]
        self._run_id, self._plan, self._results = run_id, plan, results
        self._positions = {r.step_id: r.index for r in results}
        outputs: dict[str, Any] = {}
        waiting: set[str] = set()
        run = RunResult(
            run_id=run_id,
            status=COMPLETED,
            agent=plan.agent,
            target=plan.target,
            dry_run=dry_run,
            plan_hash=plan.hash,
            safety_level=self.policy.safety_level,
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
        ctx.should_stop = lambda: self._stop_reason() is not None
        ctx.backup_catalog = lambda: self.store.list_backups(self.target.name)
        ctx.scratch = Ledger(self.store, run_id, self.target.name)
        if not dry_run:
            # What runs killed before they could clean up left behind goes first.
            ctx.scratch.clean_dead(self.target.engine)
        try:
            with self._signals(), self._time_limit():
                for step, result in zip(plan.steps, results, strict=True):
                    stored = (prior or {}).get(result.index)
                    if stored is not None and stored["status"] in FINAL_STEP_STATES:
                        _restore(result, stored)
                    else:
                        reason = self._stop_reason()
                        if reason:
                            raise _Stop(INTERRUPTED, reason)
                        self._step(step, result, outputs, waiting, ctx, dry_run, stored)
                    if result.status == "succeeded" or (
                        # What a step the server skipped found; only a step that runs
                        # regardless of its references (the report) ever reads it.
                        result.status == "skipped" and result.output is not None
                    ):
                        outputs[step.id] = result.output
        except _Stop as stop:
            run.status, run.error = stop.status, stop.error
        except (KeyboardInterrupt, _Interrupted):
            who = self._signal or "SIGINT"
            run.status, run.error = INTERRUPTED, f"interrupted by {who}"
            for result in results:
                if result.status == "running":
                    self._finish(result, "interrupted", error=f"interrupted by {who}")
        except DBAPIError as exc:
            # The server failed between a step's statements (its checks, its measuring):
            # nothing of that step ran, and resume starts it again.
            run.status, run.error = (
                FAILED,
                (
                    f"target '{self.target.name}': {_db_error(exc)}; "
                    f"`aishell resume {run_id}` once the server answers"
                ),
            )
        except Exception as exc:
            run.status, run.error = FAILED, f"internal error: {type(exc).__name__}: {exc}"
            self.store.finish_run(run_id, run.status, run.error)
            raise
        finally:
            if ctx.conn is not None:
                with suppress(SQLAlchemyError):
                    ctx.conn.close()
        if run.status == COMPLETED:
            run.status, run.error = _outcome(results)
        self.store.finish_run(run_id, run.status, run.error)
        return run

    def _stop_reason(self) -> str | None:
        if self._signal:
            return f"interrupted by {self._signal}; continue with `aishell resume {self._run_id}`"
        who = self.store.stop_requested(self._run_id)
        if who:
            return (
                f"stopped by {who} with `aishell stop`; "
                f"continue with `aishell resume {self._run_id}`"
            )
        return None

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM: no new step starts; a running statement is cancelled.

        Python runs a signal handler only between bytecodes of the main thread, never
        while a driver's C call blocks it. The C-level handler still writes the signal
        number to the wakeup fd at once, so a watcher thread reads it there and cancels
        the running statement; the Python handler then sees the cancelled step.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: Any) -> None:
            self._signal = signal.Signals(signum).name
            if self._running is None:
                raise _Interrupted(self._signal)

        reader, writer = socket.socketpair()
        writer.setblocking(False)
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                try:
                    data = reader.recv(16)
                except OSError:
                    return
                if not data or stop.is_set():
                    return
                self._signal = self._signal or signal.Signals(data[-1]).name
                running = self._running
                if running is not None:
                    interrupt(running)

        watcher = threading.Thread(target=watch, name="aishell-signals", daemon=True)
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        watcher.start()
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            signal.set_wakeup_fd(previous_fd)
            stop.set()
            writer.close()
            reader.close()
            watcher.join(1)

    @contextmanager
    def _time_limit(self) -> Iterator[None]:
        """Past the run's time limit the run stops as on SIGTERM: the running statement
        is cancelled, the step ends interrupted, and `aishell resume` goes on."""
        if self.run_limit is None:
            yield
            return
        seconds, setting = self.run_limit

        def reached() -> None:
            self._signal = self._signal or f"the run-time limit of {seconds:g}s ({setting})"
            running = self._running
            if running is not None:
                interrupt(running)

        timer = threading.Timer(seconds, reached)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _initial(self, index: int, step: Step) -> StepResult:
        tool = self.registry.get(step.tool)
        return StepResult(
            index=index,
            step_id=step.id,
            tool=step.tool,
            rationale=step.rationale,
            params=step.params,
            risk_level=tool.risk_level.value,
        )

    # --- one step ----------------------------------------------------------------------

    def _step(
        self,
        step: Step,
        result: StepResult,
        outputs: Mapping[str, Any],
        waiting: set[str],
        ctx: ToolContext,
        dry_run: bool,
        stored: Mapping[str, Any] | None,
    ) -> None:
        tool = self.registry.get(step.tool)
        impl = tool.implementation(self.target.dialect)
        ctx.step_cache = {}
        needed = [r.step_id for r in find_references([step.params, step.condition])]
        needed += list(step.depends_on)
        earlier = _Earlier(self._results, result.index, self._positions)

        held = sorted({dep for dep in needed if dep in waiting})
        if held:
            # It needs a step that has not run yet; it waits with it.
            waiting.add(step.id)
            result.error = f"waits for {', '.join(held)}"
            self.store.set_step_status(self._run_id, result.index, "pending", result.error)
            return
        absent: frozenset[str] = frozenset()
        if step.always_run:
            absent = frozenset(
                d for d in needed if d in earlier and earlier[d].status in ("denied", "skipped")
            )
        else:
            for dep in needed:
                if dep in earlier and earlier[dep].status in ("denied", "skipped"):
                    self._finish(
                        result, "skipped", error=f"it needs {dep}, which was {earlier[dep].status}"
                    )
                    return
        unresolved = [d for d in needed if d not in outputs and d not in absent and d in earlier]
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
            if self._tables is None:
                self._tables = user_tables(ctx.connection)
            _check_identifiers(ctx.connection, tool, params, self.target.name, self._tables)
            # Measuring to decide what to run (pgstatindex, dbstat) sends statements too:
            # they are audited as attempt 0 of the step, and may only read.
            label = f"{step.id} ({tool.name})"
            with self._audited(ctx.connection, result.index, 0, Guard(label=label)):
                rendered = impl.render_sql(params, ctx)
                result.sql = [display(sql) for sql in rendered]
                if dry_run or tool.risk_level is not RiskLevel.SAFE:
                    # Every check the tool makes of its effect comes before the policy
                    # and any prompt: a step that cannot run is refused before a yes.
                    result.estimate = estimate_effect(tool, impl, params, ctx)
            verdict = self.policy.check(self._facts(tool, params, ctx, earlier))
        except AishellError as exc:
            self._finish(result, "failed", error=str(exc))
            raise _Stop(FAILED, str(exc)) from None
        _apply_verdict(result, verdict)

        if dry_run:
            if _runs_in_dry_run(tool):
                self._run_tool(result, impl, params, ctx, tool, rendered)
            else:
                self._finish(result, "previewed")
            return

        if verdict.defer:
            waiting.add(step.id)
            self._finish(result, "deferred", error=verdict.defer)
            return
        if stored is not None and stored["status"] in ("running", "interrupted", "failed"):
            if not self._recover(step, result, tool, impl, params, ctx, stored["status"]):
                waiting.add(step.id)
                return
            if result.status == "succeeded":
                return
        approved_before = stored is not None and stored["status"] == "approved"
        if verdict.requires_approval and not approved_before:
            decision = self._approve(step, result, tool)
            if decision is Decision.DEFER:
                waiting.add(step.id)
                return
            if decision is Decision.DENY:
                return
        elif verdict.confirmation is Confirmation.NOTIFY:
            self.store.record_event(
                self._run_id,
                result.index,
                "notify",
                {"tool": tool.name, "risk_level": tool.risk_level.value, "params": params},
            )
        self._run_tool(result, impl, params, ctx, tool, rendered)
        if result.status == "failed":
            raise _Stop(FAILED, f"{step.id} ({tool.name}) failed: {result.error}")

    def _recover(
        self,
        step: Step,
        result: StepResult,
        tool: ToolDefinition,
        impl: Implementation,
        params: dict[str, Any],
        ctx: ToolContext,
        was: str,
    ) -> bool:
        """A step that failed, or was running when its process died: run it again?

        The server may have committed its work after the client died, so the tool
        looks for its effect first. Returns False when a person has to decide.
        """
        with self._audited(ctx.connection, result.index, 0, Guard(label=step.id)):
            done = impl.check_done(params, ctx)
        self.store.record_event(
            self._run_id, result.index, "in_doubt", {"was": was, "effect_found": done}
        )
        if done:
            result.output = {"recovered": True, "note": f"its effect was found after it {was}"}
            self._finish(result, "succeeded")
            return True
        if done is False or tool.idempotent:
            return True
        self._finish(
            result,
            "waiting_approval",
            error=(
                f"it {'was running when its process stopped' if was != 'failed' else 'failed'}, "
                f"its effect is unknown and {tool.name} is not idempotent; check the database, "
                f"then `aishell approve {self._run_id} --step {result.index}` to run it again, "
                "or --mark-done / --skip"
            ),
        )
        return False

    def _facts(
        self,
        tool: ToolDefinition,
        params: Mapping[str, Any],
        ctx: ToolContext,
        earlier: Mapping[str, StepResult],
    ) -> StepFacts:
        backup_in_run = any(
            r.status == "succeeded" and self.registry.get(r.tool).category is Category.BACKUP
            for r in earlier.values()
        )
        return gather_facts(
            self.policy,
            tool,
            params,
            ctx.connection,
            effect=ctx.step_cache.get("estimate"),
            now=self.clock(),
            store=self.store,
            backup_in_run=backup_in_run,
        )

    def _approve(self, step: Step, result: StepResult, tool: ToolDefinition) -> Decision:
        plan = self._plan
        request = ApprovalRequest(
            run_id=self._run_id,
            target=self.target.name,
            environment=self.target.config.environment,
            step_index=result.index,
            step_id=step.id,
            tool=tool.name,
            description=tool.description,
            params=result.params,
            sql=result.sql,
            risk=result.risk_level,
            confirmation=result.confirmation,
            reasons=tuple(result.reasons),
            risks=tool.risks,
            mitigations=tuple(result.mitigations),
            personal=tuple(result.personal),
            estimate=result.estimate or {},
            rationale=step.rationale,
            plan=tuple(
                (s.id, s.tool, _subject_of(s.params), self.registry.get(s.tool).risk_level.value)
                for s in (plan.steps if plan else ())
            ),
        )
        answer = self.approver.decide(request)
        self.store.record_approval(
            self._run_id,
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
        if answer.decision is Decision.DENY:
            self._finish(result, "denied", error=f"denied by {answer.decided_by}: {answer.reason}")
        elif answer.decision is Decision.DEFER:
            if result.personal:
                # `aishell approve RUN` alone will not cover it; the store says why.
                self.store.record_event(
                    self._run_id,
                    result.index,
                    "named_approval_needed",
                    {"reasons": result.personal},
                )
            self._finish(result, "waiting_approval", error="; ".join(result.reasons))
        elif answer.decision is Decision.QUIT:
            self._finish(result, "denied", error=f"run stopped by {answer.decided_by}")
            raise _Stop(ABORTED, f"stopped by {answer.decided_by} at {step.id}")
        return answer.decision

    def _run_tool(
        self,
        result: StepResult,
        impl: Implementation,
        params: dict[str, Any],
        ctx: ToolContext,
        tool: ToolDefinition,
        rendered: list[str],
    ) -> None:
        limit = min(tool.max_execution_time, self.agent.defaults.max_execution_time)
        retries = 0
        if tool.idempotent:
            retries = self.agent.defaults.max_retries
            if tool.max_retries is not None:
                retries = min(retries, tool.max_retries)
        run_id = self._run_id
        self._long_step_hooks(result, tool, ctx)
        self.observer.step_started(result, len(self._results))
        started = time.monotonic()
        for attempt in range(1, retries + 2):
            result.attempts = attempt
            result.status = "running"
            self.store.step_started(
                run_id, result.index, params, result.sql, attempt, durable=False
            )
            label = f"{result.step_id} ({tool.name})"
            ctx.deadline = time.monotonic() + limit
            # The tool's effective risk says whether it may write at all; what it may
            # write is what it rendered (shown, checked, approved) and its declared shapes.
            writes = tool.risk_level is not RiskLevel.SAFE
            guard = Guard(
                shapes=shapes_for(
                    impl.sql_templates, rendered, ctx.connection, _identifiers(tool, params, ctx)
                )
                if writes
                else (),
                writes=writes,
                label=label,
            )
            try:
                try:
                    session_access(ctx.connection, not writes, self.target.read_only)
                    with (
                        step_deadline(ctx.connection, limit, label),
                        self._audited(ctx.connection, result.index, attempt, guard),
                    ):
                        output = impl.run(params, ctx)
                except Exception as exc:
                    stopped = isinstance(exc, StepInterrupted) and self._stop_reason()
                    if self._signal or stopped:  # whatever the tool raised, this is why
                        _rollback(ctx.connection)
                        self._finish(
                            result,
                            "interrupted",
                            error=str(exc) if stopped else f"interrupted by {self._signal}",
                            started=started,
                        )
                        raise _Stop(INTERRUPTED, self._stop_reason()) from exc
                    raise
            except _Stop:
                raise
            except StepSkipped as exc:
                # Whatever it did is committed (each tool commits its own work); the
                # server declined the rest, and the status says so.
                result.output = json.loads(dumps(exc.details)) if exc.details else None
                self._finish(result, "skipped", error=str(exc), started=started)
                return
            except AishellError as exc:  # StepTimeout and StepFailed among them
                _rollback(ctx.connection)
                self._record_effects(getattr(exc, "details", None) or {})
                self._finish(result, "failed", error=str(exc), started=started)
                return
            except DBAPIError as exc:
                _rollback(ctx.connection)
                message = _db_error(exc)
                if attempt <= retries and is_transient(exc):
                    delay = self.agent.defaults.retry_backoff_seconds * 2 ** (attempt - 1)
                    delay *= random.uniform(0.5, 1.5)  # jitter: retries of many runs spread out
                    self.store.record_event(
                        run_id,
                        result.index,
                        "step_retry",
                        {"attempt": attempt, "error": message, "delay_seconds": round(delay, 3)},
                    )
                    time.sleep(delay)
                    if exc.connection_invalidated and not self._reconnect(ctx, result, message):
                        self._finish(
                            result,
                            "failed",
                            error=f"lost the connection to target '{self.target.name}' "
                            f"({message}) and could not reconnect; `aishell resume "
                            f"{run_id}` once the server is back",
                            started=started,
                        )
                        return
                    continue
                if exc.connection_invalidated:
                    message = (
                        f"lost the connection to target '{self.target.name}': {message}; "
                        f"`aishell resume {run_id}` once the server is back"
                    )
                if is_lock_timeout(exc):
                    # aishell never cancels other sessions; it names them.
                    _rollback(ctx.connection)
                    holders = blocking_sessions(ctx.connection, tool.tables_in(params))
                    message += f"; after {attempt} attempt(s) the lock was still held by " + (
                        "; ".join(holders) if holders else "a session that has since gone"
                    )
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
            if tool.risk_level is not RiskLevel.SAFE:
                self._tables = None  # it may have created or dropped one
            self._record_effects(output)
            # Keep in memory exactly what the store holds, so later steps see the same values.
            result.output = json.loads(dumps(output))
            self._finish(result, "succeeded", started=started)
            return

    def _reconnect(self, ctx: ToolContext, result: StepResult, message: str) -> bool:
        """A new connection after the server dropped ours (a restart, a failover): tried a
        few times with backoff, since a restarting server refuses connections a while."""
        if ctx.conn is not None:
            with suppress(SQLAlchemyError):
                ctx.conn.close()
            ctx.conn = None
        delay = self.agent.defaults.retry_backoff_seconds
        for _ in range(RECONNECT_ATTEMPTS):
            try:
                ctx.conn = self.target.connect()
                return True
            except TargetUnreachable as exc:
                self.store.record_event(
                    self._run_id, result.index, "reconnect_failed", {"error": str(exc)}
                )
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay *= 2
        return False

    def _long_step_hooks(self, result: StepResult, tool: ToolDefinition, ctx: ToolContext) -> None:
        """What a long step (a purge) uses to checkpoint, report and budget itself."""
        run_id, index = self._run_id, result.index
        # Read only by the tools that checkpoint: one query less for every other step.
        ctx.load_progress = lambda: self.store.get_progress(run_id, index)
        ctx.save_progress = lambda progress: self.store.save_progress(run_id, index, progress)
        ctx.record_event = lambda kind, data: self.store.record_event(run_id, index, kind, data)
        report = getattr(self.observer, "step_progress", None)
        ctx.report = (lambda figures: report(result, figures)) if report else (lambda _f: None)
        now = self.clock()
        ctx.ends_at = self.policy.window_closes(tool, now)
        ctx.seconds_left = None if ctx.ends_at is None else (ctx.ends_at - now).total_seconds()
        ctx.open_target = self.open_target

    def _record_effects(self, output: Mapping[str, Any]) -> None:
        """Backups a step made, and validations it ran, go into the backup catalog."""
        record = output.get("backup_record")
        if record:
            self.store.record_backup(target=self.target.name, run_id=self._run_id, **record)
        verified = output.get("verified_backup")
        if verified:
            self.store.backup_verified(verified["path"], verified, bool(verified["ok"]))
        for path in output.get("deleted_backups") or []:
            self.store.backup_deleted(path)

    @contextmanager
    def _audited(self, conn: Connection, index: int, attempt: int, guard: Guard) -> Iterator[None]:
        """Every statement the tool sends passes the guard, is recorded before it runs and
        completed after; a refused one is recorded with why, and never sent."""
        open_ids: list[int] = []
        dialect, paramstyle = self.target.dialect, conn.dialect.paramstyle

        def before(_c: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if self._signal:  # no new statement once SIGINT or SIGTERM came
                raise StepInterrupted(f"interrupted by {self._signal}")
            why = guard.check(statement, cursor, dialect, paramstyle)
            if why is not None:
                guard.refused.append(why)
                refused = self.store.statement_started(
                    self._run_id, index, attempt, statement, parameters
                )
                self.store.statement_finished(refused, None, f"refused by the guard: {why}")
                raise StatementRefused(f"{guard.label}: statement refused: {why}")
            open_ids.append(
                self.store.statement_started(self._run_id, index, attempt, statement, parameters)
            )

        def after(_c: Any, cursor: Any, *_: Any) -> None:
            rows = cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else None
            self.store.statement_finished(open_ids.pop(), rows, None)

        event.listen(conn, "before_cursor_execute", before)
        event.listen(conn, "after_cursor_execute", after)
        self._running = conn
        try:
            yield
        except BaseException as exc:
            for statement_id in open_ids:
                self.store.statement_finished(statement_id, None, _error_text(exc))
            raise
        finally:
            self._running = None
            event.remove(conn, "before_cursor_execute", before)
            event.remove(conn, "after_cursor_execute", after)
        guard.raise_if_refused()

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
        self.observer.step_finished(result, len(self._results))


class _Earlier(Mapping[str, StepResult]):
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


def _restore(result: StepResult, stored: Mapping[str, Any]) -> None:
    result.status = stored["status"]
    result.output = stored["output"]
    result.error = stored["error"]
    result.params = stored["params"]
    result.sql = stored["sql"] or []
    result.attempts = stored["attempts"]


def _apply_verdict(result: StepResult, verdict: Verdict) -> None:
    result.requires_approval = verdict.requires_approval
    result.confirmation = verdict.confirmation.value
    result.reasons = list(verdict.reasons)
    result.personal = list(verdict.personal)
    result.mitigations = list(verdict.mitigations)


def _outcome(results: list[StepResult]) -> tuple[str, str | None]:
    """The run's status from its steps, once the loop went through all of them."""
    statuses = [r.status for r in results]
    if "waiting_approval" in statuses:
        left = [r.step_id for r in results if r.status in ("waiting_approval", "pending")]
        return WAITING_APPROVAL, f"waiting for approval: {', '.join(left)}"
    if "deferred" in statuses:
        left = [r for r in results if r.status in ("deferred", "pending")]
        why = next(r.error for r in left if r.status == "deferred")
        return OUT_OF_WINDOW, f"{len(left)} step(s) left for later: {why}"
    if "denied" in statuses:
        changed = any(r.status == "succeeded" and r.risk_level != "safe" for r in results)
        return (COMPLETED_WITH_DENIALS if changed else DENIED), None
    return COMPLETED, None


def _runs_in_dry_run(tool: ToolDefinition) -> bool:
    return tool.risk_level is RiskLevel.SAFE and tool.category is Category.ANALYSIS


def subject(tables: tuple[str, ...]) -> str | None:
    """How a step's tables key the history of durations."""
    return ",".join(tables) if tables else None


def _subject_of(params: Mapping[str, Any]) -> str:
    table = params.get("table")
    if isinstance(table, str):
        return table
    tables = params.get("tables")
    return ", ".join(tables) if isinstance(tables, list) else str(tables or "")


def estimate_effect(
    tool: ToolDefinition, impl: Implementation, params: Mapping[str, Any], ctx: ToolContext
) -> dict[str, Any]:
    """What the step would touch: rows and bytes of its tables, and the tool's own figures."""
    if "estimate" not in ctx.step_cache:
        ctx.step_cache["estimate"] = _measure_effect(tool, impl, params, ctx)
    return dict(ctx.step_cache["estimate"])


def _measure_effect(
    tool: ToolDefinition, impl: Implementation, params: Mapping[str, Any], ctx: ToolContext
) -> dict[str, Any]:
    conn = ctx.connection
    estimate: dict[str, Any] = {
        "tables": {
            t: {"rows": row_estimate(conn, t), "bytes": table_bytes(conn, t)}
            for t in tool.tables_in(params)
        }
    }
    extra = getattr(impl, "estimate", None)
    if callable(extra):
        estimate.update(extra(params, ctx))
    return estimate


def _identifiers(
    tool: ToolDefinition, params: Mapping[str, Any], ctx: ToolContext
) -> dict[str, str]:
    """The step's names of database objects, quoted, for its tool's statement shapes."""
    return {
        name: ctx.quote(params[name])
        for name, (_kind, is_list) in schema.identifier_params(tool.params).items()
        if not is_list and isinstance(params.get(name), str)
    }


def _check_identifiers(
    conn: Connection,
    tool: ToolDefinition,
    params: Mapping[str, Any],
    target: str,
    tables: list[str],
) -> None:
    """Names in params must exist in the target's catalog before any SQL is built."""
    for name, (kind, is_list) in schema.identifier_params(tool.params).items():
        if name not in params:
            continue
        values = params[name] if is_list else [params[name]]
        if kind == "table":
            check_tables(conn, target, values, known=tables)
        elif kind == "column":
            for value in values:
                check_column(conn, params["table"], value)


def _rollback(conn: Connection) -> None:
    # Unconditionally: after a failed COMMIT in_transaction() is False, yet the
    # connection still needs its rollback before it takes another statement.
    with suppress(SQLAlchemyError):
        conn.rollback()


def _error_text(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__


def _db_error(exc: DBAPIError) -> str:
    # A tool adds notes to a server error to say what it did about it (leftovers dropped).
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
    args = getattr(exc.orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        return f"{args[1]} (error {args[0]}){notes}"
    text = str(exc.orig).strip() or type(exc.orig).__name__
    return text.splitlines()[0] + notes
