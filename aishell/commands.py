"""The public API: one function per user action, each taking the loaded config first.

The CLI, the scheduler and the tests call these; nothing shells out to the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aishell import safety
from aishell.agents import PlanningContext, get_agent
from aishell.approval import Approver, NonInteractive
from aishell.config import Config
from aishell.demo import create_demo
from aishell.errors import ConfigError, PlanError, UsageError
from aishell.executor import Executor, Observer, RunResult
from aishell.plan import Plan, validate_plan
from aishell.registry import (
    DIALECTS,
    Category,
    Registry,
    RiskLevel,
    ToolContext,
    ToolDefinition,
    load_registry,
)
from aishell.resources import bundled_catalog_dir
from aishell.state import StateStore, new_run_id
from aishell.substitution import find_references
from aishell.targets import Target, check_tables, open_target, user_tables


def load_catalog(config: Config) -> Registry:
    """The built-in catalog plus the site's folders named in config."""
    return load_registry([bundled_catalog_dir(), *config.catalog_paths])


# --- tools ----------------------------------------------------------------------------


def list_tools(
    config: Config, category: str | None = None, risk: str | None = None
) -> list[ToolDefinition]:
    registry = load_catalog(config)
    return registry.find(
        category=Category(category) if category else None,
        risk=RiskLevel(risk) if risk else None,
    )


def show_tool(config: Config, name: str, dialect: str | None = None) -> dict[str, Any]:
    """A tool's metadata and, per dialect, the SQL it runs for its first example."""
    tool = load_catalog(config).get(name)
    if dialect is not None and dialect not in DIALECTS:
        raise UsageError(f"Unknown dialect '{dialect}'; expected one of: {', '.join(DIALECTS)}")
    dialects = [dialect] if dialect else sorted(tool.implementations)
    example = tool.examples[0]["params"]
    sql: dict[str, list[str]] = {}
    for name_ in dialects:
        impl = tool.implementation(name_)
        offline = ToolContext(conn=None, dialect=name_, target="(example)", dry_run=True)
        offline.quote_identifier = _quoter(name_)
        sql[name_] = impl.render_sql(example, offline)
    return {**tool.metadata(), "example_params": example, "sql": sql}


def _quoter(dialect: str) -> Callable[[str], str]:
    from sqlalchemy.engine import make_url

    sa_dialect = make_url(f"{dialect}://").get_dialect()()
    return sa_dialect.identifier_preparer.quote_identifier


# --- demo -----------------------------------------------------------------------------


