"""Runs: a job planned and run, a saved plan applied, an unfinished run resumed, and
what the state store keeps of runs."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from typing_extensions import Unpack

from aishell.agents.available import agent_names
from aishell.commands.assumptions import (
    ROW_DRIFT_TOLERANCE,
    drift_since_plan,
    plan_assumptions,
    planned_tables,
)
from aishell.commands.breaker import circuit_breaker
from aishell.commands.locks import release_run_lock, take_run_lock
from aishell.commands.planner import build_plan, planning_notice
from aishell.commands.plans import (
    load_plan_file,
    missing_names,
    verified_plan,
    writing_nothing_private,
)
from aishell.commands.previews import Review
from aishell.commands.starting import (
    ResumeHow,
    RunHow,
    RunPlace,
    given_catalog,
    ignored_window,
    make_executor,
    plan_and_start,
    start_run,
)
from aishell.config.models import Config
from aishell.config.options import SAFETY_LEVELS
from aishell.errors import PlanError, TargetLocked, TargetUnreachable, UsageError
from aishell.executor import RunResult
from aishell.plan.model import (
    Plan,
    SavedPlan,
    clip,
    listed,
    validate_plan,
)
from aishell.policy.measured import grown_past
from aishell.policy.rules import tighter_or_equal
from aishell.policy.window import WINDOW_IGNORED
from aishell.registry import Registry
from aishell.sqltext import as_received
from aishell.state.store import StateStore, signed_store
from aishell.targets.engines import Target, open_target
from aishell.targets.fingerprints import identity_change, table_identities
from aishell.targets.identity import INSTANCE_MARK, check_plan_identity, database_instance
from aishell.targets.tables import TableCatalog

RESUMABLE = ("waiting_approval", "out_of_window", "failed", "interrupted", "aborted", "running")


def run_job(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    *,
    schedule: tuple[str, str] | None = None,
    fleet: tuple[str, str] | None = None,
    planner: str | None = None,
    review: Review | None = None,
    **how: Unpack[RunHow],
) -> RunResult:
    """Plan and run a job; every step is checkpointed in the state store.

    Without an approver, steps that need approval leave the run waiting_approval.
    A dry run opens the target read-only, runs the safe analysis steps and previews
    the rest. A plan the model drafted (planner llm) is shown to `review` first.
    """
    notice = planning_notice(how.get("observer"))
    return plan_and_start(
        config,
        target,
        lambda registry, handle: writing_nothing_private(
            config,
            registry,
            build_plan(config, registry, handle, agent_name, job, planner, notice),
        ),
        review,
        schedule=schedule,
        fleet=fleet,
        **how,
    )


def apply_plan(
    config: Config,
    plan: Plan | SavedPlan | Path,
    **how: Unpack[RunHow],
) -> RunResult:
    """Run exactly a saved plan, or refuse it whole before its first step.

    A plan file (a path, or read by `load_plan_file`) must carry this home's signature.
    Then, for any plan: its target is configured, is the same database and dialect it
    was made on, every step validates, its tools are unchanged, every table and column
    it names is in the target's catalog, and the target has not drifted from its
    assumptions.
    """
    started = time.monotonic()
    if isinstance(plan, Path):
        plan = load_plan_file(plan)
    if isinstance(plan, SavedPlan):
        plan = verified_plan(config, plan)
    if plan.target not in config.main.targets:
        known = ", ".join(sorted(config.main.targets)) or "(none)"
        raise PlanError(
            f"The plan is for target '{plan.target}', which is not in {config.path} "
            f"(targets: {known})"
        )
    registry = given_catalog(config, how)
    _check_tools_there(registry, plan)
    problems = validate_plan(plan, registry, config.agent(plan.agent).capabilities)
    if problems:
        raise PlanError(f"The plan is no longer valid: {listed(problems)}")
    _check_tools_unchanged(registry, plan.tool_fingerprints, "the plan was made")
    writing_nothing_private(config, registry, plan)
    level = _reviewed_level(config, plan, how.get("safety_level"))
    if level is not None:
        how["safety_level"] = level
    with signed_store(config) as store, circuit_breaker(config, store, plan.target):
        _check_against_target(config, registry, plan)
        return start_run(config, store, registry, plan, started=started, **how)


def _check_tools_there(registry: Registry, plan: Plan) -> None:
    """Refuse, in one line, a plan whose tools the catalog lacks: each named once, with
    how many steps use it, and why when it is known (the plan's agent is not installed:
    its package, which brought the tools, is gone)."""
    missing = Counter(step.tool for step in plan.steps if step.tool not in registry.tools)
    if not missing:
        return
    named = [
        f"'{clip(tool)}' ({count} step{'' if count == 1 else 's'})"
        for tool, count in missing.most_common()
    ]
    if plan.agent not in agent_names():
        why = (
            f"the plan's agent '{clip(plan.agent)}' is not installed either: install the "
            "package that provides it, or make a new plan"
        )
    else:
        why = "the package or catalog folder that provided them is gone: make a new plan"
    raise PlanError(f"The plan uses tools the catalog lacks: {listed(named)}; {why}")


def _reviewed_level(config: Config, plan: Plan, given: str | None) -> str | None:
    """The safety level a saved plan was judged at when its preview was shown, where it
    is stricter than the one given (or configured): the steps a person saw needing a
    yes still need one. None: the run's own level stands."""
    reviewed = plan.reviewed.get("safety_level")
    now = given or config.agent(plan.agent).defaults.safety_level
    if not isinstance(reviewed, str) or reviewed not in SAFETY_LEVELS:
        return None
    return None if tighter_or_equal(now, reviewed) else reviewed


