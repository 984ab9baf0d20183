"""The step loop: each step in turn by the rules in step.py, then the run's outcome.

Every step's end is committed to the state store before the next step begins. A
resumed run starts from what the store holds: succeeded steps are never run again
and their outputs feed later steps as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from aishell.config.models import AgentConfig, MaintenanceWindow
from aishell.errors import AishellError
from aishell.executor.context import RunContext
from aishell.executor.failures import db_error
from aishell.executor.parallel import Member, run_group
from aishell.executor.requested import watch_requests
from aishell.executor.results import Observer, RunResult, SilentObserver, StepResult, outcome
from aishell.executor.resume import is_final, restore
from aishell.executor.retry import lock_held_by
from aishell.executor.statuses import COMPLETED, FAILED, INTERRUPTED
from aishell.executor.step import run_step
from aishell.executor.stopping import Interrupted, Stop, Stopping
from aishell.files import PrivatePlaces
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import Approver
from aishell.policy.drafted import AgentRules, drafted_by_model, drafted_policy
from aishell.policy.rules import SafetyPolicy
from aishell.registry import Registry
from aishell.scratch.ledger import Ledger
from aishell.state.store import StateStore
from aishell.targets.engines import Target
from aishell.targets.limits import TargetSilent
from aishell.targets.lockholders import is_lock_timeout
from aishell.targets.locks import RunLock, heartbeat
from aishell.tool.context import ToolContext
from aishell.tool.readings import TableReadings


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _keep_output(outputs: dict[str, Any], step: Step, result: StepResult) -> None:
    """What later steps may read of the step: its output, once it succeeded."""
    if result.status == "succeeded" or (
        # What a step the server skipped found; only a step that runs
        # regardless of its references (the report) ever reads it.
        result.status == "skipped" and result.output is not None
    ):
        outputs[step.id] = result.output


@dataclass
class Executor:
    """Runs a plan's steps on one target, each under the safety policy and its approvals."""

    registry: Registry
    store: StateStore
    target: Target
    agent: AgentConfig
    approver: Approver
    observer: Observer = field(default_factory=SilentObserver)
    backup_dir: Path | None = None
    private: PrivatePlaces = field(default_factory=PrivatePlaces)
    safety_level: str | None = None
    clock: Callable[[], datetime] = _utc_now
    # Opens another configured target read-only (a replica a purge watches).
    open_target: Callable[[str], Connection] | None = None
    # The run's time limit in seconds, and the setting it comes from.
    run_limit: tuple[float, str] | None = None
    # When the run began (time.monotonic()): its time limit counts from there, planning
    # included. None: from the first step.
    run_started: float | None = None
    # The run's lock on the target's database, watched while the run lasts.
    run_lock: RunLock | None = None
    # --ignore-window: a person lifted the maintenance window for this run (and only it).
    ignore_window: bool = False
    # Every configured agent's tools and constraints, read when a model drafted the
    # plan: its steps are judged by those of every agent that plans their tools too.
    agent_rules: Callable[[], Sequence[AgentRules]] | None = None
    # Signals, the time limit, `aishell stop` and the run lock: what may stop the run.
    _stopping: Stopping = field(init=False)

    def __post_init__(self) -> None:
        self._stopping = Stopping(
            self.store, self.target.name, self.run_lock, engine=self.target.engine
        )

    @property
    def policy(self) -> SafetyPolicy:
        return SafetyPolicy(
            safety_level=self.safety_level or self.agent.defaults.safety_level,
            environment=self.target.config.environment,
            target=self.target.name,
            constraints=self._kept(self.agent.constraints),
        )

    def _kept(self, constraints: Sequence[Any]) -> list[Any]:
        """The constraints this run is held to: a window lifted, without it."""
        return [
            c for c in constraints if not (self.ignore_window and isinstance(c, MaintenanceWindow))
        ]

    def policy_of(self, plan: Plan) -> SafetyPolicy:
        """The policy the plan's steps are judged by: the agent's, and for a model's
        draft, each step's also by every agent that plans its tool (policy/drafted.py)."""
        if self.agent_rules is None or not drafted_by_model(plan):
            return self.policy
        agents = [
            replace(a, constraints=tuple(self._kept(a.constraints))) for a in self.agent_rules()
        ]
        return drafted_policy(self.policy, plan, agents)

    def execute(
        self,
        plan: Plan,
        run_id: str,
        *,
        dry_run: bool,
        prior: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> RunResult:
        """Run plan as run_id (already in the store); `prior` holds stored step states."""
        run = self._context(plan, run_id, dry_run)
        run_result = RunResult(
            run_id=run_id,
            status=COMPLETED,
            agent=plan.agent,
            target=plan.target,
            dry_run=dry_run,
            plan_hash=plan.hash,
            safety_level=run.policy.safety_level,
            steps=run.results,
        )
        ctx, watch = self._opened(run_id, dry_run)
        try:
            with (
                self._stopping.known(),
                self._stopping.signals(),
                self._stopping.time_limit(self.run_limit, self.run_started),
                self._stopping.lease(),
                watch_requests(self._stopping, self.store),
            ):
                self._steps(run, ctx, prior or {})
        except Stop as stop:
            run_result.status, run_result.error = stop.status, stop.error
        except (KeyboardInterrupt, Interrupted):
            who = self._stopping.signal or "SIGINT"
            run_result.status, run_result.error = INTERRUPTED, f"interrupted by {who}"
            for result in run.results:
                if result.status == "running":
                    run.finish(result, "interrupted", error=f"interrupted by {who}")
        except DBAPIError as exc:
            if (stopped := self._stopping.reason()) is not None:
                # The server's error came of the stop (a cancel, a closed connection).
                run_result.status, run_result.error = INTERRUPTED, stopped
            else:
                run_result.status, run_result.error = FAILED, self._between(exc, ctx, run_id)
        except Exception as exc:
            run_result.status = FAILED
            run_result.error = f"internal error: {type(exc).__name__}: {exc}"
            self.store.finish_run(run_id, run_result.status, run_result.error)
            raise
        finally:
            if watch is not None:
                watch.release()
                self._stopping.run_lock = self.run_lock
            if ctx.conn is not None:
                with suppress(SQLAlchemyError):
                    ctx.conn.close()
        if run_result.status == COMPLETED:
            run_result.status, run_result.error = outcome(run.results)
        self.store.finish_run(run_id, run_result.status, run_result.error)
        return run_result

    def _opened(self, run_id: str, dry_run: bool) -> tuple[ToolContext, RunLock | None]:
        """The tools' connection and the liveness watch; a target that fails them (no
        answer, refused) ends the run, already in the store, before any step: failed,
        saying how to go on, rather than left `running` for good."""
        ctx: ToolContext | None = None
        try:
            # The run's time limit holds its first connects too, to a silent server's.
            with self._stopping.time_limit(self.run_limit, self.run_started):
                ctx = self._tool_context(run_id, dry_run)
                return ctx, self._liveness()
        except BaseException as exc:
            if ctx is not None and ctx.conn is not None:
                with suppress(SQLAlchemyError):
                    ctx.conn.close()
            status = INTERRUPTED if isinstance(exc, KeyboardInterrupt | Interrupted) else FAILED
            said = str(exc) or type(exc).__name__
            error = f"{said}; no step ran: `aishell resume {run_id}` once the target answers"
            if (stopped := self._stopping.reason()) is not None:
                status, error = INTERRUPTED, f"{stopped}; no step ran ({said})"
            self.store.finish_run(run_id, status, error)
            if isinstance(exc, TargetSilent):
                exc.message = error
            elif isinstance(exc, AishellError):
                exc.args = (error,)
            raise

    def _liveness(self) -> RunLock | None:
        """A run without the run lock (a dry run) on a server is watched all the same:
        a server that stops answering stops it within read_timeout_seconds, as a lost
        lock's silence does, instead of each statement waiting out its step's limit."""
        if self.run_lock is not None or self.target.dialect == "sqlite":
            return None
        watch = heartbeat(self.target.connect, float(self.target.config.read_timeout_seconds))
        self._stopping.run_lock = watch
        return watch

    def _between(self, exc: DBAPIError, ctx: ToolContext, run_id: str) -> str:
        """The run's error when the server failed between a step's statements (its
        checks, its measuring): nothing of that step ran, and resume starts it again."""
        when = "once the server answers"
        if not exc.connection_invalidated and not isinstance(exc, OperationalError):
            # The server answered, refusing a statement: waiting for it changes nothing.
            when = "once what the server refused is put right"
        if is_lock_timeout(exc):
            when = "once the lock is released"
            held = lock_held_by(ctx, exc) if ctx.conn is not None else ""
            if held:
                exc.add_note("the lock was held" + held)
        return f"target '{self.target.name}': {db_error(exc)}; `aishell resume {run_id}` {when}"

    def _steps(
        self, run: RunContext, ctx: ToolContext, prior: Mapping[int, Mapping[str, Any]]
    ) -> None:
        """Each step in plan order, a parallel group's at once (parallel.py); a stop
        asked for meanwhile ends the loop before the next step that would run."""
        outputs: dict[str, Any] = {}
        waiting: set[str] = set()
        pairs = list(zip(run.plan.steps, run.results, strict=True))
        # What an earlier go finished is the run's whatever this go reaches: a go that
        # stops (a failure, a stop) before a step done earlier reports it as stored.
        for result in run.results:
            done = prior.get(result.index)
            if done is not None and is_final(done):
                restore(result, done)
        at = 0
        while at < len(pairs):
            step, result = pairs[at]
            if step.parallel_group:
                end = at
                while end < len(pairs) and pairs[end][0].parallel_group == step.parallel_group:
                    end += 1
                members = [Member(s, r, prior.get(r.index)) for s, r in pairs[at:end]]
                slots = self.agent.defaults.max_parallel_steps
                connect = self.target.connect_apart
                run_group(run, members, outputs, waiting, ctx, connect, slots)
                for s, r in pairs[at:end]:
                    _keep_output(outputs, s, r)
                at = end
                continue
            stored = prior.get(result.index)
            if stored is not None and is_final(stored):
                restore(result, stored)
            else:
                reason = self._stopping.reason()
                if reason:
                    raise Stop(INTERRUPTED, reason)
                run_step(run, step, result, outputs, waiting, ctx, stored)
            _keep_output(outputs, step, result)
            at += 1

    def _context(self, plan: Plan, run_id: str, dry_run: bool) -> RunContext:
        self._stopping.run_id = run_id
        return RunContext(
            run_id=run_id,
            plan=plan,
            results=[self._initial(i, s) for i, s in enumerate(plan.steps)],
            dry_run=dry_run,
            registry=self.registry,
            store=self.store,
            target=self.target,
            agent=self.agent,
            policy=self.policy_of(plan),
            approver=self.approver,
            observer=self.observer,
            clock=self.clock,
            stopping=self._stopping,
            open_target=self.open_target,
        )

    def _tool_context(self, run_id: str, dry_run: bool) -> ToolContext:
        """The tools' connection to the target and their hooks into the run."""
        conn = self.target.connect()
        ctx = ToolContext(
            conn=conn,
            dialect=self.target.dialect,
            target=self.target.name,
            dry_run=dry_run,
            backup_dir=self.backup_dir,
            private=self.private,
            run_id=run_id,
            quote_identifier=self.target.quote,
            trusted_functions=tuple(self.target.config.trusted_functions),
            connect_timeout_seconds=self.target.config.connect_timeout_seconds,
            write_timeout_seconds=self.target.config.write_timeout_seconds,
            # A dry run is a preview: a table found held is not waited on again.
            table_readings=TableReadings(keeps_held=dry_run),
        )
        ctx.should_stop = lambda: self._stopping.reason() is not None
        ctx.backup_catalog = lambda: self.store.list_backups(self.target.name)
        ctx.every_backup = self.store.list_backups
        ctx.scratch = Ledger(self.store, run_id, self.target.name)
        if not dry_run:
            # What runs killed before they could clean up left behind goes first.
            ctx.scratch.clean_dead(self.target.engine)
        return ctx

    def _initial(self, index: int, step: Step) -> StepResult:
        tool = self.registry.get(step.tool)
        return StepResult(
            index=index,
            step_id=step.id,
            tool=step.tool,
            rationale=step.rationale,
            params=step.params,
            risk_level=tool.risk_level.value,
            run_report=tool.run_report,
        )
