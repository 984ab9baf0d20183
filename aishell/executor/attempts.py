"""Running a step's tool: each attempt under the guard, the step's deadline and the audit,
and what each way an attempt can end means for the step."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import (
    AishellError,
    NamedApprovalNeeded,
    StepInterrupted,
    StepSkipped,
    StepTimeout,
)
from aishell.executor.audit import audited
from aishell.executor.context import RunContext
from aishell.executor.covered import step_measure
from aishell.executor.effects import record_effects
from aishell.executor.failures import rollback, whose_failure
from aishell.executor.heldtables import held_or_gone
from aishell.executor.prepare import PreparedStep, apply_verdict, run_catalog
from aishell.executor.results import StepResult
from aishell.executor.resume import waiting_facts
from aishell.executor.retry import (
    LostConnection,
    allowed_retries,
    final_error,
    step_retrying,
    unreachable,
)
from aishell.executor.statuses import FINISHED
from aishell.executor.stopping import Stop
from aishell.guard.connection import Guard, shapes_for
from aishell.policy.hours import seconds_between
from aishell.policy.rules import gather_facts
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel
from aishell.state.values import dumps
from aishell.targets.access import session_access
from aishell.targets.deadlines import step_deadline
from aishell.targets.limits import TargetSilent
from aishell.targets.transient import is_transient
from aishell.tool.context import ToolContext
from aishell.tool.params import identifier_params


@dataclass(frozen=True)
class _Attempts:
    """What every attempt of one step runs with: its time limit, when the step started,
    and whether its start and end may ride with the next commit (quick)."""

    run: RunContext
    result: StepResult
    step: PreparedStep
    ctx: ToolContext
    limit: float
    started: float
    quick: bool
    # When the maintenance window closes (time.monotonic()), if one bounds the step.
    window: float | None = None


def run_tool(run: RunContext, result: StepResult, step: PreparedStep, ctx: ToolContext) -> None:
    """Run the tool until an attempt ends the step: it succeeds, is skipped, fails, or
    (an idempotent tool, a transient server error) is tried again after a wait."""
    tool = step.tool
    limit = min(tool.max_execution_time, run.agent.defaults.max_execution_time)
    # A dry run's reads look once, as its preparation does (prepare.py).
    retries = 0 if run.dry_run else allowed_retries(tool, run.agent.defaults)
    # The window holds it by its risk as judged (a low tool's step running user code is
    # high), and a step that only reads not at all, as the policy judged it.
    risk = RiskLevel(result.risk_level) if step.writes else RiskLevel.SAFE
    _long_step_hooks(run, result, tool, ctx, risk)
    run.observer.step_started(result, len(run.results))
    started = time.monotonic()
    writes = step.writes
    tables = tool.tables_in(step.params) if writes else ()
    if writes and run.catalog is not None and step.impl.changes_tables:
        # Whatever way it ends, it may have changed its tables (or, naming none, any):
        # they are read again before a later step uses them.
        run.catalog.changed(tables)
    if writes:
        # Earlier steps' readings of them too (an ANALYZE changes the estimates an
        # index's are made from); those its attempts make go with it.
        ctx.table_readings.step_starts(tables)
    try:
        window = None if ctx.seconds_left is None else started + ctx.seconds_left
        each = _Attempts(run, result, step, ctx, limit, started, _quick(run, step), window)
        _attempts(each, retries)
    finally:
        if writes:
            ctx.table_readings.step_ended(tables, result.status == "succeeded")


def _attempts(each: _Attempts, retries: int) -> None:
    run, result, step, ctx, started = each.run, each.result, each.step, each.ctx, each.started
    lost = LostConnection()
    try:
        for trying in step_retrying(run, result, retries + 1, is_transient):
            if not lost.made_again(run, ctx, result):
                assert lost.error is not None
                run.finish(result, "failed", error=unreachable(run, lost.error), started=started)
                return
            with trying, lost.watch(ctx):
                _one_attempt(each, trying.attempt)
    except DBAPIError as exc:
        # Not worth another try (or its last): the step ends skipped or failed.
        if not _skipped(run, result, step, ctx, exc, result.attempts, started):
            error = final_error(run, ctx, step.tool, step.params, exc, result.attempts)
            run.finish(result, "failed", error=error, started=started)


def _one_attempt(each: _Attempts, attempt: int) -> None:
    """One attempt, and how it ends the step; a server error is raised for the retry
    rule (retry.py) to judge."""
    run, result, step, ctx, started = each.run, each.result, each.step, each.ctx, each.started
    result.attempts = attempt
    result.status = "running"
    # A step that may take long (large tables, or naming none) is seen running by
    # other processes, with everything before it; a quick one's start commits
    # with its first write, its end, or the next commit.
    run.store.step_started(
        run.run_id,
        result.index,
        step.params,
        result.sql,
        attempt,
        durable=not each.quick,
        risk_level=result.risk_level,
    )
    try:
        output = _attempt(each, attempt)
    except Stop:
        raise
    except NamedApprovalNeeded as exc:
        rollback(ctx.connection)
        _waits_for_a_person(run, result, step, ctx, exc, started)
        return
    except StepSkipped as exc:
        # Whatever it did is committed (each tool commits its own work); the
        # server declined the rest, and the status says so.
        text = _kept_output(result, exc.details or None)
        run.finish(result, "skipped", error=str(exc), started=started, output_text=text)
        return
    except AishellError as exc:  # StepTimeout and StepFailed among them
        rollback(ctx.connection)
        record_effects(run, getattr(exc, "details", None) or {})
        if not _skipped(run, result, step, ctx, exc, attempt, started):
            run.finish(result, "failed", error=str(exc), started=started)
        return
    except DBAPIError:
        # After AishellError: a silent server (TargetSilent, both) ends the step there,
        # saying which limit; any other server error is the retry rule's to judge.
        raise
    # A defect in a tool, or a tool's sys.exit() (a plugin's, which would end the
    # command with its status and nothing said): the step fails, the run stops.
    except (Exception, SystemExit) as exc:
        lost = _lost_under(exc, ctx.connection)
        if lost is not None:
            raise lost from exc  # the retry rule's, as the loss is: reconnect, or resume
        rollback(ctx.connection)
        error = f"{whose_failure(step.tool, run.target.dialect)}: {type(exc).__name__}: {exc}"
        run.record_event(result.index, "internal_error", {"traceback": traceback.format_exc()})
        run.finish(result, "failed", error=error, started=started)
        return
    record_effects(run, output)
    text = _kept_output(result, output)
    run.finish(result, "succeeded", started=started, output_text=text)


def _lost_under(exc: BaseException, conn: Connection) -> DBAPIError | None:
    """The server error that lost the step's session, when what the tool raised came of
    going on with that session after it (SQLAlchemy's PendingRollbackError on a
    connection the loss invalidated, while handling the loss): the step lost its
    connection; its code did not fail."""
    if not conn.invalidated:
        return None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _skipped(
    run: RunContext,
    result: StepResult,
    step: PreparedStep,
    ctx: ToolContext,
    exc: Exception,
    attempt: int,
    started: float,
) -> bool:
    """A step whose tables were held past the lock wait at its last attempt, or dropped
    since the run read them, ends skipped with them named (heldtables.py), not failed;
    False when its failure is neither."""
    skip = held_or_gone(run, step.tool, step.params, ctx, exc, attempt)
    if skip is None:
        return False
    text = _kept_output(result, skip.output)
    run.finish(result, "skipped", error=skip.error, started=started, output_text=text)
    return True


def _waits_for_a_person(
    run: RunContext,
    result: StepResult,
    step: PreparedStep,
    ctx: ToolContext,
    exc: NamedApprovalNeeded,
    started: float,
) -> None:
    """Stopped at a limit, its work so far committed and checkpointed: it waits for a
    person's yes to that very step, which no flag gives. What that yes is given for is
    what is left, measured now: resume judges the step again against it."""
    record_effects(run, exc.details)
    text = _kept_output(result, exc.details or None)
    run.record_event(result.index, "named_approval_needed", {"reasons": exc.reasons})
    left = _left_when_stopped(exc.details)
    _judge_at_the_stop(run, result, step, ctx, {**left, "share_stop": exc.reasons[0]})
    run.store.record_request(run.run_id, result.index, True, waiting_facts(run, result, ctx, left))
    run.finish(result, "waiting_approval", error=str(exc), started=started, output_text=text)


def _left_when_stopped(details: Mapping[str, Any]) -> dict[str, Any]:
    """What a stop at a limit counted left (handlers/purge/share.py), as the figures an
    approval's rows and share are made of: the rows older than the cutoff, of the
    table's rows now; none (None: judged unmeasured, so asked about again) where the
    count was refused."""
    rows, total = details.get("old_rows_left"), details.get("table_rows_now")
    return {"rows_this_run": rows, "table_rows": total}


def _judge_at_the_stop(
    run: RunContext,
    result: StepResult,
    step: PreparedStep,
    ctx: ToolContext,
    stopped: Mapping[str, Any],
) -> None:
    """The step judged again as a resume will judge it: its estimate's rows and share
    those the stop counted left, its stop (`share_stop`) among its reasons, so that the
    yes after the stop is given for the verdict a resume finds where nothing changed
    (over max_share now, most likely, as what is left is most of what is kept). Where
    the server fails the reads, the verdict stays as it was (a resume then asks again
    where it differs); the stop's reason is the step's own either way."""
    effect = {**(result.estimate or {}), **stopped}
    try:
        catalog = run_catalog(run, ctx.connection)
        facts = gather_facts(
            run.policy,
            step.tool,
            step.params,
            catalog,
            effect=effect,
            now=run.clock(),
            store=run.store,
            backup_in_run=run.backup_before(result.index),
            dialect=run.target.dialect,
            writes=step.writes,
            measure=step_measure(run, ctx, result.index, step.tool, catalog),
            database=run.database,
            run_id=run.run_id,
        )
        apply_verdict(result, run.policy.check(facts))
    except (DBAPIError, AishellError):
        with suppress(DBAPIError):
            ctx.connection.rollback()
    # Only a person passes the stop, whatever the policy made of the figures.
    why = str(stopped["share_stop"])
    result.personal = [*result.personal, *([why] if why not in result.personal else [])]
    result.reasons = [*result.reasons, *([why] if why not in result.reasons else [])]


def _attempt(each: _Attempts, attempt: int) -> dict[str, Any]:
    """One attempt of the tool. A stop that came meanwhile (a signal, the run's time
    limit, `aishell stop`) ends the step interrupted, whatever the tool raised."""
    run, result, step, ctx, limit = each.run, each.result, each.step, each.ctx, each.limit
    tool = step.tool
    label = f"{result.step_id} ({tool.name})"
    limit, said = _attempt_limit(each, label)
    ctx.deadline = time.monotonic() + limit
    ctx.attempt = attempt
    # Whether it may write at all: its tool's risk, and what it rendered; what it
    # may write is what it rendered (shown, checked, approved) and its declared shapes.
    writes = step.writes
    guard = Guard(
        shapes=shapes_for(
            step.impl.sql_templates,
            step.rendered,
            ctx.connection,
            _identifiers(step, ctx),
            _listed(step, ctx),
        )
        if writes
        else None,
        writes=writes,
        risk=tool.risk_level,
        label=label,
        memory=run.guard_memory,
        runs_code=bool((result.estimate or {}).get("user_code")),
    )
    try:
        # With the step's statement limit, which step_deadline then finds set.
        session_access(ctx.connection, not writes, run.target.read_only, limit)
        with (
            step_deadline(ctx.connection, limit, label, said),
            audited(run, ctx, result.index, attempt, guard, each.quick),
        ):
            return step.impl.run(step.params, ctx)
    except Exception as exc:
        stopping = run.stopping
        stopped = isinstance(exc, StepInterrupted) and stopping.reason()
        cause = stopping.cause()
        if cause or stopped:  # whatever the tool raised, this is why
            error = str(exc) if stopped else str(cause)
            silent = _silence_in(exc)
            if silent is not None and cause:  # the server answered neither it nor the cancel
                error = f"{cause}; {silent}"
            raise run.interrupted(result, ctx.connection, error, each.started) from exc
        raise


def _attempt_limit(each: _Attempts, label: str) -> tuple[float, str | None]:
    """The attempt's time limit, and what a step stopped by it is told when that is the
    maintenance window's end (None: max_execution_time). A step is started in the window
    when it is expected to end before it closes, which is a guess (earlier runs, the
    table's size): what it really takes is bounded by the window's end as well, unless
    its tool stops itself there (a purge, checkpointed at its last batch)."""
    ctx = each.ctx
    if each.window is None or ctx.ends_at is None:
        return each.limit, None
    left = each.window - time.monotonic()
    # Each attempt's own time to the window's end: a tool that holds to it counts from
    # the attempt's start, and a retry starts later.
    ctx.seconds_left = max(left, 0.0)
    if getattr(each.step.impl, "holds_window_end", False) or left >= each.limit:
        return each.limit, None
    said = (
        f"{label} stopped: the maintenance window closes at {ctx.ends_at:%H:%M %Z}, and its "
        f"end bounds a running step as max_execution_time does; `aishell resume "
        f"{each.run.run_id}` runs it again in the window"
    )
    if left <= 0:
        raise StepTimeout(said)
    return left, said


def _silence_in(exc: BaseException) -> TargetSilent | None:
    """The TargetSilent that ended the step, whatever the tool wrapped it in."""
    seen: BaseException | None = exc
    for _ in range(10):  # a chain of causes, never a cycle
        if seen is None or isinstance(seen, TargetSilent):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# A step on tables this small (bytes with their indexes, by the catalog) takes a moment:
# it need not say it is running before it ends. On larger tables, or naming none, its
# start is committed before it sends anything, so that another process sees it running.
QUICK_STEP_BYTES = 64 * 2**20


def _quick(run: RunContext, step: PreparedStep) -> bool:
    tables = step.tool.tables_in(step.params)
    if run.catalog is None or not tables or run.durable_steps:
        return False
    sizes = [run.catalog.tables[t].bytes if t in run.catalog.tables else None for t in tables]
    if None in sizes:
        return False
    if getattr(step.impl, "checkpoints_each_table", False) and "tables" in step.params:
        # A shared step commits each table's outcome as the table ends
        # (handlers/shared.py): what rides, rides with that, so each table is judged.
        return max(s or 0 for s in sizes) < QUICK_STEP_BYTES
    return sum(s or 0 for s in sizes) < QUICK_STEP_BYTES


def _identifiers(step: PreparedStep, ctx: ToolContext) -> dict[str, str]:
    """The step's names of database objects, quoted, for its tool's statement shapes."""
    params = step.params
    return {
        name: ctx.quote(params[name])
        for name, (_kind, is_list) in identifier_params(step.tool.params).items()
        if not is_list and isinstance(params.get(name), str)
    }


def _listed(step: PreparedStep, ctx: ToolContext) -> dict[str, list[str]]:
    """The names a step lists (its `tables`), quoted, by the kind its tool's templates
    name one of them with ({table})."""
    params = step.params
    return {
        kind: [ctx.quote(v) for v in params[name] if isinstance(v, str)]
        for name, (kind, is_list) in identifier_params(step.tool.params).items()
        if is_list and isinstance(params.get(name), list)
    }


def _long_step_hooks(
    run: RunContext, result: StepResult, tool: ToolDefinition, ctx: ToolContext, risk: RiskLevel
) -> None:
    """What a long step (a purge) uses to checkpoint, report and budget itself."""
    store, run_id, index = run.store, run.run_id, result.index
    # Read only by the tools that checkpoint: one query less for every other step.
    ctx.load_progress = lambda: store.get_progress(run_id, index)
    ctx.save_progress = lambda progress: store.save_progress(run_id, index, progress)
    ctx.save_redoable_progress = lambda progress: store.save_progress(
        run_id, index, progress, durable=False
    )
    ctx.record_event = lambda kind, data: store.record_event(run_id, index, kind, data)
    ctx.queue_event = lambda kind, data: store.queue_event(run_id, index, kind, data)
    ctx.step_events = lambda kind: store.step_events(run_id, index, kind)
    report = getattr(run.observer, "step_progress", None)
    ctx.report = (lambda figures: report(result, figures)) if report else (lambda _f: None)
    now = run.clock()
    ctx.ends_at = run.policy.window_closes(tool, now, risk)
    ctx.seconds_left = None if ctx.ends_at is None else seconds_between(now, ctx.ends_at)
    ctx.open_target = run.open_target
    # Again here: a parallel group readies all its steps on one context first.
    ctx.max_share = run.max_share(tool.name)
    ctx.step_approvals = lambda: store.step_approvals(run_id, index)
    ctx.runs_progressing_with = lambda key, value: store.runs_progressing_with(
        key, value, FINISHED, run_id
    )


def _kept_output(result: StepResult, output: Any) -> str | None:
    """Keep in memory exactly what the store holds, so that later steps see the same
    values: the output through its JSON text, which is returned for the store to keep
    as it is (encoded once; None for no output)."""
    if output is None:
        result.output = None
        return None
    text = dumps(output)
    result.output = json.loads(text)
    return text
