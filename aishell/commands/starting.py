"""Starting a run: the shared path of run, apply, ask and restore from a plan to its
executor, with the circuit breaker, the safety level's checks and the run lock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple, TypedDict

from typing_extensions import Unpack

from aishell.commands.breaker import circuit_breaker
from aishell.commands.locks import note_reached, release_run_lock, take_run_lock
from aishell.commands.previews import Review, agent_rules, preview_plan
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.config.options import SAFETY_LEVELS
from aishell.config.places import home_private_places
from aishell.errors import PlanDeclined, TargetLocked, UsageError
from aishell.executor import Executor, Observer, RunResult, subject
from aishell.executor.planninglimit import planning_limit
from aishell.plan.model import Plan
from aishell.plan.references import find_references
from aishell.policy.approvers import Approver, NonInteractive, current_user
from aishell.policy.rules import tighter_or_equal
from aishell.policy.window import WINDOW_IGNORED, WindowOverride, window_override
from aishell.registry import Registry, ToolDefinition
from aishell.state.store import StateStore, signed_store
from aishell.state.values import new_run_id
from aishell.targets.engines import Target, open_target
from aishell.targets.identity import INSTANCE_MARK, database_instance
from aishell.targets.locks import RunLock


class ResumeHow(TypedDict, total=False):
    """How a run goes on, as `resume_run` and every command that starts a run take it
    (keywords): who approves, who watches, the clock, the run's time limit."""

    approver: Approver | None
    observer: Observer | None
    clock: Callable[[], datetime] | None
    max_run_seconds: float | None
    # --ignore-window and its --reason: this run is not held for the maintenance window.
    ignore_window: bool
    reason: str | None
    # The tool catalog the run plans and runs with; loaded from the home when not given.
    # A fleet worker gives the one it held its task's fingerprints against, so a tool
    # file changed after that check is not what runs.
    catalog: Registry | None


class RunHow(ResumeHow, total=False):
    """How a new run goes, as run_job, apply_plan, ask and restore take it (keywords):
    besides ResumeHow, a dry run (default no), the safety level (default the agent's)
    and --force (default no)."""

    dry_run: bool
    safety_level: str | None
    force: bool


def plan_and_start(
    config: Config,
    target: str | None,
    make: Callable[[Registry, Target], Plan],
    review: Review | None,
    *,
    schedule: tuple[str, str] | None = None,
    fleet: tuple[str, str] | None = None,
    **how: Unpack[RunHow],
) -> RunResult:
    """Plan on a read-only session, show a drafted plan to `review`, then start on the
    same target (the run takes up the connection planning used).

    The run's time limit counts from here: planning a large database takes its share."""
    started = time.monotonic()
    ignored_window(how)  # a missing --reason is refused before anything is planned
    registry = given_catalog(config, how)
    name, _ = config.target(target)
    with signed_store(config) as store, circuit_breaker(config, store, name):
        handle = open_target(config, name, read_only=how.get("dry_run", False))
        planning = handle.reading()
        try:
            with planning_limit(handle.engine, _planning_limit(config, how, schedule), started):
                plan = make(registry, planning)
                if plan.drafted_by and review is not None:
                    agent = config.agent(plan.agent)
                    level = how.get("safety_level") or agent.defaults.safety_level
                    if not review(preview_plan(config, registry, planning, plan, level)):
                        raise PlanDeclined("The plan was not run")
        except BaseException:
            handle.close()
            raise
        return start_run(
            config,
            store,
            registry,
            plan,
            schedule=schedule,
            fleet=fleet,
            started=started,
            handle=handle,
            **how,
        )


def given_catalog(config: Config, how: ResumeHow) -> Registry:
    """The catalog `how` gives (taken out of it), else the home's, loaded now."""
    given = how.pop("catalog", None)
    return load_catalog(config) if given is None else given


def _planning_limit(
    config: Config, how: RunHow, schedule: tuple[str, str] | None
) -> tuple[float, str] | None:
    """The run's time limit while it is planned: the one given (--max-run-time, a
    schedule's), else aishell.yaml's defaults.max_run_seconds. An agent's own
    max_run_seconds is known once the plan names its agent: the run then keeps it."""
    given = how.get("max_run_seconds")
    if given is not None:
        return given, _limit_source(schedule)
    return config.main.defaults.max_run_seconds, f"defaults.max_run_seconds in {config.path}"


def _limit_source(schedule: tuple[str, str] | None) -> str:
    return "the schedule's --max-run-time" if schedule else "--max-run-time"


def start_run(
    config: Config,
    store: StateStore,
    registry: Registry,
    plan: Plan,
    *,
    schedule: tuple[str, str] | None = None,
    fleet: tuple[str, str] | None = None,
    started: float | None = None,
    handle: Target | None = None,
    **how: Unpack[RunHow],
) -> RunResult:
    """Run a plan: check the safety level, take the run lock (not for a dry run), record
    the run and its steps (and the schedule or fleet job it is of), and execute it; the
    lock and the target (opened here unless given: it is then this call's to close) are
    released whatever happens."""
    dry_run, force = how.get("dry_run", False), how.get("force", False)
    ignored_window(how)  # a missing --reason is refused before the target is opened
    if handle is None:
        handle = open_target(config, plan.target, read_only=dry_run)
    run_id = new_run_id()
    lock = None
    try:
        configured, level = _safety_level(config, plan.agent, how)
        _check_loosening(handle, configured, level, force)
        if dry_run:
            # Takes no lock, but reaches the database: recorded as a run's is.
            note_reached(store, handle, run_id)
        else:
            lock = take_run_lock(store, handle, plan.target, plan.agent, run_id)
            plan = _on_database(plan, lock, handle)
        if not dry_run and fleet is not None and (earlier := store.fleet_run_id(*fleet)):
            # Asked under the run lock, which every run of this database takes: a task
            # delivered twice starts one run, the second delivery finds it.
            raise TargetLocked(f"Target '{plan.target}' has run {earlier} of fleet job {fleet[0]}")
        _record_run(store, registry, plan, run_id, dry_run, level)
        if schedule is not None:
            store.record_schedule_run(run_id, *schedule)
        if fleet is not None:
            store.record_fleet_run(*fleet, run_id)
        if level != configured:
            change = {"from": configured, "to": level, "by": current_user(), "force": force}
            store.record_event(run_id, None, "safety_level_override", change)
        executor = make_executor(
            RunPlace(config, registry, store, handle),
            plan.agent,
            level,
            how,
            run_id=run_id,
            lock=lock,
            started=started,
            limit_source=_limit_source(schedule),
        )
        return executor.execute(plan, run_id, dry_run=dry_run)
    finally:
        if lock is not None:
            release_run_lock(store, lock, run_id)
        handle.close()


