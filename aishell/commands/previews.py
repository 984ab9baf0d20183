"""A plan's preview: each step's SQL and the policy's verdict, before anything runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any, cast

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.agents.available import agent_names, get_agent
from aishell.config.models import Config
from aishell.errors import AishellError, StepFailed, TargetUnreachable
from aishell.executor import estimate_effect
from aishell.executor.context import takes_backup
from aishell.executor.foresee import foreseen
from aishell.executor.results import judged, named
from aishell.guard.connection import Guard, guarded
from aishell.guard.memory import GuardMemory
from aishell.guard.strays import left_running, watching
from aishell.handlers import HandlerExited
from aishell.plan.model import Plan, Step, plan_tables
from aishell.plan.references import find_references, has_references
from aishell.policy.drafted import AgentRules, drafted_by_model, drafted_policy
from aishell.policy.measured import Measure, connection_measure
from aishell.policy.rules import DurationHistory, SafetyPolicy, gather_facts, may_write
from aishell.registry import Registry, ToolDefinition
from aishell.risk import RiskLevel
from aishell.sqltext import display
from aishell.state.signing import SigningKey, load_key
from aishell.state.store import StateStore
from aishell.targets.engines import Target
from aishell.targets.identity import backup_identity
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.targets.servermessage import server_message
from aishell.targets.tables import TableCatalog
from aishell.tool import params as schema
from aishell.tool.context import Implementation, ToolContext, pending_params
from aishell.tool.locks import StepLocks
from aishell.tool.readings import TableReadings


@dataclass(frozen=True)
class StepPreview:
    index: int
    step_id: str
    tool: str
    params: dict[str, Any]
    rationale: str
    risk_level: str
    requires_approval: bool
    confirmation: str
    reasons: tuple[str, ...]
    mitigations: tuple[str, ...]
    sql: list[str]
    personal: tuple[str, ...] = ()
    estimate: dict[str, Any] | None = None
    # The locks it takes on this engine and the lock wait that bounds them.
    locks: StepLocks | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **named(self),
            "params": self.params,
            "rationale": self.rationale,
            **judged(self),
            "sql": self.sql,
            "estimate": self.estimate,
            "locks": self.locks.to_dict() if self.locks else None,
        }


@dataclass(frozen=True)
class PlanPreview:
    plan: Plan
    steps: tuple[StepPreview, ...]
    safety_level: str
    environment: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_hash": self.plan.hash,
            "agent": self.plan.agent,
            "target": self.plan.target,
            "dialect": self.plan.dialect,
            "job": self.plan.job,
            "safety_level": self.safety_level,
            "environment": self.environment,
            "steps": [s.to_dict() for s in self.steps],
            "drafted_by": self.plan.drafted_by or {"planner": "rules"},
            "warnings": self.plan.warnings,
            "plan": self.plan.to_dict(),
        }


# Shown a drafted plan's preview before it runs; False means do not run it.
Review = Callable[[PlanPreview], bool]


def agent_rules(config: Config, registry: Registry) -> tuple[AgentRules, ...]:
    """Every configured agent's tools (its AgentSpec.tools, and the catalog's tools that
    ask it to plan them) and constraints: what a model's draft is judged by besides the
    agent it names (policy/drafted.py)."""
    planned: dict[str, set[str]] = {}
    for tool in registry.find():
        for agent in tool.planned:
            planned.setdefault(agent, set()).add(tool.name)
    return tuple(
        AgentRules(
            name,
            frozenset(get_agent(name).spec.tools) | planned.get(name, set()),
            tuple(config.agent(name).constraints),
        )
        for name in agent_names()
    )


def preview_plan(
    config: Config,
    registry: Registry,
    handle: Target,
    plan: Plan,
    level: str,
    catalog: TableCatalog | None = None,
) -> PlanPreview:
    """Each step's SQL and verdict, asked of the policy with the facts a run gathers, so
    that the preview says exactly what the run will ask for. `catalog`: the target's
    tables as planning read them (read here when not given)."""
    agent_config = config.agent(plan.agent)
    environment = handle.config.environment
    policy = SafetyPolicy(level, environment, handle.name, agent_config.constraints)
    if drafted_by_model(plan):
        policy = drafted_policy(policy, plan, agent_rules(config, registry))
    previews = []
    backup_before = False
    now = datetime.now(UTC)
    conn = handle.connect()
    history = _History(config.state_url, load_key(config.home, create=False))
    run_cache: dict[str, Any] = {}
    # What the steps measure of their tables (indexes, bloat estimates): each aspect of
    # every table the plan names read in one query, shared by the steps as a run's are.
    readings = TableReadings(keeps_held=True)
    readings.plan(plan_tables(plan, registry))
    memory = GuardMemory(trusted=tuple(handle.config.trusted_functions))
    try:
        readings.look_for_held(conn)
        if catalog is None:
            catalog = TableCatalog.read(conn)
        readings.keep_catalog(catalog)
        # Which database the target reaches, read when a backup_required first asks.
        database = cache(partial(backup_identity, conn))
        for i, step in enumerate(plan.steps):
            tool = registry.get(step.tool)
            facts = _Facts(
                policy, catalog, now, history, backup_before, run_cache, readings, memory, database
            )
            # The backups a backup step chooses among, as a run's steps see them.
            before = tuple((s.tool, s.params) for s in plan.steps[:i])
            backups = _Backups(config.backup_dir, history, before)
            previews.append(_preview_step(i, step, tool, handle, conn, facts, backups))
            backup_before = backup_before or takes_backup(tool)
    finally:
        conn.close()
        history.close()
    return PlanPreview(
        plan=plan, steps=tuple(previews), safety_level=level, environment=environment
    )


@dataclass(frozen=True)
class _Facts:
    """What the policy is asked with, besides the step itself."""

    policy: SafetyPolicy
    catalog: TableCatalog
    now: datetime
    history: DurationHistory
    backup_before: bool
    # What the tools learn once per run (a role's privileges on every table), shared by
    # the preview's steps as a run's steps share it.
    run_cache: dict[str, Any]
    table_readings: TableReadings
    # What the guard learned of the target's functions, shared by the steps' previews.
    guard_memory: GuardMemory
    # Which database the target reaches: the one whose backups a backup_required counts.
    database: Callable[[], str]

    def measure(self, conn: Connection, trusted: tuple[str, ...]) -> Measure:
        """What the policy measures a step's tables with, as a run's steps do: its
        guards' memory shared with the steps' own."""
        return connection_measure(
            conn, self.catalog, self.table_readings, self.run_cache, trusted, self.guard_memory
        )


@dataclass(frozen=True)
class _Backups:
    """The backup folder and catalog a step's preview reads, and the steps before it (tool
    and params), whose backups are not in the catalog yet."""

    folder: Path
    history: _History
    steps_before: tuple[tuple[str, Mapping[str, Any]], ...]


def _preview_step(
    index: int,
    step: Step,
    tool: ToolDefinition,
    handle: Target,
    conn: Connection,
    known: _Facts,
    backups: _Backups,
) -> StepPreview:
    impl = tool.implementation(handle.dialect)
    params, live = _previewable(step, tool)
    ctx = _preview_context(handle, conn if live else None, known, backups)
    limits = known.policy.purge_limits(tool.name)
    ctx.max_share = limits.max_share if limits is not None else None
    with _tool_code(f"{step.id} ({tool.name})", conn if live else None, known.guard_memory):
        rendered, effect, measured = _measured(tool, impl, params, ctx, known.catalog, live)
    if not live:
        rendered = _waiting_named(params, rendered)
    # Offline (or held), what it would render is not known: it is judged by its tool's risk.
    writes = (
        may_write(tool, impl, rendered, handle.dialect)
        if measured
        else tool.risk_level is not RiskLevel.SAFE
    )
    facts = gather_facts(
        known.policy,
        tool,
        params if live else {},
        known.catalog,
        effect=effect,
        now=known.now,
        store=known.history,
        backup_in_run=known.backup_before,
        database=known.database,
        dialect=ctx.dialect,
        writes=writes,
        measure=known.measure(conn, ctx.trusted_functions) if live else None,
    )
    verdict = known.policy.check(facts)
    return StepPreview(
        index=index,
        step_id=step.id,
        tool=step.tool,
        params=step.params,
        rationale=step.rationale,
        # Raised where the server runs user code for it (usercode.py).
        risk_level=max(tool.risk_level, verdict.risk, key=lambda r: r.rank).value,
        requires_approval=verdict.requires_approval,
        confirmation=verdict.confirmation.value,
        reasons=verdict.reasons,
        mitigations=verdict.mitigations,
        sql=[display(sql) for sql in rendered],
        personal=verdict.personal,
        estimate=effect,
        locks=tool.step_locks(params, handle.name, handle.config, handle.dialect),
    )


def _waiting_named(params: dict[str, Any], rendered: list[str]) -> list[str]:
    """An offline step's statements, each value they wait for and do not show named
    first (`tables` of update_table_statistics: its statement names a `table`)."""
    shown = "\n".join(rendered)
    named = [
        f"-- {name}: {', '.join(map(str, held))}"
        for name, held in pending_params(params).items()
        if not all(str(p) in shown for p in held)
    ]
    return [*named, *rendered]


def _preview_context(
    handle: Target, conn: Connection | None, known: _Facts, backups: _Backups
) -> ToolContext:
    """What a step's tool previews with: the target read-only, what the plan's steps
    share, and the backups a run's steps would see."""
    return ToolContext(
        conn=conn,
        dialect=handle.dialect,
        target=handle.name,
        dry_run=True,
        backup_dir=backups.folder,
        quote_identifier=handle.quote,
        run_cache=known.run_cache,
        table_readings=known.table_readings,
        backup_catalog=lambda: backups.history.list_backups(handle.name),
        every_backup=backups.history.list_backups,
        previewed_before=backups.steps_before,
        trusted_functions=tuple(handle.config.trusted_functions),
    )