def _check_against_target(config: Config, registry: Registry, plan: Plan) -> None:
    """The plan's target, read-only: the same dialect and database the plan was made on,
    every name the plan uses still there, and no drift from the plan's assumptions."""
    handle = open_target(config, plan.target, read_only=True)
    try:
        if handle.dialect != plan.dialect:
            raise PlanError(
                f"The plan is for {plan.dialect} but target '{plan.target}' is {handle.dialect}"
            )
        with handle.connect() as conn:
            if plan.target_identity is not None:
                check_plan_identity(conn, plan.target, plan.target_identity)
            catalog = TableCatalog.read(conn)
            missing = missing_names(conn, registry, plan, catalog)
            if missing:
                raise PlanError(
                    f"The plan names what target '{plan.target}' lacks: "
                    f"{'; '.join(missing)}; nothing was run"
                )
            now = plan_assumptions(catalog, plan.job, planned_tables(plan))
            drift = drift_since_plan(plan, now) + _tables_replaced(conn, plan)
            # The catalog's estimates are as old as each table's last ANALYZE: a table
            # they show unchanged is measured (its size, its rows counted up to the
            # tolerance) before the plan is taken to still fit it.
            assumed = {
                t: facts["rows"]
                for t, facts in (plan.assumptions.get("tables") or {}).items()
                if isinstance(facts, dict) and not any(f"'{t}'" in d for d in drift)
            }
            trusted = tuple(handle.config.trusted_functions)
            drift += grown_past(conn, catalog, assumed, ROW_DRIFT_TOLERANCE, trusted)
    finally:
        handle.close()
    if drift:
        raise PlanError(
            f"Target '{plan.target}' changed since the plan was made ({'; '.join(drift)}); "
            "make a new plan"
        )


def _tables_replaced(conn: Connection, plan: Plan) -> list[str]:
    """The plan's tables whose names reach another table than when it was saved."""
    then = plan.assumptions.get("table_ids")
    if not isinstance(then, dict):
        return []  # a plan saved before aishell recorded them
    now = table_identities(conn, then)
    return [
        f"'{table}' {identity_change(identity, now[table], 'the plan was made')}"
        for table, identity in sorted(then.items())
        if table in now and now[table] != identity
    ]


def resume_run(
    config: Config,
    run_id: str,
    **how: Unpack[ResumeHow],
) -> RunResult:
    """Continue a run from the state store alone; succeeded steps never run again.

    The resumed run has its time limit anew (max_run_seconds, else from config)."""
    started = time.monotonic()
    ignored_window(how)  # a missing --reason is refused before anything is read
    registry = given_catalog(config, how)
    with signed_store(config) as store:
        run = _resumable(store, run_id)
        run_id = run["run_id"]
        plan = Plan.from_dict(store.get_plan(run_id))
        if plan.hash != run["plan_hash"]:
            raise PlanError(f"Run {run_id}: its stored plan no longer matches its hash")
        _check_tools_unchanged(registry, run["tool_fingerprints"], f"run {run_id} started")
        handle = open_target(config, plan.target)
        try:
            with circuit_breaker(config, store, plan.target):
                handle.connect().close()
            lock = take_run_lock(store, handle, plan.target, plan.agent, run_id)
        except (TargetLocked, TargetUnreachable):
            handle.close()
            raise
        try:
            # Read again under the lock: another resume that read the run as this one did
            # may have run it to its end and let the lock go since; what was read before
            # would run its finished steps again.
            run = _resumable(store, run_id)
            _check_same_database(plan, lock.lease, run_id)
            _check_same_sqlite_file(plan, handle, run_id)
            level = _resumed_level(config, store, run)
            store.reopen_run(run_id, f"resumed from {run['status']}")
            executor = make_executor(
                RunPlace(config, registry, store, handle),
                plan.agent,
                level,
                how,
                run_id=run_id,
                lock=lock,
                started=started,
            )
            prior = {s["index"]: s for s in run["steps"]}
            return executor.execute(plan, run_id, dry_run=False, prior=prior)
        finally:
            release_run_lock(store, lock, run_id)
            handle.close()