def ignored_window(how: ResumeHow) -> WindowOverride | None:
    """The decision --ignore-window makes for this run, by the user running aishell;
    refused without a reason (policy/window.py)."""
    return window_override(how.get("ignore_window", False), how.get("reason"), current_user())


def _safety_level(config: Config, agent: str, how: RunHow) -> tuple[str, str]:
    """The agent's configured safety level and the run's (the one given, else that one);
    an unknown level refused."""
    configured = config.agent(agent).defaults.safety_level
    level = how.get("safety_level") or configured
    if level not in SAFETY_LEVELS:
        raise UsageError(
            f"Unknown safety level '{level}'; expected one of: {', '.join(SAFETY_LEVELS)}"
        )
    return configured, level


def _check_loosening(handle: Target, configured: str, level: str, force: bool) -> None:
    """A production target's safety level is loosened only with --force."""
    loosened = not tighter_or_equal(level, configured)
    if loosened and handle.config.environment == "production" and not force:
        raise UsageError(
            f"Target '{handle.name}' is production: loosening the safety level from "
            f"{configured} to {level} needs --force"
        )


def _on_database(plan: Plan, lock: RunLock, handle: Target) -> Plan:
    """The plan with the database the run acts on (the run lock's identity of it), kept
    with the run: a resume that reaches another database is refused. A SQLite file's
    birth time too (its instance): a file made again at its path may reuse its inode."""
    if plan.target_identity is not None:
        return plan  # a saved plan's, checked against the target already
    if plan.dialect != "sqlite":
        return replace(plan, target_identity=lock.lease)
    with handle.connect() as conn:
        born = database_instance(conn)
    return replace(plan, target_identity=f"{lock.lease}{INSTANCE_MARK}{born}")


def _record_run(
    store: StateStore, registry: Registry, plan: Plan, run_id: str, dry_run: bool, level: str
) -> None:
    """The run and its pending steps, before anything is sent to the target."""
    tools = {s.tool: registry.get(s.tool) for s in plan.steps}
    store.create_run(
        run_id=run_id,
        agent=plan.agent,
        target=plan.target,
        dialect=plan.dialect,
        job=plan.job,
        plan=plan.to_dict(),
        plan_hash=plan.hash,
        tool_fingerprints={name: tool.fingerprint for name, tool in tools.items()},
        dry_run=dry_run,
        safety_level=level,
        step_rows=[
            {
                "index": i,
                "step_id": s.id,
                "tool": s.tool,
                "subject": _subject(tools[s.tool], s.params),
                "risk_level": tools[s.tool].risk_level.value,
                "params": s.params,
            }
            for i, s in enumerate(plan.steps)
        ],
    )
    if plan.drafted_by:
        store.record_event(run_id, None, "plan_drafted", plan.drafted_by)


class RunPlace(NamedTuple):
    """Where a run happens: the config, the tool catalog, the state store and the
    target it was opened on."""

    config: Config
    registry: Registry
    store: StateStore
    handle: Target


def make_executor(
    place: RunPlace,
    agent_name: str,
    safety_level: str,
    how: ResumeHow,
    *,
    run_id: str,
    lock: RunLock | None = None,
    started: float | None = None,
    limit_source: str = "--max-run-time",
) -> Executor:
    """The executor of a new or resumed run, with the agent's config and the run's limit.
    A window ignored (--ignore-window) is recorded for this go only: a later resume
    meets the window again unless told anew."""
    config, registry, store, handle = place
    ignored = ignored_window(how)
    if ignored is not None:
        store.record_event(run_id, None, WINDOW_IGNORED, ignored.to_event())
    extra: dict[str, Any] = {}
    if how.get("observer") is not None:
        extra["observer"] = how["observer"]
    if how.get("clock") is not None:
        extra["clock"] = how["clock"]
    return Executor(
        registry=registry,
        store=store,
        target=handle,
        agent=config.agent(agent_name),
        approver=how.get("approver") or NonInteractive(),
        backup_dir=config.backup_dir,
        private=home_private_places(config),
        safety_level=safety_level,
        open_target=lambda name: open_target(config, name, read_only=True).connect(),
        run_limit=config.run_limit(agent_name, how.get("max_run_seconds"), limit_source),
        ignore_window=how.get("ignore_window", False),
        # A model's draft (ask, --planner llm, a saved draft applied or resumed) is
        # judged by every agent that plans its steps' tools, as its preview was.
        agent_rules=lambda: agent_rules(config, registry),
        run_started=started,
        run_lock=lock,
        **extra,
    )


def _subject(tool: ToolDefinition, params: dict[str, Any]) -> str | None:
    """The table(s) a step works on, as the history of durations is keyed."""
    if find_references(params):
        return None
    return subject(tool.tables_in(params))
