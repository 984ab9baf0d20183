"""Before a step runs: what it waits for, its parameters, its SQL and the policy's verdict.

Every check a step makes of its effect comes before the policy and any prompt, so a step
that cannot run is refused before anyone says yes to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aishell.errors import AishellError, TargetError
from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.covered import step_measure
from aishell.executor.estimates import estimate_effect
from aishell.executor.failures import whose_failure
from aishell.executor.foresee import as_shown, foreseen
from aishell.executor.heldtables import held_or_gone
from aishell.executor.results import StepResult
from aishell.executor.retry import LostConnection, final_error, step_retrying
from aishell.executor.reviewed import not_shown
from aishell.executor.statuses import FAILED
from aishell.executor.stopping import Stop
from aishell.guard.connection import Guard
from aishell.guard.memory import ask_again_if_due
from aishell.plan.conditions import parse_condition
from aishell.plan.model import Plan, Step, plan_tables, tables_with_columns
from aishell.plan.references import find_references, substitute, unmet
from aishell.policy.measured import MEASURED_SIZE
from aishell.policy.rules import StepFacts, Verdict, gather_facts, may_write
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel
from aishell.sqltext import display
from aishell.targets.lockholders import is_lock_timeout
from aishell.targets.tables import TableCatalog
from aishell.tool import params as schema
from aishell.tool.context import Implementation, ToolContext, pending_params
from aishell.tool.unmeasured import held_when_measured, unmeasured_tables


@dataclass
class PreparedStep:
    """A step ready to run: its parameters resolved, its SQL rendered, the policy's word."""

    tool: ToolDefinition
    impl: Implementation
    params: dict[str, Any]
    rendered: list[str]
    verdict: Verdict
    # Whether it may write (policy.may_write); a step that may not runs as a read.
    writes: bool


def settle_dependencies(
    run: RunContext,
    step: Step,
    result: StepResult,
    needed: list[str],
    earlier: Mapping[str, StepResult],
    waiting: set[str],
) -> frozenset[str] | None:
    """The steps it needs that were denied or skipped and that it runs without (a step
    that always runs: the report); None when the step ends here, waiting or skipped."""
    held = sorted({dep for dep in needed if dep in waiting})
    if held:
        # It needs a step that has not run yet; it waits with it.
        waiting.add(step.id)
        result.error = f"waits for {', '.join(held)}"
        run.store.set_step_status(run.run_id, result.index, "pending", result.error)
        return None
    if step.always_run:
        return frozenset(
            d for d in needed if d in earlier and earlier[d].status in ("denied", "skipped")
        )
    for dep in needed:
        if dep in earlier and earlier[dep].status in ("denied", "skipped"):
            run.finish(result, "skipped", error=f"it needs {dep}, which was {earlier[dep].status}")
            return None
    return frozenset()


def preview_offline(
    run: RunContext,
    result: StepResult,
    step: Step,
    impl: Implementation,
    ctx: ToolContext,
    known: tuple[Mapping[str, Any], frozenset[str]],
    pending: frozenset[str],
) -> None:
    """A dry run's step after one it needs that was only previewed (`pending`): what it
    would send, given what is `known` by now (the outputs of the steps that ran, those
    that did not run for a step that runs regardless). Its params known, it is prepared
    as any step is, its condition left to its run; its params waiting for a previewed
    step, those values are Pending, which its tool renders as far as it can tell
    (Handler.foresee_fn) and otherwise names."""
    tool = run.registry.get(step.tool)
    outputs, absent = known
    if not any(ref.step_id in pending for ref in find_references(step.params)):
        prepared = prepare(run, step, result, tool, impl, outputs, absent, ctx, pending)
        if prepared is not None:
            apply_verdict(result, prepared.verdict)
            run.finish(result, "previewed")
        return
    foreseen_params = foreseen(step.params, outputs, pending, step.id, absent)
    params = schema.with_defaults(foreseen_params, tool.params)
    result.params = as_shown(params)
    result.locks = tool.step_locks(params, run.target.name, run.target.config, ctx.dialect)
    dropped_ok = tool.skips_held_tables or step.always_run  # as _prepare says why
    _prepare_once(
        run,
        result,
        tool,
        ctx,
        1,
        lambda: _foresee(run, result, tool, impl, ctx, params, dropped_ok),
    )
    if result.status != "skipped":
        run.finish(result, "previewed")


