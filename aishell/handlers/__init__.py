"""Python implementations of procedural tools: a package per engine for the maintenance
tools (aishell/handlers/postgresql, mysql, sqlite), a module per family for the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, NoReturn, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import AishellError, StepSkipped
from aishell.risk import RiskLevel
from aishell.targets.catalog import user_tables
from aishell.tool.context import Pending, ToolContext, fill_template, pending_params
from aishell.tool.report import ReportRule

T = TypeVar("T")
RunFn = Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]
RenderFn = Callable[[Mapping[str, Any], ToolContext], list[str]]
EstimateFn = Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]
CheckFn = Callable[[Mapping[str, Any], ToolContext], bool | None]
# Makes the run of a handler that sums up other steps from the catalog's report rules.
SummarizeFn = Callable[[Mapping[str, tuple[ReportRule, ...]]], RunFn]


@dataclass(frozen=True)
class Handler:
    """A procedural tool: its SQL templates (shown and parsed) and the code that runs them."""

    sql_templates: tuple[str, ...]
    run_fn: RunFn
    render_fn: RenderFn | None = None
    estimate_fn: EstimateFn | None = None
    check_fn: CheckFn | None = None
    # The least risk of what the handler does besides its SQL (files it deletes, programs
    # it starts); a tool using it can declare no less. `effect` says what that is.
    risk: RiskLevel = RiskLevel.SAFE
    effect: str = ""
    # Whether it may change its tables' rows, pages or indexes (what the run's catalog
    # holds of them, read again before a later step uses them). ANALYZE does not.
    changes_tables: bool = True
    # Whether every write it may make is among the statements its render gives, from
    # what it measured once for the step (a rebuild's chosen indexes), so that a render
    # that only reads ("nothing over the threshold") means the step writes nothing and
    # runs as a read (policy.may_write). False where the run decides afresh, or
    # acts besides its SQL.
    reads_when_it_renders_reads: bool = False
    # A handler that sums up a run's other steps (the maintenance report) counts each by
    # what its tool contributes (the `report:` of the tool's definition): the registry
    # makes its run_fn from the rules of the catalog it is loaded into.
    summarize: SummarizeFn | None = None
    # Whether a step given many tables commits each table's outcome as the table ends
    # (a shared step: handlers/shared.py), so that its statements' audit may ride with
    # that commit as a step of one small table's does.
    checkpoints_each_table: bool = False
    # Whether a step given `tables` does each alone and leaves out one it cannot do (a
    # shared step: handlers/shared.py), such as one held when it was measured.
    shares_tables: bool = False
    # Whether it stops itself, checkpointed, at the maintenance window's end
    # (ToolContext.ends_at): the executor then leaves that end to it, and bounds any
    # other step's attempt by it as by its max_execution_time (executor/attempts.py).
    holds_window_end: bool = False
    # What the step's second sessions may write besides its SQL (tool/side.py), by
    # engine family: shown with the tool's SQL (`aishell tools show`).
    second_session: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The tables a step acts on besides those its params name (a restore's, which its
    # backup decides), measured with them for its approval.
    subject_fn: Callable[[Mapping[str, Any], ToolContext], tuple[str, ...]] | None = None

    # Its render of a dry run's step whose params wait for an earlier step that was only
    # previewed (Pending values): what it would send, given what is known by then.
    # Without one such a step shows a placeholder naming what it waits for.
    foresee_fn: RenderFn | None = None

    def render_sql(self, params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        if self.render_fn is None or ctx.conn is None:
            # Fixed statements; or, with no session to render them by (`aishell tools
            # show`), every shape it may send.
            return [fill_template(sql, params, ctx) for sql in self.sql_templates]
        waiting = pending_params(params)
        if not waiting:
            return _called(self.render_fn, params, ctx)
        if self.foresee_fn is not None:
            return _called(self.foresee_fn, params, ctx)
        return [decided_when_run(waiting)]

    def run(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return self.run_fn(params, ctx)

    def estimate(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """The tool's own figures for what it would do (read-only)."""
        return _called(self.estimate_fn, params, ctx) if self.estimate_fn is not None else {}

    def subject_tables(self, params: Mapping[str, Any], ctx: ToolContext) -> tuple[str, ...]:
        """The tables the step acts on besides those its params name."""
        return _called(self.subject_fn, params, ctx) if self.subject_fn is not None else ()

    def check_done(self, params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
        """After a crash: is the step's effect in the database? None when it cannot tell."""
        return _called(self.check_fn, params, ctx) if self.check_fn is not None else None

    def in_catalog(self, rules: Mapping[str, tuple[ReportRule, ...]]) -> Handler:
        """This handler as a catalog with these report rules (by tool name) runs it."""
        if self.summarize is None:
            return self
        return replace(self, run_fn=self.summarize(rules))


class HandlerExited(AishellError):
    """A handler's function called sys.exit() while its step was measured or checked."""


def _called(fn: Callable[[Mapping[str, Any], ToolContext], T], params: Any, ctx: ToolContext) -> T:
    """fn(params, ctx). A sys.exit() in it (a package's handler is anyone's code) would
    end the command with the handler's status and nothing said, a scheduled run with
    exit 0: it fails the command instead, naming the function."""
    try:
        return fn(params, ctx)
    except SystemExit as exc:
        where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
        raise HandlerExited(
            f"the handler function {where} called sys.exit({exc.code!r}); correct or "
            "uninstall the package it comes from"
        ) from None


def decided_when_run(waiting: Mapping[str, list[Pending]]) -> str:
    """A step's statements where they depend on values an earlier step gives only when it
    runs: a marked placeholder naming them, never statements it may not send."""
    named = ", ".join(
        f"{name} ({', '.join(p.reference[2:-1] for p in held)})" for name, held in waiting.items()
    )
    steps = sorted({p.step_id for held in waiting.values() for p in held})
    return f"-- <statements chosen when it runs, from {named}: {', '.join(steps)} only previewed>"


def rebuilding(
    sql_templates: tuple[str, ...],
    run_fn: RunFn,
    render_fn: RenderFn,
    estimate_fn: EstimateFn,
    effect: str = "rebuilds indexes",
) -> Handler:
    """rebuild_fragmented_indexes on an engine: medium risk, and a read when what it
    renders only reads (no index over the threshold)."""
    return Handler(
        sql_templates=sql_templates,
        run_fn=run_fn,
        render_fn=render_fn,
        estimate_fn=estimate_fn,
        risk=RiskLevel.MEDIUM,
        effect=effect,
        reads_when_it_renders_reads=True,
    )


def cached(ctx: ToolContext, key: str, compute: Callable[[], T]) -> T:
    """compute() once per step: render_sql, the estimate and run share its answer."""
    if key not in ctx.step_cache:
        ctx.step_cache[key] = compute()
    answer: T = ctx.step_cache[key]
    return answer


def read_together(conn: Connection, read: Callable[[], list[T]]) -> list[T]:
    """The rows of one query of many tables (aishell/tool/readings.py), or none when it
    failed (a table held by another session past the lock wait, one that cannot be
    measured): each table is then read alone, as it would have been, and fails alone."""
    return rows_or_none(conn, read)


def rows_or_none(conn: Connection, read: Callable[[], list[T]]) -> list[T]:
    """read()'s rows, or none when the server refused the query (the transaction is
    rolled back, so that the next statement runs). A lost server is raised: it is the
    step's failure, never an empty answer."""
    try:
        return read()
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        with suppress(DBAPIError):
            conn.rollback()
        return []


def read_once_in_dry_run(ctx: ToolContext, key: str, compute: Callable[[], T]) -> T:
    """compute() once per dry run or preview, where no step writes and what it reads of
    the whole database stays as it was; else once per attempt, as `measured`."""
    if not ctx.dry_run:
        return measured(ctx, key, compute)
    if key not in ctx.run_cache:
        ctx.run_cache[key] = compute()
    answer: T = ctx.run_cache[key]
    return answer


def step_tables(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    """The tables a step names, else every user table but a virtual table's shadow tables
    (its module's own storage): read once per step, so its render (what a preview shows)
    and its run share one read."""
    named = list(params.get("tables") or [])
    if named:
        return named
    return cached(ctx, "step_tables", lambda: user_tables(ctx.connection, shadows=False))


def measured(ctx: ToolContext, key: str, compute: Callable[[], T]) -> T:
    """compute() once per attempt: the first attempt runs on what the step rendered
    from (what was shown and approved), a retry measures again what the failed attempt
    may have changed."""
    return cached(ctx, f"{key}@{ctx.attempt}", compute)


def each_table(statement: str) -> RenderFn:
    """A render_fn writing `statement` (with {table}) once per table in params['tables']."""

    def render(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        tables = params.get("tables")
        if not isinstance(tables, list) or not tables:
            return ["-- nothing to repair"]
        return [statement.replace("{table}", ctx.quote(t)) for t in tables]

    return render


def skip_table(table: str, reason: str, found: Mapping[str, Any] | None = None) -> NoReturn:
    """End the step skipped: the server (or the file system) would not, or did not, do
    its work on `table`. skipped_tables is what the report counts as not done; `found`,
    what the step learned before."""
    output = {
        "table": table,
        **(found or {}),
        "skipped_tables": [{"table": table, "reason": reason}],
    }
    raise StepSkipped(reason, output)


def former_module(*modules: ModuleType) -> Callable[[str], Handler]:
    """The `__getattr__` of a module that once held these modules' handlers, so that a
    site catalog's `handler: <former module>.<tool>` still finds them."""

    def handler(name: str) -> Handler:
        for module in modules:
            found = getattr(module, name, None)
            if isinstance(found, Handler):
                return found
        raise AttributeError(f"no handler {name!r}")

    return handler