def _resumable(store: StateStore, run_id: str) -> dict[str, Any]:
    """The run as the store has it now, refused where there is nothing to resume."""
    run = store.get_run(run_id)
    run_id = run["run_id"]
    if run["dry_run"]:
        raise UsageError(f"Run {run_id} was a dry run; there is nothing to resume")
    if run["status"] not in RESUMABLE:
        raise UsageError(f"Run {run_id} is {run['status']}; there is nothing to resume")
    if not run["steps"]:
        raise UsageError(
            f"Run {run_id} failed before its first step ({run['error']}); there is "
            "nothing to resume: run its job again"
        )
    return run


def _check_same_database(plan: Plan, reached: str, run_id: str) -> None:
    """A run's approvals and checks were given for the database it started on: a resume
    that reaches another one (the target's URL points elsewhere now, or its database was
    dropped and created again) is refused before anything runs."""
    recorded = (plan.target_identity or "").partition(INSTANCE_MARK)[0]
    if not recorded:
        raise PlanError(
            f"Run {run_id} does not record which database it ran on (it started before "
            "aishell recorded it), so it cannot be resumed safely; run its job again"
        )
    if recorded != reached:
        raise PlanError(
            f"Run {run_id} ran on database {recorded}, but target '{plan.target}' now "
            f"reaches {reached}; its approvals and checks were for the other one: run its "
            "job again on this one"
        )


def _check_same_sqlite_file(plan: Plan, handle: Target, run_id: str) -> None:
    """A SQLite file made again at its path may have the old one's inode, which is its
    identity; its birth time tells it from the file the run started on. (PostgreSQL's
    instance is the oid in its identity; MariaDB's, its tables' ids, moves with the run's
    own rebuilds, so a resume does not compare it.)"""
    born = (plan.target_identity or "").partition(INSTANCE_MARK)[2]
    if plan.dialect != "sqlite" or not born:
        return
    with handle.connect() as conn:
        now = database_instance(conn)
    if now != born:
        raise PlanError(
            f"Run {run_id} ran on a file made at {born.removeprefix('born:')} (ns), but the "
            f"file target '{plan.target}' reaches now was made at "
            f"{now.removeprefix('born:')}: another file under its path; its approvals and "
            "checks were for the other one: run its job again on this one"
        )


def _resumed_level(config: Config, store: StateStore, run: dict[str, Any]) -> str:
    """The run's safety level, or the agent's configured one where that is stricter now:
    a level tightened since the run started holds for the steps still to run."""
    configured = config.agent(run["agent"]).defaults.safety_level
    if tighter_or_equal(run["safety_level"], configured):
        return str(run["safety_level"])
    change = {"from": run["safety_level"], "to": configured, "why": "configured since"}
    store.record_event(run["run_id"], None, "safety_level_tightened", change)
    return configured


def _check_tools_unchanged(registry: Registry, fingerprints: dict[str, str], since: str) -> None:
    for name, fingerprint in sorted(fingerprints.items()):
        current = registry.get(name)
        if current.fingerprint != fingerprint:
            raise PlanError(
                f"Tool '{name}' changed since {since} ({current.source}); make a new plan"
            )


def show_run(
    config: Config,
    run_id: str,
    with_sql: bool = False,
    start: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """A run with its steps, events and approvals; with_sql adds the audit of every
    statement it sent, as `statements`. With `limit`: that many of its steps from the
    index `start` on, and only what is of them (StateStore.run_part: the whole run is
    checked all the same), with `sizes` and `next_step`."""
    with signed_store(config) as store:
        if limit is None:
            run = store.get_run(run_id)
            shown = None
        else:
            run = store.run_part(run_id, start, limit)
            _check_start(run, start)
            shown = (start, run["steps"][-1]["index"] + 1) if run["steps"] else (start, start)
        run["window_ignored"] = [
            {**e["data"], "at": e["at"]} for e in run["events"] if e["kind"] == WINDOW_IGNORED
        ]
        if with_sql:
            run["statements"] = _as_received(store.list_statements(run["run_id"], shown), run)
        return run


def _check_start(run: dict[str, Any], start: int) -> None:
    """A part that begins past the run's last step is a mistake in the asking."""
    count = run["sizes"]["steps"]
    if not run["steps"] and count and start:
        raise UsageError(
            f"Run {run['run_id']} has {count:,} steps (from 0 to {count - 1:,}); "
            f"none from step {start:,} on"
        )


def run_statements(config: Config, run_id: str) -> list[dict[str, Any]]:
    """The audit of every statement a run's operations sent, as the server received it."""
    with signed_store(config) as store:
        run = store.get_run(run_id)
        return _as_received(store.list_statements(run["run_id"]), run)


def _as_received(rows: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    for row in rows:
        parameters = row.get("parameters")
        named = parameters if isinstance(parameters, dict) else None
        row["sql"] = as_received(row["sql"], run["dialect"], named)
    return rows
