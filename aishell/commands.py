"""The public API: one function per user action, each taking the loaded config first.

The CLI, the scheduler and the tests call these; nothing shells out to the CLI.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell import metrics as prometheus
from aishell import notify, scheduling, schema, scratch, signing
from aishell.agents import PlanningContext, get_agent
from aishell.approval import Approver, NonInteractive, current_user
from aishell.catalog import check_tables, snapshot, table_columns, urgency, user_tables
from aishell.config import Config, resolve_url
from aishell.demo import create_demo
from aishell.errors import (
    AishellError,
    ConfigError,
    PlanDeclined,
    PlanError,
    TargetLocked,
    TargetUnreachable,
    UsageError,
)
from aishell.executor import (
    WAITING_APPROVAL,
    Executor,
    Observer,
    RunResult,
    estimate_effect,
    subject,
)
from aishell.plan import Plan, SavedPlan, Step, validate_plan
from aishell.planners import PLANNERS
from aishell.planners.drafting import draft_job, draft_words
from aishell.planners.llm import Notice
from aishell.planners.ollama import OllamaChat, shown_host
from aishell.policy import (
    SAFETY_LEVELS,
    SafetyPolicy,
    gather_facts,
    named_approval_needed,
    tighter_or_equal,
)
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
from aishell.schema import identifier_params
from aishell.sqltext import display, quote_identifier
from aishell.state import StateStore, new_run_id
from aishell.substitution import find_references
from aishell.targets import RunLock, Target, database_identity, open_target

# A plan is stale when a table's row estimate moved by more than this share.
ROW_DRIFT_TOLERANCE = 0.25
RESUMABLE = ("waiting_approval", "out_of_window", "failed", "interrupted", "aborted", "running")


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
    return lambda name: quote_identifier(sa_dialect, name)


# --- targets --------------------------------------------------------------------------


def list_targets(config: Config) -> list[dict[str, Any]]:
    """The configured targets; never their URLs' passwords."""
    from sqlalchemy.engine import make_url

    listed = []
    for name, target in sorted(config.main.targets.items()):
        url = make_url(resolve_url(target.url, config.home))
        listed.append(
            {
                "name": name,
                "dialect": url.get_backend_name(),
                "location": url.render_as_string(hide_password=True),
                "environment": target.environment,
                "description": target.description,
                "default": name == config.main.default_target,
            }
        )
    return listed


def check_target(config: Config, name: str | None = None) -> dict[str, Any]:
    """Connect to a target and report its server, privileges and extensions."""
    from aishell.targets import describe_server

    handle = open_target(config, name, read_only=True)
    try:
        conn = handle.connect()
        try:
            info = describe_server(conn)
            info["tables"] = len(user_tables(conn))
        finally:
            conn.close()
    finally:
        handle.close()
    return {"target": handle.name, "dialect": handle.dialect, **info}


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
    url = resolve_url(target_config.url, config.home)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"Target '{name}' is not a SQLite file; the demo only creates SQLite")
    path = Path(url[len("sqlite:///") :])
    counts = create_demo(path, log_rows=log_rows, progress=progress)
    return {"target": name, "path": str(path), "tables": counts, "size_bytes": path.stat().st_size}


# --- plans ----------------------------------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step_id": self.step_id,
            "tool": self.tool,
            "params": self.params,
            "rationale": self.rationale,
            "risk_level": self.risk_level,
            "requires_approval": self.requires_approval,
            "confirmation": self.confirmation,
            "reasons": list(self.reasons),
            "personal": list(self.personal),
            "mitigations": list(self.mitigations),
            "sql": self.sql,
            "estimate": self.estimate,
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


def plan_job(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    *,
    safety_level: str | None = None,
    out: Path | None = None,
    planner: str | None = None,
    notice: Notice | None = None,
) -> PlanPreview:
    """Plan a job and preview it: each step's risk, whether it needs approval, its SQL.

    Planning opens the target read-only: a preview never changes anything. With
    `out`, the plan is saved signed with the home's key, for `apply_plan`. `planner`
    is rules or llm (default: the config's planner.default).
    """
    registry = load_catalog(config)
    handle = open_target(config, target, read_only=True)
    try:
        plan = _make_plan(config, registry, handle, agent_name, job, planner, notice)
        if out is not None:
            plan = replace(plan, target_identity=_identity(handle))
        level = safety_level or config.agent(agent_name).defaults.safety_level
        preview = _preview(config, registry, handle, plan, level)
    finally:
        handle.close()
    if out is not None:
        save_plan(config, plan, out)
    return preview


def make_plan(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    planner: str | None = None,
) -> Plan:
    """Plan a job, validated, without previewing it: a constant number of catalog queries."""
    registry = load_catalog(config)
    handle = open_target(config, target, read_only=True)
    try:
        return _make_plan(config, registry, handle, agent_name, job, planner)
    finally:
        handle.close()


def save_plan(config: Config, plan: Plan, out: Path) -> Path:
    """Write a plan file for `apply_plan`: the plan, its hash, the database it was made
    on, and a signature with this home's key (made on first use)."""
    if plan.target_identity is None:
        handle = open_target(config, plan.target, read_only=True)
        try:
            plan = replace(plan, target_identity=_identity(handle))
        finally:
            handle.close()
    key = signing.load_key(config.home)
    assert key is not None  # made on first use
    # Signed as it will be read back: JSON turns tuples into lists.
    body = json.loads(json.dumps({**plan.to_dict(), "plan_hash": plan.hash}))
    signed = {**body, "signature": signing.sign(key, body)}
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(signed, indent=2, sort_keys=True) + "\n")
    partial.replace(out)
    return out