def _foresee(
    run: RunContext,
    result: StepResult,
    tool: ToolDefinition,
    impl: Implementation,
    ctx: ToolContext,
    params: dict[str, Any],
    dropped_ok: bool,
) -> None:
    """The step's SQL, its tool told which params are Pending: its names checked as far as
    they are known, and what its tool reads to render it audited, as a step's are."""
    waiting = pending_params(params)
    known = {k: v for k, v in params.items() if k not in waiting}
    if "table" in waiting:  # its columns are checked against it: not yet
        known = {k: v for k, v in known.items() if tool.identifiers.get(k, ("",))[0] != "column"}
    catalog = run_catalog(run, ctx.connection)
    _check_identifiers(ctx.connection, tool, known, run.target.name, catalog, dropped_ok)
    guard = Guard(label=f"{result.step_id} ({tool.name})", memory=run.guard_memory)
    with audited(run, ctx, result.index, 0, guard):
        result.sql = [display(sql) for sql in impl.render_sql(params, ctx)]


def prepare(
    run: RunContext,
    step: Step,
    result: StepResult,
    tool: ToolDefinition,
    impl: Implementation,
    outputs: Mapping[str, Any],
    absent: frozenset[str],
    ctx: ToolContext,
    pending: frozenset[str] = frozenset(),
) -> PreparedStep | None:
    """Resolve, check, render and measure the step, then ask the policy; None when its
    condition does not hold (skipped; one naming `pending` steps, which a dry run only
    previewed, is left to its run). Anything wrong fails the step and stops the run. It
    only reads: a lock timeout on the way (a held table) and a lost connection (made again
    first) are tried again as the step's own would be (max_retries, with backoff); a lock
    still held then fails the step naming its holders, but a tool that skips held tables
    (heldtables.py) ends skipped, as it does for a table dropped since the run read it."""

    ask_again_if_due(run.guard_memory, ctx.run_cache)

    def once() -> PreparedStep | None:
        why = _unmet_condition(step, outputs, absent, pending)
        if why is not None:
            run.finish(result, "skipped", error=why)
            return None
        resolved = substitute(step.params, outputs, step.id, absent)
        return _prepare(run, step, result, tool, impl, ctx, resolved)

    # A dry run is a preview: it looks once, as `plan` does, and waits on a held table
    # no more than that (a run tries again with backoff: the table may be released).
    tries = 1 if run.dry_run else run.agent.defaults.max_retries + 1
    lost = LostConnection()
    attempt = 1
    try:
        for trying in step_retrying(run, result, tries, _worth_again):
            attempt = trying.attempt
            if not lost.made_again(run, ctx, result):
                break
            if attempt > 1:
                ctx.step_cache = {}  # measured afresh
            with trying, lost.watch(ctx):
                return _prepare_once(run, result, tool, ctx, attempt, once)
    except DBAPIError as exc:
        _stopped_meanwhile(run, result, ctx, exc)
        if tool.skips_held_tables and _skipped(run, result, tool, ctx, exc, attempt):
            return None
        if not is_lock_timeout(exc):
            raise  # the run fails on it (loop.py): resume starts the step again
        held = final_error(run, ctx, tool, result.params or step.params, exc, attempt)
        error = f"could not be prepared: {held}"
        run.finish(result, "failed", error=error)
        raise Stop(FAILED, f"{step.id} ({tool.name}) {error}") from None
    # The connection was lost and could not be made again: the run fails on the error
    # that lost it, as on any other (loop.py).
    assert lost.error is not None
    raise lost.error


def _worth_again(exc: DBAPIError) -> bool:
    """A held table may be released, and a lost connection made again (a dropped link,
    a failover): preparing the step is tried again on either, as its run is."""
    return is_lock_timeout(exc) or exc.connection_invalidated


def _unmet_condition(
    step: Step, outputs: Mapping[str, Any], absent: frozenset[str], pending: frozenset[str]
) -> str | None:
    """Why the step's condition keeps it from running, in words; None when it runs, or
    when it names a step only previewed (`pending`), whose output decides it at run time.

    Evaluated over the earlier outputs it names (conditions.py), never as Python; a
    value of a type the condition cannot compare fails the step, naming the condition."""
    if step.condition is None:
        return None
    condition = parse_condition(step.condition)
    if any(ref.step_id in pending for ref in condition.references):
        return None
    values = {
        ref.text: substitute(ref.text, outputs, step.id, absent) for ref in condition.references
    }
    if condition.holds(values, f"{step.id} ({step.tool})"):
        return None
    return unmet(step.condition, values)