@contextmanager
def _tool_code(label: str, conn: Connection | None, memory: GuardMemory) -> Iterator[None]:
    """A tool's own code run for a preview (its rendering, its estimate: a plugin's
    too) may only read, as it may while a run prepares the step: what it sends is
    guarded as a read-only step's statements are. What it raises besides aishell's
    errors ends the preview naming the step and its tool."""
    try:
        if conn is None:
            yield
        else:
            with (
                guarded(conn, Guard(label=f"{label}'s preview", memory=memory)),
                watching(conn, label) as left,
            ):
                yield
            if left:
                raise StepFailed(left_running(f"{label}: its tool's code", left))
    except HandlerExited as exc:
        # Its message names the function; a plan of several steps names the one too.
        raise HandlerExited(f"{label} could not be previewed: {exc}") from None
    except (AishellError, DBAPIError):
        raise
    except Exception as exc:
        raise StepFailed(f"{label} could not be previewed: {type(exc).__name__}: {exc}") from exc


def _measured(
    tool: ToolDefinition,
    impl: Implementation,
    params: dict[str, Any],
    ctx: ToolContext,
    catalog: TableCatalog,
    live: bool,
) -> tuple[list[str], dict[str, Any] | None, bool]:
    """The step's SQL and estimated effect, and whether both were read from the target
    (not offline, nor held by another session's lock)."""
    effect: dict[str, Any] | None = None
    tables = tool.tables_in(params)
    known = [ctx.table_readings.held(t) for t in tables]
    if live and tables and all(isinstance(e, DBAPIError) for e in known):
        # An earlier step found them held: the preview does not wait on them again.
        held = _held(ctx.connection, tables, cast(DBAPIError, known[0]))
        return [f"-- {held}"], {"refused": held}, False
    try:
        rendered = impl.render_sql(params, ctx)
        if live and tool.risk_level is not RiskLevel.SAFE:
            try:
                effect = estimate_effect(tool, impl, params, ctx, catalog, rendered)
            except TargetUnreachable:
                raise  # the server stopped answering: nothing more can be read
            except AishellError as exc:
                # The run fails this step before any prompt; the preview says why.
                effect = {"refused": str(exc)}
    except DBAPIError as exc:
        if not is_lock_timeout(exc) or ctx.conn is None:
            raise
        if len(tables) == 1:  # else which table the lock held is not known
            ctx.table_readings.found_held(tables[0], exc)
        held = _held(ctx.conn, tables, exc)
        return [f"-- {held}"], {"refused": held}, False
    return rendered, effect, live