def load_plan_file(path: Path) -> SavedPlan:
    """A saved plan, read and checked against the plan file's keys; `apply_plan` checks
    its signature against the home's key."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"Plan file {path} does not exist") from None
    except (UnicodeDecodeError, IsADirectoryError, RecursionError):
        raise PlanError(f"Plan file {path} is not a plan's JSON text") from None
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"Plan file {path} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    return SavedPlan.parse(data, str(path))


def rotate_plan_key(config: Config) -> dict[str, Any]:
    """A new signing key for this home; plans signed with the old one are refused."""
    key, previous = signing.rotate_key(config.home)
    return {"key_id": key.key_id, "previous_key_id": previous, "path": str(key.path)}


def _verified(config: Config, saved: SavedPlan) -> Plan:
    """The plan of a saved file whose signature this home's key made."""
    signing.verify(
        signing.load_key(config.home, create=False),
        config.home,
        saved.body,
        saved.signature,
        f"Plan file {saved.source}",
    )
    return saved.plan


def _identity(handle: Target) -> str:
    conn = handle.connect()
    try:
        return database_identity(conn)
    finally:
        conn.close()


def _missing_names(conn: Connection, registry: Registry, plan: Plan) -> list[str]:
    """Every table and column a plan names literally that the target lacks."""
    tables = set(user_tables(conn))
    columns: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for step in plan.steps:
        params = step.params
        for name, (kind, is_list) in identifier_params(registry.get(step.tool).params).items():
            values = params.get(name) if is_list else [params.get(name)]
            if not isinstance(values, list | tuple):
                continue  # a reference standing for the whole list: checked when it runs
            for value in values:
                # A ${...} reference is known only when its step runs; the executor checks it.
                if not isinstance(value, str) or find_references(value):
                    continue
                if kind == "table" and value not in tables:
                    missing.setdefault(f"table {value!r}", []).append(step.id)
                elif kind == "column":
                    table = params.get("table")
                    if not isinstance(table, str) or table not in tables:
                        continue  # the table itself is reported, or is a reference
                    if table not in columns:
                        columns[table] = table_columns(conn, table)
                    if value not in columns[table]:
                        missing.setdefault(f"column {table}.{value}", []).append(step.id)
    return [f"{what} ({', '.join(steps)})" for what, steps in missing.items()]


# --- runs -----------------------------------------------------------------------------


def run_job(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    *,
    dry_run: bool = False,
    approver: Approver | None = None,
    observer: Observer | None = None,
    safety_level: str | None = None,
    force: bool = False,
    clock: Callable[[], datetime] | None = None,
    schedule: tuple[str, str] | None = None,
    planner: str | None = None,
    review: Review | None = None,
    max_run_seconds: float | None = None,
) -> RunResult:
    """Plan and run a job; every step is checkpointed in the state store.

    Without an approver, steps that need approval leave the run waiting_approval.
    A dry run opens the target read-only, runs the safe analysis steps and previews
    the rest. A plan the model drafted (planner llm) is shown to `review` first.
    """
    return _plan_and_start(
        config,
        target,
        lambda registry, handle: _make_plan(
            config, registry, handle, agent_name, job, planner, _notice(observer)
        ),
        review,
        dry_run=dry_run,
        approver=approver,
        observer=observer,
        safety_level=safety_level,
        force=force,
        clock=clock,
        schedule=schedule,
        max_run_seconds=max_run_seconds,
    )


def _plan_and_start(
    config: Config,
    target: str | None,
    make: Callable[[Registry, Target], Plan],
    review: Review | None,
    **run_options: Any,
) -> RunResult:
    """Plan on a read-only connection, show a drafted plan to `review`, then start."""
    registry = load_catalog(config)
    name, _ = config.target(target)
    with StateStore(config.state_url) as store, _breaker(config, store, name):
        planning = open_target(config, name, read_only=True)
        try:
            plan = make(registry, planning)
            if plan.drafted_by and review is not None:
                level = run_options.get("safety_level") or (
                    config.agent(plan.agent).defaults.safety_level
                )
                if not review(_preview(config, registry, planning, plan, level)):
                    raise PlanDeclined("The plan was not run")
        finally:
            planning.close()
        return _start(config, store, registry, plan, **run_options)


@contextmanager
def _breaker(config: Config, store: StateStore, target: str) -> Iterator[None]:
    """The circuit breaker: a target that keeps failing to connect is left alone a while."""
    opened = store.breaker_open_until(target)
    if opened is not None:
        until, failures, error = opened
        raise TargetUnreachable(
            f"Target '{target}' failed to connect {failures} times in a row (last: {error}); "
            f"aishell leaves it alone until {until:%H:%M:%S} UTC"
        )
    settings = config.main.circuit_breaker
    try:
        yield
    except TargetUnreachable as exc:
        count = store.connection_failed(
            target, str(exc), settings.failures, settings.cool_down_seconds
        )
        if count >= settings.failures:
            raise TargetUnreachable(
                f"{exc}; {count} failures in a row, so aishell leaves '{target}' alone for "
                f"{settings.cool_down_seconds:g}s"
            ) from None
        raise
    else:
        store.connection_succeeded(target)