def create_demo_database(
    config: Config,
    target: str | None = None,
    log_rows: int = 200_000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Create or refresh the demo SQLite database of a target (the default one: demo)."""
    if log_rows < 1:
        raise UsageError("--log-rows must be at least 1")
    name, target_config = config.target(target)
    from aishell.config import resolve_url

    url = resolve_url(target_config.url, config.home)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"Target '{name}' is not a SQLite file; the demo only creates SQLite")
    from pathlib import Path

    path = Path(url[len("sqlite:///") :])
    counts = create_demo(path, log_rows=log_rows, progress=progress)
    return {"target": name, "path": str(path), "tables": counts, "size_bytes": path.stat().st_size}


# --- plans and runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class StepPreview:
    index: int
    step_id: str
    tool: str
    params: dict[str, Any]
    rationale: str
    risk_level: str
    requires_approval: bool
    reasons: tuple[str, ...]
    sql: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step_id": self.step_id,
            "tool": self.tool,
            "params": self.params,
            "rationale": self.rationale,
            "risk_level": self.risk_level,
            "requires_approval": self.requires_approval,
            "reasons": list(self.reasons),
            "sql": self.sql,
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
            "plan": self.plan.to_dict(),
        }


def plan_job(
    config: Config, agent_name: str, job: dict[str, Any], target: str | None = None
) -> PlanPreview:
    """Plan a job and preview it: each step's risk, whether it needs approval, its SQL.

    Planning opens the target read-only: a preview never changes anything.
    """
    registry = load_catalog(config)
    handle = open_target(config, target, read_only=True)
    try:
        plan = _make_plan(config, registry, handle, agent_name, job)
        return _preview(config, registry, handle, plan)
    finally:
        handle.close()


def run_job(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    *,
    dry_run: bool = False,
    approver: Approver | None = None,
    observer: Observer | None = None,
) -> RunResult:
    """Plan and run a job; every step is checkpointed in the state store.

    Without an approver, steps that need approval leave the run waiting_approval.
    A dry run opens the target read-only, runs the safe analysis steps and previews
    the rest.
    """
    registry = load_catalog(config)
    planning = open_target(config, target, read_only=True)
    try:
        plan = _make_plan(config, registry, planning, agent_name, job)
    finally:
        planning.close()
    handle = open_target(config, target, read_only=dry_run)
    with StateStore(config.state_url) as store:
        executor_kwargs: dict[str, Any] = {}
        if observer is not None:
            executor_kwargs["observer"] = observer
        executor = Executor(
            registry=registry,
            store=store,
            target=handle,
            agent=config.agent(agent_name),
            approver=approver or NonInteractive(),
            backup_dir=config.backup_dir,
            **executor_kwargs,
        )
        run_id = new_run_id()
        if not dry_run:
            store.acquire_lock(plan.target, run_id)
        try:
            store.create_run(
                run_id=run_id,
                agent=plan.agent,
                target=plan.target,
                dialect=plan.dialect,
                job=plan.job,
                plan=plan.to_dict(),
                plan_hash=plan.hash,
                dry_run=dry_run,
                step_rows=[
                    {
                        "index": i,
                        "step_id": s.id,
                        "tool": s.tool,
                        "risk_level": registry.get(s.tool).risk_level.value,
                        "params": s.params,
                    }
                    for i, s in enumerate(plan.steps)
                ],
            )
            return executor.execute(plan, run_id, dry_run=dry_run)
        finally:
            if not dry_run:
                store.release_lock(plan.target, run_id)
            handle.close()


def list_runs(config: Config, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with StateStore(config.state_url) as store:
        return store.list_runs(status=status, limit=limit)


def show_run(config: Config, run_id: str) -> dict[str, Any]:
    with StateStore(config.state_url) as store:
        return store.get_run(run_id)


# --- helpers --------------------------------------------------------------------------


def _make_plan(
    config: Config,
    registry: Registry,
    handle: Target,
    agent_name: str,
    job: dict[str, Any],
) -> Plan:
    agent = get_agent(agent_name)
    agent_config = config.agent(agent_name)
    job = agent.normalize_job(job)
    conn = handle.connect()
    try:
        if job.get("tables"):
            check_tables(conn, handle.name, job["tables"])
            tables = tuple(job["tables"])
        else:
            tables = tuple(user_tables(conn))
    finally:
        conn.close()
    context = PlanningContext(
        target=handle.name, dialect=handle.dialect, tables=tables, defaults=agent_config.defaults
    )
    steps = agent.plan_steps(job, context)
    plan = Plan(
        agent=agent_name,
        target=handle.name,
        dialect=handle.dialect,
        job=job,
        steps=tuple(steps),
        tool_fingerprints={s.tool: registry.get(s.tool).fingerprint for s in steps},
    )
    problems = validate_plan(plan, registry, agent_config.capabilities)
    if problems:
        raise PlanError(f"The {agent_name} plan is invalid: " + "; ".join(problems))
    return plan


def _preview(config: Config, registry: Registry, handle: Target, plan: Plan) -> PlanPreview:
    agent_config = config.agent(plan.agent)
    level = agent_config.defaults.safety_level
    environment = handle.config.environment
    conn = handle.connect()
    previews = []
    try:
        for i, step in enumerate(plan.steps):
            tool = registry.get(step.tool)
            verdict = safety.check(tool, level, environment)
            live = not find_references([step.params, step.condition])
            ctx = ToolContext(
                conn=conn if live else None,
                dialect=handle.dialect,
                target=handle.name,
                dry_run=True,
                quote_identifier=handle.quote,
            )
            previews.append(
                StepPreview(
                    index=i,
                    step_id=step.id,
                    tool=step.tool,
                    params=step.params,
                    rationale=step.rationale,
                    risk_level=tool.risk_level.value,
                    requires_approval=verdict.requires_approval,
                    reasons=verdict.reasons,
                    sql=tool.implementation(handle.dialect).render_sql(step.params, ctx),
                )
            )
    finally:
        conn.close()
    return PlanPreview(
        plan=plan, steps=tuple(previews), safety_level=level, environment=environment
    )