def _held(conn: Connection, tables: tuple[str, ...], exc: DBAPIError) -> str:
    """A table the preview could not measure for a lock another session holds, in words
    naming the holder (as a run's step names it); the read's transaction ended."""
    with suppress(DBAPIError):
        conn.rollback()  # PostgreSQL answers nothing else in the failed transaction
    which = ", ".join(tables) or "a table"
    return (
        f"not measured: {which} held ({server_message(exc)}), by "
        f"{lock_holders(conn, list(tables))}; plan again once it is released"
    )


class _History:
    """The state store, opened the first time the policy asks it something (the durations
    of earlier runs, for a maintenance window; the last verified backup): a plan under no
    such constraint never opens it."""

    def __init__(self, url: str, key: SigningKey | None) -> None:
        self._url = url
        # The home's key: a backup row not signed as it is satisfies no backup_required,
        # as in the run the preview stands for.
        self._key = key
        self._store: StateStore | None = None

    def _open(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self._url, key=self._key)
        return self._store

    def step_durations(self, tool: str, subject: str | None, limit: int = 5) -> list[float]:
        return self._open().step_durations(tool, subject, limit)

    def backup_for(self, database: str, run_id: str | None = None) -> datetime | None:
        return self._open().backup_for(database, run_id)

    def list_backups(self, target: str | None = None) -> list[dict[str, Any]]:
        return self._open().list_backups(target)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _previewable(step: Step, tool: ToolDefinition) -> tuple[dict[str, Any], bool]:
    """A step's params as far as they are known before it runs, and whether that is
    enough to measure it: optional params that wait for an earlier step's output are
    left to their defaults (a purge's cutoff is then the one its count step finds).
    One that a step needs (required, or one of an x-one-of group: left out, the step
    would have none of the group) is not known: the step is previewed offline, each
    value that waits for a step a Pending placeholder (`<...: known once step_0 runs>`)."""
    needed = {*(tool.params.get("required") or ()), *(tool.params.get("x-one-of") or ())}
    known: dict[str, Any] = {}
    for name, value in step.params.items():
        if has_references(value):
            if name in needed:
                waits_for = frozenset(r.step_id for r in find_references(step.params))
                return foreseen(step.params, {}, waits_for, step.id, frozenset()), False
            continue
        known[name] = value
    return schema.with_defaults(known, tool.params), True