def _prepare_once(
    run: RunContext,
    result: StepResult,
    tool: ToolDefinition,
    ctx: ToolContext,
    attempt: int,
    once: Callable[[], PreparedStep | None],
) -> PreparedStep | None:
    """One try; an error of aishell's skips or fails the step there, and so does what a
    package's handler raises while the step is rendered or measured (its failure, named
    as its run's is, not an internal error of aishell)."""
    try:
        return once()
    except AishellError as exc:
        _stopped_meanwhile(run, result, ctx, exc)
        if _skipped(run, result, tool, ctx, exc, attempt):
            return None
        run.finish(result, "failed", error=str(exc))
        raise Stop(FAILED, str(exc)) from None
    except Exception as exc:
        whose = whose_failure(tool, run.target.dialect)
        if isinstance(exc, SQLAlchemyError) or whose.startswith("internal error"):
            raise  # the server's (tried again, or the run's failure), or aishell's defect
        _stopped_meanwhile(run, result, ctx, exc)
        error = f"{whose}: {type(exc).__name__}: {exc}"
        run.finish(result, "failed", error=error)
        raise Stop(FAILED, error) from None


def _stopped_meanwhile(
    run: RunContext, result: StepResult, ctx: ToolContext, exc: Exception
) -> None:
    """A stop (a signal, the run's time limit, `aishell stop`) that came while the step
    was prepared is why it ended, whatever its reads then raised (a cancelled read, a
    statement refused once the stop came): nothing of it ran, so it ends interrupted and
    `aishell resume` prepares it again, as a step stopped while it runs does."""
    stopping = run.stopping
    if stopping.reason() is None:
        return
    error = f"interrupted by {stopping.signal or stopping.reason()}"
    raise run.interrupted(result, ctx.connection, error) from exc


def _skipped(
    run: RunContext,
    result: StepResult,
    tool: ToolDefinition,
    ctx: ToolContext,
    exc: Exception,
    tries: int,
) -> bool:
    """Its tables held or gone (heldtables.py): the step ends skipped, saying so."""
    skip = held_or_gone(run, tool, result.params, ctx, exc, tries, " while it was measured")
    if skip is None:
        return False
    result.output = skip.output
    run.finish(result, "skipped", error=skip.error)
    return True


def _prepare(
    run: RunContext,
    step: Step,
    result: StepResult,
    tool: ToolDefinition,
    impl: Implementation,
    ctx: ToolContext,
    resolved: dict[str, Any],
) -> PreparedStep:
    """One go at preparing the step (see prepare), its params resolved."""
    params = schema.with_defaults(resolved, tool.params)
    result.params = params
    result.locks = tool.step_locks(params, run.target.name, run.target.config, ctx.dialect)
    problems = schema.validate(params, tool.params, schema_json=tool.params_json)
    if problems:
        raise TargetError(f"{step.id} ({tool.name}): " + "; ".join(problems))
    catalog = run_catalog(run, ctx.connection)
    catalog.current(ctx.connection, tool.tables_in(params))
    if ctx.table_readings.planned is None:
        # What the steps measure of their tables is read for all of them at once; a dry
        # run's tables held now are known held before any step waits on one.
        ctx.table_readings.plan(plan_tables(run.plan, run.registry))
        ctx.table_readings.look_for_held(ctx.connection)
    # A table this run saw and that was dropped since is no wrong name for a tool that
    # reports it gone (heldtables.py), nor for a step that runs whatever happened
    # before it (the report names the plan's tables).
    dropped_ok = tool.skips_held_tables or step.always_run
    _check_identifiers(ctx.connection, tool, params, run.target.name, catalog, dropped_ok)
    # Measuring to decide what to run (pgstatindex, dbstat) sends statements too:
    # they are audited as attempt 0 of the step, and may only read.
    label = f"{step.id} ({tool.name})"
    guard = Guard(label=label, memory=run.guard_memory)
    with audited(run, ctx, result.index, 0, guard):
        rendered = impl.render_sql(params, ctx)
        result.sql = [display(sql) for sql in rendered]
        if run.dry_run or tool.risk_level is not RiskLevel.SAFE:
            # Every check the tool makes of its effect comes before the policy
            # and any prompt: a step that cannot run is refused before a yes.
            result.estimate = estimate_effect(tool, impl, params, ctx, catalog, rendered)
    writes = may_write(tool, impl, rendered, run.target.dialect)
    facts = _facts(run, tool, params, ctx, catalog, result.index, writes)
    _held_when_measured(impl, params, ctx)
    shown = (result.sql, result.locks)
    verdict = not_shown(run.plan, step.id, shown, writes, run.policy.check(facts))
    return PreparedStep(tool, impl, params, rendered, verdict, writes)


