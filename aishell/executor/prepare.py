"""Before a step runs: what it waits for, its parameters, its SQL and the policy's verdict.

Every check a step makes of its effect comes before the policy and any prompt, so a step
that cannot run is refused before anyone says yes to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell import schema
from aishell.errors import AishellError, TargetError
from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.estimates import estimate_effect
from aishell.executor.results import FAILED, StepResult
from aishell.executor.stopping import Stop
from aishell.guard import Guard
from aishell.plan import Step, tables_with_columns
from aishell.policy import StepFacts, Verdict, gather_facts, may_write
from aishell.registry import Implementation, RiskLevel, ToolContext, ToolDefinition
from aishell.sqltext import display
from aishell.substitution import substitute, unmet
from aishell.tablecatalog import TableCatalog


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
    run: RunContext, result: StepResult, step: Step, impl: Implementation, ctx: ToolContext
) -> None:
    """A dry run's step whose inputs earlier steps only previewed: its SQL, as it can
    be rendered without them."""
    offline = ToolContext(
        None, ctx.dialect, ctx.target, True, quote_identifier=ctx.quote_identifier
    )
    result.sql = impl.render_sql(step.params, offline)
    tool = run.registry.get(step.tool)
    known = schema.with_defaults(step.params, tool.params)
    result.locks = tool.step_locks(known, run.target.name, run.target.config, ctx.dialect)
    run.finish(result, "previewed")


def prepare(
    run: RunContext,
    step: Step,
    result: StepResult,
    tool: ToolDefinition,
    impl: Implementation,
    outputs: Mapping[str, Any],
    absent: frozenset[str],
    ctx: ToolContext,
) -> PreparedStep | None:
    """Resolve, check, render and measure the step, then ask the policy; None when its
    condition is empty (it is skipped). Anything wrong fails the step and stops the run."""
    try:
        if step.condition is not None and not substitute(step.condition, outputs, step.id, absent):
            run.finish(result, "skipped", error=unmet(step.condition))
            return None
        resolved = substitute(step.params, outputs, step.id, absent)
        params = schema.with_defaults(resolved, tool.params)
        result.params = params
        result.locks = tool.step_locks(params, run.target.name, run.target.config, ctx.dialect)
        problems = schema.validate(params, tool.params)
        if problems:
            raise TargetError(f"{step.id} ({tool.name}): " + "; ".join(problems))
        catalog = run_catalog(run, ctx.connection)
        catalog.current(ctx.connection, tool.tables_in(params))
        _check_identifiers(ctx.connection, tool, params, run.target.name, catalog)
        # Measuring to decide what to run (pgstatindex, dbstat) sends statements too:
        # they are audited as attempt 0 of the step, and may only read.
        label = f"{step.id} ({tool.name})"
        guard = Guard(label=label, memory=run.guard_memory)
        with audited(run, ctx.connection, result.index, 0, guard):
            rendered = impl.render_sql(params, ctx)
            result.sql = [display(sql) for sql in rendered]
            if run.dry_run or tool.risk_level is not RiskLevel.SAFE:
                # Every check the tool makes of its effect comes before the policy
                # and any prompt: a step that cannot run is refused before a yes.
                result.estimate = estimate_effect(tool, impl, params, ctx, catalog, rendered)
        writes = may_write(tool, impl, rendered, run.target.dialect)
        facts = _facts(run, tool, params, ctx, catalog, result.index, writes)
        verdict = run.policy.check(facts)
    except AishellError as exc:
        run.finish(result, "failed", error=str(exc))
        raise Stop(FAILED, str(exc)) from None
    return PreparedStep(tool, impl, params, rendered, verdict, writes)


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
    return run.catalog


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
    )


def _check_identifiers(
    conn: Connection,
    tool: ToolDefinition,
    params: Mapping[str, Any],
    target: str,
    catalog: TableCatalog,
) -> None:
    """Names in params must exist in the target's catalog before any SQL is built."""
    for name, (kind, is_list) in tool.identifiers.items():
        if name not in params:
            continue
        values = params[name] if is_list else [params[name]]
        if kind == "table":
            catalog.check_tables(conn, target, values)
        elif kind == "column":
            for value in values:
                catalog.check_column(conn, params["table"], value)