def apply_plan(
    config: Config,
    plan: Plan | SavedPlan,
    *,
    dry_run: bool = False,
    approver: Approver | None = None,
    observer: Observer | None = None,
    safety_level: str | None = None,
    force: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> RunResult:
    """Run exactly a saved plan, or refuse it whole before its first step.

    A plan file (from `load_plan_file`) must carry this home's signature. Then, for any
    plan: its target is configured, is the same database and dialect it was made on,
    every step validates, its tools are unchanged, every table and column it names is
    in the target's catalog, and the target has not drifted from its assumptions.
    """
    if isinstance(plan, SavedPlan):
        plan = _verified(config, plan)
    if plan.target not in config.main.targets:
        known = ", ".join(sorted(config.main.targets)) or "(none)"
        raise PlanError(
            f"The plan is for target '{plan.target}', which is not in {config.path} "
            f"(targets: {known})"
        )
    registry = load_catalog(config)
    problems = validate_plan(plan, registry, config.agent(plan.agent).capabilities)
    if problems:
        raise PlanError("The plan is no longer valid: " + "; ".join(problems))
    _check_tools_unchanged(registry, plan.tool_fingerprints, "the plan was made")
    with StateStore(config.state_url) as store, _breaker(config, store, plan.target):
        handle = open_target(config, plan.target, read_only=True)
        try:
            if handle.dialect != plan.dialect:
                raise PlanError(
                    f"The plan is for {plan.dialect} but target '{plan.target}' is {handle.dialect}"
                )
            conn = handle.connect()
            try:
                identity = database_identity(conn)
                if plan.target_identity is not None and identity != plan.target_identity:
                    raise PlanError(
                        f"Target '{plan.target}' now points at another database ({identity}) "
                        f"than the plan was made on ({plan.target_identity}); make a new plan"
                    )
                missing = _missing_names(conn, registry, plan)
                if missing:
                    raise PlanError(
                        f"The plan names what target '{plan.target}' lacks: "
                        f"{'; '.join(missing)}; nothing was run"
                    )
                now = _assumptions(snapshot(conn), plan.job, _planned_tables(plan))
                drift = _drift(plan, now)
            finally:
                conn.close()
        finally:
            handle.close()
        if drift:
            raise PlanError(
                f"Target '{plan.target}' changed since the plan was made ({'; '.join(drift)}); "
                "make a new plan"
            )
        return _start(
            config,
            store,
            registry,
            plan,
            dry_run=dry_run,
            approver=approver,
            observer=observer,
            safety_level=safety_level,
            force=force,
            clock=clock,
        )


def ask(
    config: Config,
    request: str,
    target: str | None = None,
    *,
    dry_run: bool = False,
    approver: Approver | None = None,
    observer: Observer | None = None,
    safety_level: str | None = None,
    force: bool = False,
    review: Review | None = None,
) -> RunResult:
    """A request in words: the model picks the agent and drafts the plan, the validator
    checks it, `review` sees its preview, then it runs like any plan, approvals and all.

    A request whose every draft fails validation is refused with the reasons.
    """
    return _plan_and_start(
        config,
        target,
        lambda registry, handle: _request_plan(
            config, registry, handle, request, _notice(observer)
        ),
        review,
        dry_run=dry_run,
        approver=approver,
        observer=observer,
        safety_level=safety_level,
        force=force,
        clock=None,
    )


def _request_plan(
    config: Config, registry: Registry, handle: Target, request: str, notice: Notice | None
) -> Plan:
    """The model's plan for a request in words, as a validated Plan."""
    conn = handle.connect()
    try:
        found = snapshot(conn)
        draft = draft_words(config, registry, handle, conn, found, request, notice)
        tables = sorted({t for s in draft.steps for t in registry.get(s.tool).tables_in(s.params)})
        job = {"request": request.strip(), "tables": tables}
        assumptions = _assumptions(found, job, tables)
    finally:
        conn.close()
    plan = Plan(
        agent=draft.agent,
        target=handle.name,
        dialect=handle.dialect,
        job=job,
        steps=tuple(draft.steps),
        tool_fingerprints={s.tool: registry.get(s.tool).fingerprint for s in draft.steps},
        assumptions=assumptions,
        drafted_by=draft.drafted_by,
    )
    problems = validate_plan(plan, registry, config.agent(plan.agent).capabilities)
    if problems:
        raise PlanError("The drafted plan is invalid: " + "; ".join(problems))
    return plan


def check_planner(config: Config) -> dict[str, Any]:
    """Whether the model planner can work: the server answers and has the model."""
    chat = OllamaChat(config.main.planner.llm)
    try:
        models = chat.check_model()
        return {
            "host": shown_host(chat.host),
            "host_from": chat.host_from,
            "model": chat.model,
            "models": models,
            "default_planner": config.main.planner.default,
        }
    finally:
        chat.close()


def forget_drafts(config: Config, target: str | None = None) -> int:
    """Drop cached drafts (of one target, or all), so the model is asked again."""
    if target is not None:
        config.target(target)
    with StateStore(config.state_url) as store:
        return store.forget_plans(target)


def _notice(observer: Observer | None) -> Notice | None:
    """The observer's way to show that a model is drafting, if it has one."""
    return getattr(observer, "planning", None)


def resume_run(
    config: Config,
    run_id: str,
    *,
    approver: Approver | None = None,
    observer: Observer | None = None,
    clock: Callable[[], datetime] | None = None,
    max_run_seconds: float | None = None,
) -> RunResult:
    """Continue a run from the state store alone; succeeded steps never run again.

    The resumed run has its time limit anew (max_run_seconds, else from config)."""
    registry = load_catalog(config)
    with StateStore(config.state_url) as store:
        run = store.get_run(run_id)
        run_id = run["run_id"]
        if run["dry_run"]:
            raise UsageError(f"Run {run_id} was a dry run; there is nothing to resume")
        if run["status"] not in RESUMABLE:
            raise UsageError(f"Run {run_id} is {run['status']}; there is nothing to resume")
        plan = Plan.from_dict(store.get_plan(run_id))
        if plan.hash != run["plan_hash"]:
            raise PlanError(f"Run {run_id}: its stored plan no longer matches its hash")
        _check_tools_unchanged(registry, run["tool_fingerprints"], f"run {run_id} started")
        handle = open_target(config, plan.target)
        try:
            with _breaker(config, store, plan.target):
                handle.connect().close()
            lock = _lock(store, handle, plan.target, plan.agent, run_id)
        except (TargetLocked, TargetUnreachable):
            handle.close()
            raise
        try:
            store.reopen_run(run_id, f"resumed from {run['status']}")
            executor = _executor(
                config,
                registry,
                store,
                handle,
                plan.agent,
                approver,
                observer,
                run["safety_level"],
                clock,
                max_run_seconds,
            )
            prior = {s["index"]: s for s in run["steps"]}
            return executor.execute(plan, run_id, dry_run=False, prior=prior)
        finally:
            _unlock(store, lock, run_id)
            handle.close()


DECISIONS = {
    "approved": "aishell approve",
    "denied": "aishell deny",
    "succeeded": "aishell approve --mark-done",
    "skipped": "aishell approve --skip",
}


def decide_steps(
    config: Config,
    run_id: str,
    decision: str,
    step: int | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Decide on the steps of a run that wait for a person (all, or step N).

    approved: run it on resume; denied: never; succeeded (--mark-done): a person
    checked that its effect is there; skipped: leave it out. The last two need a
    step and a reason.
    """
    if decision not in DECISIONS:
        raise UsageError(f"Unknown decision '{decision}'")
    how = DECISIONS[decision]
    if decision in ("succeeded", "skipped") and (step is None or not reason):
        raise UsageError(f"`{how}` needs --step N and --reason")
    with StateStore(config.state_url) as store:
        run = store.get_run(run_id)
        waiting = [s for s in run["steps"] if s["status"] == "waiting_approval"]
        if step is not None:
            chosen = [s for s in run["steps"] if s["index"] == step]
            if not chosen:
                raise UsageError(f"Run {run['run_id']} has no step {step}")
            if chosen[0]["status"] != "waiting_approval":
                listed = ", ".join(str(s["index"]) for s in waiting) or "none"
                raise UsageError(
                    f"Step {step} of run {run['run_id']} is {chosen[0]['status']}, not waiting "
                    f"for approval (waiting: {listed})"
                )
            waiting = chosen
        if not waiting:
            raise UsageError(f"Run {run['run_id']} has no step waiting for approval")
        held: list[dict[str, Any]] = []
        if decision == "approved" and step is None:
            # A step only a person may pass is approved by its number, never in a batch.
            named = _named_approval_needed(run)
            held = [s for s in waiting if s["index"] in named]
            waiting = [s for s in waiting if s["index"] not in named]
            if not waiting:
                first = held[0]["index"]
                raise UsageError(
                    f"Step {first} of run {run['run_id']} needs its own approval: "
                    f"{named_approval_needed(named[first])}: "
                    f"`aishell approve {run['run_id']} --step {first}`"
                )
        user = current_user()
        why = reason or f"{decision} with `{how}`"
        for s in waiting:
            store.record_approval(run["run_id"], s["index"], decision, user, how, why)
            if decision == "succeeded":
                store.step_finished(
                    run["run_id"],
                    s["index"],
                    "succeeded",
                    output={"marked_done_by": user, "reason": why},
                )
            else:
                store.set_step_status(
                    run["run_id"], s["index"], decision, None if decision == "approved" else why
                )
        return {
            "run_id": run["run_id"],
            "decision": decision,
            "steps": [{"index": s["index"], "tool": s["tool"]} for s in waiting],
            "still_waiting": [
                {"index": s["index"], "tool": s["tool"], "why": "needs its own approval"}
                for s in held
            ],
            "decided_by": user,
            "reason": why,
        }


def _named_approval_needed(run: dict[str, Any]) -> dict[int, list[str]]:
    """The steps of a run the policy said only a person may pass, with the reasons."""
    return {
        e["step_index"]: list(e["data"].get("reasons") or [])
        for e in run.get("events") or []
        if e["kind"] == "named_approval_needed" and e["step_index"] is not None
    }


def stop_run(config: Config, run_id: str) -> dict[str, Any]:
    """Ask a running run to stop after its current statement or batch, resumably."""
    with StateStore(config.state_url) as store:
        run = store.get_run(run_id)
        if run["status"] != "running":
            raise UsageError(f"Run {run['run_id']} is {run['status']}, not running")
        user = current_user()
        store.request_stop(run["run_id"], user)
        return {"run_id": run["run_id"], "requested_by": user}


def doctor(config: Config, clean: bool = False) -> dict[str, Any]:
    """What runs killed before they could clean up left behind (scratch files, scratch
    databases, child processes); with clean, remove it. Only this host's dead processes
    count: a live run's scratch, or another host's, is never touched."""
    opened: dict[str, Target] = {}

    def engine_for(name: str) -> Any:
        if name not in opened:
            try:
                opened[name] = open_target(config, name)
            except AishellError:
                return None
        return opened[name].engine

    with StateStore(config.state_url) as store:
        if not clean:
            return {"clean": False, "leftovers": scratch.leftovers(store)}
        try:
            return {"clean": True, **scratch.clean(store, engine_for)}
        finally:
            for handle in opened.values():
                handle.close()


def run_statements(config: Config, run_id: str) -> list[dict[str, Any]]:
    """The audit of every statement a run's operations sent."""
    with StateStore(config.state_url) as store:
        return store.list_statements(store.get_run(run_id)["run_id"])


def list_backups(config: Config, target: str | None = None) -> list[dict[str, Any]]:
    """The backup catalog, newest first; each with whether it was proven restorable."""
    if target is not None:
        config.target(target)
    with StateStore(config.state_url) as store:
        return store.list_backups(target)


def backup_freshness(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target: the newest backup proven restorable, and how old it is."""
    now = datetime.now(UTC)
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not row["verified_at"] or row["target"] in summary:
            continue  # rows come newest first
        taken = datetime.fromisoformat(row["created_at"])
        summary[row["target"]] = {
            "backup_id": row["id"],
            "created_at": row["created_at"],
            "age_hours": round((now - taken).total_seconds() / 3600, 1),
        }
    return summary


def show_backup(config: Config, backup_id: int) -> dict[str, Any]:
    for backup in list_backups(config):
        if backup["id"] == backup_id:
            return backup
    raise UsageError(f"No backup with id {backup_id}; `aishell backups list` shows them")


def restore(
    config: Config,
    backup_id: int,
    to: str,
    *,
    replace: bool = False,
    approver: Approver | None = None,
    observer: Observer | None = None,
) -> RunResult:
    """Restore a catalogued backup into a target: a critical step, always approved first."""
    backup = show_backup(config, backup_id)
    if not backup["verified_at"]:
        raise UsageError(
            f"Backup {backup_id} was never proven restorable; validate it first "
            "(aishell run backup validates what it takes)"
        )
    name, _ = config.target(to)
    registry = load_catalog(config)
    handle = open_target(config, name, read_only=True)
    try:
        dialect = handle.dialect
    finally:
        handle.close()
    params: dict[str, Any] = {"backup_path": backup["path"], "replace": replace}
    if backup.get("sha256"):
        # The step refuses a file that is not the one the catalog recorded.
        params["sha256"] = backup["sha256"]
    plan = Plan(
        agent="backup",
        target=name,
        dialect=dialect,
        job={"type": "restore", "backup_id": backup_id},
        steps=(
            Step(
                "step_0",
                "restore_backup",
                params,
                f"Restore backup {backup_id} of '{backup['target']}' into '{name}'",
            ),
        ),
        tool_fingerprints={"restore_backup": registry.get("restore_backup").fingerprint},
    )
    problems = validate_plan(plan, registry, config.agent("backup").capabilities)
    if problems:
        raise PlanError("; ".join(problems))
    with StateStore(config.state_url) as store, _breaker(config, store, name):
        return _start(
            config,
            store,
            registry,
            plan,
            dry_run=False,
            approver=approver,
            observer=observer,
            safety_level=None,
            force=False,
            clock=None,
        )


def list_runs(config: Config, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with StateStore(config.state_url) as store:
        return store.list_runs(status=status, limit=limit)


def show_run(config: Config, run_id: str) -> dict[str, Any]:
    with StateStore(config.state_url) as store:
        return store.get_run(run_id)


# --- schedules ------------------------------------------------------------------------

SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Runs a schedule left unfinished (out of the window, or stopped) are resumed first.
UNFINISHED = ("interrupted", "out_of_window")


def add_schedule(
    config: Config,
    name: str,
    cron: str,
    timezone: str,
    words: list[str],
    agent_name: str,
    job: dict[str, Any],
    target: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Check a schedule now, not at 2 a.m.: its name, cron, time zone, target and job."""
    if not SCHEDULE_NAME.match(name):
        raise UsageError(
            f"Schedule name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    scheduling.check_timezone(timezone)
    first = scheduling.first_fire(cron, timezone)
    target_name, _ = config.target(target)
    get_agent(agent_name).normalize_job(job, config.agent(agent_name))
    with StateStore(config.state_url) as store:
        store.add_schedule(
            name=name,
            cron=cron,
            timezone=timezone,
            words=words,
            agent=agent_name,
            job=job,
            target=target_name,
            options=options,
        )
    return {"name": name, "cron": cron, "timezone": timezone, "next_run": first}


def list_schedules(config: Config) -> list[dict[str, Any]]:
    """Every schedule with its next run and its last run's status."""
    held = scheduling.next_runs(config)
    found = []
    with StateStore(config.state_url) as store:
        alerts = store.schedule_alerts()
        for schedule in store.list_schedules():
            name = schedule["name"]
            if schedule["paused"]:
                upcoming = None
            elif name in held:
                upcoming = held[name]
            else:  # not served yet: what the trigger says
                upcoming = scheduling.next_fire(schedule["cron"], schedule["timezone"])
            recent = store.schedule_runs(name, limit=1)
            found.append(
                {
                    **schedule,
                    "next_run": upcoming,
                    "last_run": recent[0] if recent else None,
                    "alert": _current_alert(alerts.get(name, []), recent),
                }
            )
    return found


def _current_alert(
    alerts: list[dict[str, Any]], recent: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The newest missed trigger or stuck run, unless a run has started since."""
    if not alerts:
        return None
    newest = alerts[0]
    if newest["kind"] == "missed" and recent and recent[0]["started_at"] > newest["at"]:
        return None
    if newest["kind"] == "stuck" and recent and recent[0]["status"] != "running":
        return None
    return newest


def remove_schedule(config: Config, name: str) -> None:
    with StateStore(config.state_url) as store:
        store.remove_schedule(name)


def pause_schedule(config: Config, name: str, paused: bool) -> None:
    with StateStore(config.state_url) as store:
        store.set_schedule_paused(name, paused)


def run_schedule(
    config: Config, name: str, how: str = "run-now", log: Callable[[str], None] = print
) -> RunResult | None:
    """Run a schedule's job as its trigger does: unfinished runs of the schedule first,
    never a prompt, and the outcome to the notifiers. A trigger whose previous run
    still waits for approval starts nothing (the waiting run is notified again), so
    unapproved runs do not pile up night after night; `run-now` always runs."""
    with StateStore(config.state_url) as store:
        schedule = store.get_schedule(name)
        recent = store.schedule_runs(name, limit=5)
        unfinished = [r for r in recent if r["status"] in UNFINISHED]
    if how == "cron" and recent and recent[0]["status"] == WAITING_APPROVAL:
        waiting = show_run(config, recent[0]["run_id"])
        log(f"schedule {name}: run {waiting['run_id']} still waits for approval; not started again")
        _notify(config, waiting, name, how, log)
        return None
    approver = NonInteractive(why=f"scheduled run of {name}")
    for earlier in reversed(unfinished):
        log(f"schedule {name}: resuming unfinished run {earlier['run_id']} first")
        resumed = resume_run(
            config,
            earlier["run_id"],
            approver=approver,
            max_run_seconds=schedule["options"].get("max_run_seconds"),
        )
        _notify(config, resumed.to_dict(), name, how, log)
        if resumed.status in UNFINISHED:
            return resumed  # still not done: the new run would meet the same wall
    options = schedule["options"]
    result = run_job(
        config,
        schedule["agent"],
        schedule["job"],
        schedule["target"],
        dry_run=bool(options.get("dry_run")),
        approver=approver,
        safety_level=options.get("safety_level"),
        force=bool(options.get("force")),
        planner=options.get("planner"),
        schedule=(name, how),
        max_run_seconds=options.get("max_run_seconds"),
    )
    log(f"schedule {name}: run {result.run_id} {result.status}")
    _notify(config, result.to_dict(), name, how, log)
    return result


def serve_schedules(
    config: Config, log: Callable[[str], None], stop: threading.Event | None = None
) -> None:
    """The scheduler in the foreground, until SIGTERM or SIGINT."""
    scheduling.serve(config, run_schedule, log, stop)


def metrics(config: Config, textfile: Path | None = None) -> str:
    """Prometheus text of the last run per target and agent, backups and schedules."""
    upcoming = list_schedules(config)
    with StateStore(config.state_url) as store:
        registry = prometheus.collect(store, upcoming)
    if textfile is not None:
        prometheus.write_textfile(registry, textfile)
    return prometheus.exposition(registry)


def _notify(
    config: Config, run: dict[str, Any], name: str, how: str, log: Callable[[str], None]
) -> None:
    message = notify.summary(run, name, how)
    failures = notify.send(config.main.notifications, message, log)
    if failures:
        with StateStore(config.state_url) as store:
            store.record_event(run["run_id"], None, "notify_failed", {"failures": failures})


# --- helpers --------------------------------------------------------------------------


def _start(
    config: Config,
    store: StateStore,
    registry: Registry,
    plan: Plan,
    *,
    dry_run: bool,
    approver: Approver | None,
    observer: Observer | None,
    safety_level: str | None,
    force: bool,
    clock: Callable[[], datetime] | None,
    schedule: tuple[str, str] | None = None,
    max_run_seconds: float | None = None,
) -> RunResult:
    agent_config = config.agent(plan.agent)
    configured = agent_config.defaults.safety_level
    level = safety_level or configured
    if level not in SAFETY_LEVELS:
        raise UsageError(
            f"Unknown safety level '{level}'; expected one of: {', '.join(SAFETY_LEVELS)}"
        )
    handle = open_target(config, plan.target, read_only=dry_run)
    loosened = not tighter_or_equal(level, configured)
    if loosened and handle.config.environment == "production" and not force:
        handle.close()
        raise UsageError(
            f"Target '{plan.target}' is production: loosening the safety level from "
            f"{configured} to {level} needs --force"
        )
    run_id = new_run_id()
    lock = None
    if not dry_run:
        try:
            lock = _lock(store, handle, plan.target, plan.agent, run_id)
        except TargetLocked:
            handle.close()
            raise
    try:
        store.create_run(
            run_id=run_id,
            agent=plan.agent,
            target=plan.target,
            dialect=plan.dialect,
            job=plan.job,
            plan=plan.to_dict(),
            plan_hash=plan.hash,
            tool_fingerprints={s.tool: registry.get(s.tool).fingerprint for s in plan.steps},
            dry_run=dry_run,
            safety_level=level,
            step_rows=[
                {
                    "index": i,
                    "step_id": s.id,
                    "tool": s.tool,
                    "subject": _subject(registry.get(s.tool), s.params),
                    "risk_level": registry.get(s.tool).risk_level.value,
                    "params": s.params,
                }
                for i, s in enumerate(plan.steps)
            ],
        )
        if schedule is not None:
            store.record_schedule_run(run_id, *schedule)
        if plan.drafted_by:
            store.record_event(run_id, None, "plan_drafted", plan.drafted_by)
        if level != configured:
            store.record_event(
                run_id,
                None,
                "safety_level_override",
                {"from": configured, "to": level, "by": current_user(), "force": force},
            )
        executor = _executor(
            config,
            registry,
            store,
            handle,
            plan.agent,
            approver,
            observer,
            level,
            clock,
            max_run_seconds,
        )
        return executor.execute(plan, run_id, dry_run=dry_run)
    finally:
        if lock is not None:
            _unlock(store, lock, run_id)
        handle.close()


def _lock(store: StateStore, handle: Target, target: str, agent: str, run_id: str) -> RunLock:
    """One run per database at a time, whatever name or agent reaches it: the server's
    lock keyed by the database's identity, and a lease row naming the run.

    The server lock is the authority (the server frees it when a process dies);
    the lease says who holds it, since a lost network shows only after keepalives.
    """
    with handle.connect() as conn:
        identity = database_identity(conn)
    lock = handle.try_lock(f"aishell:{identity}")
    if lock is None:
        holder = store.lock_holder(identity)
        who = (
            f"run {holder['run_id']} (pid {holder['pid']} on {holder['hostname']}, "
            f"since {holder['acquired_at']})"
            if holder
            else "another aishell process"
        )
        raise TargetLocked(
            f"Target '{target}' is locked for {agent}: its database is in use by {who}"
        )
    try:
        store.acquire_lock(identity, run_id)
    except TargetLocked:
        lock.release()
        holder = store.lock_holder(identity) or {}
        raise TargetLocked(
            f"Target '{target}' is locked for {agent}: its database is in use by run "
            f"{holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('hostname')})"
        ) from None
    lock.lease = identity
    return lock


def _unlock(store: StateStore, lock: RunLock, run_id: str) -> None:
    lock.release()
    store.release_lock(lock.lease, run_id)


def _executor(
    config: Config,
    registry: Registry,
    store: StateStore,
    handle: Target,
    agent_name: str,
    approver: Approver | None,
    observer: Observer | None,
    safety_level: str,
    clock: Callable[[], datetime] | None,
    max_run_seconds: float | None = None,
) -> Executor:
    extra: dict[str, Any] = {}
    if observer is not None:
        extra["observer"] = observer
    if clock is not None:
        extra["clock"] = clock
    return Executor(
        registry=registry,
        store=store,
        target=handle,
        agent=config.agent(agent_name),
        approver=approver or NonInteractive(),
        backup_dir=config.backup_dir,
        safety_level=safety_level,
        open_target=lambda name: open_target(config, name, read_only=True).connect(),
        run_limit=config.run_limit(agent_name, max_run_seconds, "the schedule's --max-run-time"),
        **extra,
    )


def _subject(tool: ToolDefinition, params: dict[str, Any]) -> str | None:
    """The table(s) a step works on, as the history of durations is keyed."""
    if find_references(params):
        return None
    return subject(tool.tables_in(params))


def _check_tools_unchanged(registry: Registry, fingerprints: dict[str, str], since: str) -> None:
    for name, fingerprint in sorted(fingerprints.items()):
        current = registry.get(name)
        if current.fingerprint != fingerprint:
            raise PlanError(
                f"Tool '{name}' changed since {since} ({current.source}); make a new plan"
            )


def _make_plan(
    config: Config,
    registry: Registry,
    handle: Target,
    agent_name: str,
    job: dict[str, Any],
    planner: str | None = None,
    notice: Notice | None = None,
) -> Plan:
    planner = planner or config.main.planner.default
    if planner not in PLANNERS:
        raise UsageError(f"Unknown planner '{planner}'; expected one of: {', '.join(PLANNERS)}")
    agent = get_agent(agent_name)
    agent_config = config.agent(agent_name)
    job = agent.normalize_job(job, agent_config)
    conn = handle.connect()
    try:
        check_job = getattr(agent, "check_job", None)
        if job.get("tables"):
            check_tables(conn, handle.name, job["tables"])
            tables = tuple(job["tables"])
        else:
            tables = tuple(user_tables(conn))
        if check_job is not None:
            check_job(job, conn)
        found = snapshot(conn)
        assumptions = _assumptions(found, job, tables)
        ranking = urgency(conn) if job.get("type") == "full" else {}
        context = PlanningContext(
            target=handle.name,
            dialect=handle.dialect,
            tables=tables,
            defaults=agent_config.defaults,
            urgency=ranking,
            purge=agent_config.purge,
        )
        if planner == "llm":
            steps, drafted_by = draft_job(
                config, registry, handle, conn, found, agent_name, job, context, notice
            )
        else:
            steps, drafted_by = agent.plan_steps(job, context), {}
    finally:
        conn.close()
    plan = Plan(
        agent=agent_name,
        target=handle.name,
        dialect=handle.dialect,
        job=job,
        steps=tuple(steps),
        tool_fingerprints={s.tool: registry.get(s.tool).fingerprint for s in steps},
        assumptions=assumptions,
        drafted_by=drafted_by,
    )
    problems = validate_plan(plan, registry, agent_config.capabilities)
    if problems:
        raise PlanError(f"The {agent_name} plan is invalid: " + "; ".join(problems))
    return plan


def _assumptions(
    catalog: dict[str, dict[str, Any]], job: dict[str, Any], tables: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """What a plan is made from (given the catalog's snapshot): the tables, their row
    estimates and their indexes."""
    described: dict[str, Any] = {}
    for table in tables:
        info = catalog.get(table)
        described[table] = (
            None if info is None else {"rows": info["rows"], "indexes": sorted(info["indexes"])}
        )
    result: dict[str, Any] = {"tables": described}
    if not job.get("tables"):
        result["all_tables"] = sorted(catalog)
    return result


def _planned_tables(plan: Plan) -> list[str]:
    return list((plan.assumptions.get("tables") or {}).keys())


def _drift(plan: Plan, now: dict[str, Any]) -> list[str]:
    """How the target differs from what the plan assumed, beyond the row tolerance."""
    then = plan.assumptions
    found: list[str] = []
    if "all_tables" in then and then["all_tables"] != now.get("all_tables"):
        added = sorted(set(now.get("all_tables", [])) - set(then["all_tables"]))
        gone = sorted(set(then["all_tables"]) - set(now.get("all_tables", [])))
        if added:
            found.append(f"new tables: {', '.join(added)}")
        if gone:
            found.append(f"tables gone: {', '.join(gone)}")
    for table, before in (then.get("tables") or {}).items():
        after = (now.get("tables") or {}).get(table)
        if before is None or after is None:
            if before != after:
                found.append(f"table '{table}' {'is gone' if after is None else 'appeared'}")
            continue
        if before["indexes"] != after["indexes"]:
            found.append(f"indexes of '{table}' changed")
        rows_then, rows_now = before["rows"], after["rows"]
        if abs(rows_now - rows_then) > ROW_DRIFT_TOLERANCE * max(rows_then, 1):
            found.append(f"'{table}' has {rows_now:,} rows, the plan assumed {rows_then:,}")
    return found


def _preview(
    config: Config, registry: Registry, handle: Target, plan: Plan, level: str
) -> PlanPreview:
    """Each step's SQL and verdict, asked of the policy with the facts a run gathers, so
    that the preview says exactly what the run will ask for."""
    agent_config = config.agent(plan.agent)
    environment = handle.config.environment
    policy = SafetyPolicy(level, environment, handle.name, agent_config.constraints)
    previews = []
    backup_before = False
    now = datetime.now(UTC)
    conn = handle.connect()
    with StateStore(config.state_url) as store:
        try:
            for i, step in enumerate(plan.steps):
                tool = registry.get(step.tool)
                impl = tool.implementation(handle.dialect)
                params, live = _previewable(step, tool)
                ctx = ToolContext(
                    conn=conn if live else None,
                    dialect=handle.dialect,
                    target=handle.name,
                    dry_run=True,
                    quote_identifier=handle.quote,
                )
                effect: dict[str, Any] | None = None
                if live and tool.risk_level is not RiskLevel.SAFE:
                    try:
                        effect = estimate_effect(tool, impl, params, ctx)
                    except AishellError as exc:
                        # The run fails this step before any prompt; the preview says why.
                        effect = {"refused": str(exc)}
                facts = gather_facts(
                    policy,
                    tool,
                    params if live else {},
                    conn,
                    effect=effect,
                    now=now,
                    store=store,
                    backup_in_run=backup_before,
                )
                verdict = policy.check(facts)
                backup_before = backup_before or tool.category is Category.BACKUP
                previews.append(
                    StepPreview(
                        index=i,
                        step_id=step.id,
                        tool=step.tool,
                        params=step.params,
                        rationale=step.rationale,
                        risk_level=tool.risk_level.value,
                        requires_approval=verdict.requires_approval,
                        confirmation=verdict.confirmation.value,
                        reasons=verdict.reasons,
                        mitigations=verdict.mitigations,
                        sql=[display(sql) for sql in impl.render_sql(params, ctx)],
                        personal=verdict.personal,
                        estimate=effect,
                    )
                )
        finally:
            conn.close()
    return PlanPreview(
        plan=plan, steps=tuple(previews), safety_level=level, environment=environment
    )


def _previewable(step: Step, tool: ToolDefinition) -> tuple[dict[str, Any], bool]:
    """A step's params as far as they are known before it runs, and whether that is
    enough to measure it: optional params that wait for an earlier step's output are
    left to their defaults (a purge's cutoff is then the one its count step finds)."""
    required = set(tool.params.get("required") or ())
    known: dict[str, Any] = {}
    for name, value in step.params.items():
        if find_references(value):
            if name in required:
                return dict(step.params), False
            continue
        known[name] = value
    return schema.with_defaults(known, tool.params), True


__all__ = [
    "PlanPreview",
    "StepPreview",
    "apply_plan",
    "ask",
    "backup_freshness",
    "check_planner",
    "check_target",
    "create_demo_database",
    "decide_steps",
    "forget_drafts",
    "list_backups",
    "list_runs",
    "list_targets",
    "list_tools",
    "load_catalog",
    "load_plan_file",
    "make_plan",
    "plan_job",
    "restore",
    "resume_run",
    "rotate_plan_key",
    "run_job",
    "run_statements",
    "save_plan",
    "show_backup",
    "show_run",
    "show_tool",
    "stop_run",
]