def _held_when_measured(impl: Any, params: Mapping[str, Any], ctx: ToolContext) -> None:
    """A table another session held when the step was measured against a row limit was
    never counted against it, so the step may not do it: a shared step leaves it out
    (handlers/shared.py); any other step, or one whose every table was held, meets the
    lock's error here, tried again as a lock wait is, then skipped or failed naming who
    holds it."""
    held = unmeasured_tables(ctx)
    if not held:
        return
    tables = params.get("tables")
    shared = getattr(impl, "shares_tables", False) and isinstance(tables, list)
    if shared and len(held) < len(set(tables or ())):
        return
    for table in held:
        ctx.table_readings.drop(table, MEASURED_SIZE)  # the step's next try looks again
    error = next((e for e in held.values() if e is not None), None)
    if error is None:
        table = next(iter(held))
        raise TargetError(held_when_measured(ctx.connection, table))
    raise error


def apply_verdict(result: StepResult, verdict: Verdict) -> None:
    if verdict.risk.rank > RiskLevel(result.risk_level).rank:
        result.risk_level = verdict.risk.value  # the server runs user code for it
    result.requires_approval = verdict.requires_approval
    result.confirmation = verdict.confirmation.value
    result.reasons = list(verdict.reasons)
    result.personal = list(verdict.personal)
    result.mitigations = list(verdict.mitigations)


def run_catalog(run: RunContext, conn: Connection) -> TableCatalog:
    """The target's tables as this run knows them, read at its first step that needs
    them; with the columns of every table the plan names with a column, for the first
    column check."""
    if run.catalog is None:
        run.catalog = TableCatalog.read(conn)
        run.catalog.want_columns(tables_with_columns(run.plan, run.registry))
        # A resumed run's plan was made on tables read then: one dropped since is gone,
        # as one dropped while the run went on is, not a wrong name.
        run.catalog.held_before(_tables_when_planned(run.plan))
    return run.catalog


def _tables_when_planned(plan: Plan) -> list[str]:
    """The tables the plan's assumptions say were there when it was made."""
    described, listed = plan.assumptions.get("tables"), plan.assumptions.get("all_tables")
    there = [t for t, info in described.items() if info] if isinstance(described, dict) else []
    return there + ([str(t) for t in listed] if isinstance(listed, list) else [])


def _facts(
    run: RunContext,
    tool: ToolDefinition,
    params: Mapping[str, Any],
    ctx: ToolContext,
    catalog: TableCatalog,
    index: int,
    writes: bool,
) -> StepFacts:
    return gather_facts(
        run.policy,
        tool,
        params,
        catalog,
        effect=ctx.step_cache.get("estimate"),
        now=run.clock(),
        store=run.store,
        backup_in_run=run.backup_before(index),
        dialect=run.target.dialect,
        writes=writes,
        measure=step_measure(run, ctx, index, tool, catalog),
        database=run.database,
        run_id=run.run_id,
    )


def _check_identifiers(
    conn: Connection,
    tool: ToolDefinition,
    params: Mapping[str, Any],
    target: str,
    catalog: TableCatalog,
    dropped_ok: bool,
) -> None:
    """Names in params must exist in the target's catalog before any SQL is built."""
    for name, (kind, is_list) in tool.identifiers.items():
        if name not in params:
            continue
        values = params[name] if is_list else [params[name]]
        if kind == "table":
            catalog.check_tables(conn, target, values, dropped_ok=dropped_ok)
        elif kind == "column":
            for value in values:
                catalog.check_column(conn, params["table"], value)
