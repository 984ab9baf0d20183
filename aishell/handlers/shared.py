"""One step over many small tables, for a tool written for one table.

A full maintenance of thousands of small tables would otherwise pay a step (its checks,
its verdict, its checkpoint in state.db) for each VACUUM or REINDEX that costs the
server a few milliseconds. A step given `tables` runs its tool's one-table handler on
each table in turn, in the order listed and on nothing else, so that the step's
approval covers exactly the tables it names; its SQL is each table's, in that order.

Each table's outcome is in the step's output (`by_table`, `tables_done`,
`skipped_tables`, `tables_gone`). A handler that may change its tables checkpoints
each table's output as it ends (the step's progress in state.db, committed before the
next table starts) if the table wrote, so that a step cut short, by a crash of aishell
or a failed attempt, goes on at the first table not written and reports the ones done
before it. That commit does not wait on the disk: the store's next durable commit (the
audit row before a REINDEX CONCURRENTLY, the step's end) makes it durable, and a crash
of the machine before then has the step do those tables again, as harmless as a
VACUUM, ANALYZE, OPTIMIZE or REINDEX run twice.
A table that only read this time (its rebuild found nothing over the threshold) is
read again after a crash, as is every table of a step that only reads: reading again
is harmless.

One table's trouble does not stop the others: a table the server skipped (not the
owner, no privilege) or dropped since the plan is named, one held past the lock wait
is tried again once after the others (handlers/held.py), then skipped with its holders
named. When no table was done the step ends skipped, or raises the lock's error so
that the executor retries it as any step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import Handler, cached
from aishell.handlers.held import Tablewise, one_at_a_time, unless_none_done
from aishell.state.schema import TABLE_DONE
from aishell.targets.catalog import user_tables
from aishell.terminal import printable
from aishell.tool.context import ToolContext
from aishell.tool.unmeasured import held_when_measured, unmeasured_tables


def shared_step(handler: Handler, what: str) -> Handler:
    """`handler` (of a step given `table`) for a step given `tables` too; `what` names
    its work in the reasons a table is skipped ("VACUUM")."""

    def render(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        tables = _tables(params)
        if tables is None:
            return handler.render_sql(params, ctx)
        measured = _measured(handler, what, params, tables, ctx)
        sql: list[str] = []
        for table in tables:
            if table in measured.sql:
                sql += measured.sql[table]
            else:
                sql.append(_left_out_line(ctx, table, measured))
        # A read of many tables at once (the catalog's estimates) each table's render
        # gives alike is shown once; every statement naming a table stays.
        return list(dict.fromkeys(sql))

    def estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        tables = _tables(params)
        if tables is None:
            return handler.estimate(params, ctx)
        measured = _measured(handler, what, params, tables, ctx)
        merged: dict[str, Any] = {}
        for table in tables:
            if table in measured.sql:
                with _OfTable(ctx, table):
                    _merge(merged, handler.estimate(_one(params, table), ctx))
        return merged

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        tables = _tables(params)
        if tables is None:
            return handler.run(params, ctx)
        return _run_each(handler, what, params, tables, ctx)

    return replace(
        handler,
        run_fn=run,
        render_fn=render,
        estimate_fn=estimate if handler.estimate_fn is not None else None,
        check_fn=None,
        checkpoints_each_table=handler.changes_tables,
        shares_tables=True,
    )


def _tables(params: Mapping[str, Any]) -> list[str] | None:
    """The step's tables, each once, in order; None for a step of one `table`."""
    tables = params.get("tables")
    if tables is None:
        return None
    return list(dict.fromkeys(str(t) for t in tables))


def _one(params: Mapping[str, Any], table: str) -> dict[str, Any]:
    """The params of the one-table step the handler was written for."""
    one = dict(params)
    one.pop("tables", None)
    one["table"] = table
    return one


# A key of a handler's step cache that starts so is the step's, not one table's: what
# is of the database, not of a table (MySQL's leftovers of an interrupted ALTER).
STEP_KEY = "step:"


class _TableCache(dict[str, Any]):
    """One table's step cache; its STEP_KEY keys are the step's."""

    def __init__(self, step: dict[str, Any]) -> None:
        super().__init__()
        self.step = step

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key.startswith(STEP_KEY):
            return key in self.step
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        return self.step[key] if key.startswith(STEP_KEY) else super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith(STEP_KEY):
            self.step[key] = value
        else:
            super().__setitem__(key, value)


class _OfTable:
    """The context with a step cache of the table's own: what the handler measured of
    one table (for its render, its estimate and its run) is kept apart from the others',
    and across the step's attempts. A class, not a generator: a step of 10,000 tables
    enters one per table for each of its render, estimate and run."""

    __slots__ = ("_ctx", "_outer", "_table")

    def __init__(self, ctx: ToolContext, table: str) -> None:
        self._ctx, self._table = ctx, table
        self._outer = ctx.step_cache

    def __enter__(self) -> ToolContext:
        outer, key = self._outer, f"table:{self._table}"
        own = outer.get(key)
        if own is None:
            own = outer[key] = _TableCache(outer)
        self._ctx.step_cache = own
        return self._ctx

    def __exit__(self, *_exc: object) -> None:
        self._ctx.step_cache = self._outer


def _merge(merged: dict[str, Any], figures: Mapping[str, Any]) -> None:
    """One table's estimate into the step's: lists joined, numbers summed, flags or-ed."""
    for key, value in figures.items():
        if isinstance(value, bool):
            merged[key] = merged.get(key, False) or value
        elif isinstance(value, int | float):
            merged[key] = merged.get(key, 0) + value
        elif isinstance(value, list):
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged.setdefault(key, value)


@dataclass
class _Measured:
    """What rendering a shared step found: each table's statements, and the tables it
    could not measure (held past the lock wait, with why; dropped since the plan)."""

    sql: dict[str, list[str]] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)


def _measured(
    handler: Handler, what: str, params: Mapping[str, Any], tables: list[str], ctx: ToolContext
) -> _Measured:
    """Each table rendered (what the handler measures to decide what to send), once per
    step: one held or dropped table leaves the others measured, and is left out of the
    step. Every table held: the lock's error, so that the step is retried, then
    skipped, as a step of one table would be."""

    def measure() -> _Measured:
        def render(table: str) -> list[str] | None:
            with _OfTable(ctx, table):
                try:
                    return handler.render_sql(_one(params, table), ctx)
                except StepFailed:
                    if not _dropped(ctx, table):
                        raise
                    return None

        found = one_at_a_time(ctx.connection, tables, render, what, ctx.table_readings)
        if found.lock_error is not None and len(found.held) == len(tables):
            raise found.lock_error
        gone = [*found.gone, *(t for t, sql in found.done.items() if sql is None)]
        sql = {t: rendered for t, rendered in found.done.items() if rendered is not None}
        return _Measured(sql, dict(found.held), gone)

    found: _Measured = cached(ctx, "shared:measured", measure)
    return found


def _left_out_line(ctx: ToolContext, table: str, measured: _Measured) -> str:
    """The comment a preview shows for a table the step leaves out, saying why as the run
    will (a plan has no output to look in), on one line: the holder's statement, or a
    name, may hold a line break."""
    held = measured.held.get(table)
    why = f"not measured, so left out: {held}" if held is not None else "dropped since the plan"
    return printable(f"-- {ctx.quote(table)}: {why}")


def _run_each(
    handler: Handler,
    what: str,
    params: Mapping[str, Any],
    tables: list[str],
    ctx: ToolContext,
) -> dict[str, Any]:
    conn = ctx.connection
    keeps = handler.changes_tables
    # What an earlier attempt of this step (in this process or before a crash) did: the
    # tables it settled, in its progress, and the output of each table done, in an event
    # of its own (written once, committed with the progress that names the table).
    saved = dict(ctx.load_progress() or {}) if keeps else {}
    outputs = {e["table"]: e["output"] for e in ctx.step_events(TABLE_DONE)} if saved else {}
    done: dict[str, dict[str, Any]] = {t: outputs[t] for t in saved.get("done") or []}
    skipped: list[dict[str, Any]] = list(saved.get("skipped_tables") or [])
    gone: list[str] = list(saved.get("tables_gone") or [])
    settled = {*done, *gone, *(s["table"] for s in skipped)}

    def checkpoint() -> None:
        if keeps:  # redoable: the tools shared are idempotent (the module's docstring)
            kept = {"done": list(done), "skipped_tables": skipped, "tables_gone": gone}
            ctx.save_redoable_progress(kept)

    def work(table: str) -> None:
        wrote = ctx.writes_sent
        with _OfTable(ctx, table):
            try:
                output = handler.run(_one(params, table), ctx)
            except StepSkipped as exc:
                skipped.extend(_skipped_entries(table, exc))
            except StepFailed:
                if not _dropped(ctx, table):
                    raise
                gone.append(table)
            else:
                done[table] = output
                if keeps:
                    ctx.queue_event(TABLE_DONE, {"table": table, "output": output})
        # A table that only read this time (nothing to rebuild, nothing to compact) is
        # read again after a crash, harmlessly: its outcome commits with the next
        # table's that wrote, or with the step's end.
        if ctx.writes_sent > wrote:
            checkpoint()

    held, dropped = _left_out(handler, what, params, tables, ctx)
    for table, why in held.items():
        if table not in settled:
            skipped.append({"table": table, "reason": why, "cause": "locked"})
    gone += [t for t in dropped if t not in settled]
    settled |= {*held, *dropped}
    todo = [t for t in tables if t not in settled]
    found: Tablewise[None] = one_at_a_time(conn, todo, work, what, ctx.table_readings)
    gone += [t for t in found.gone if t not in gone]
    skipped += [{"table": t, "reason": why, "cause": "locked"} for t, why in found.held.items()]
    if found.held or found.gone:
        checkpoint()
    if not done and found.lock_error is not None and len(found.held) == len(todo):
        raise found.lock_error
    return _output(tables, done, skipped, gone)


def _left_out(
    handler: Handler, what: str, params: Mapping[str, Any], tables: list[str], ctx: ToolContext
) -> tuple[dict[str, str], list[str]]:
    """What the step leaves out: the tables rendering found held (with why) or gone, as
    the step showed; and those another session held when the step was measured against
    a row limit, whose rows were not counted (tool/unmeasured.py)."""
    measured = _measured(handler, what, params, tables, ctx)
    unmeasured = {t: held_when_measured(ctx.connection, t) for t in unmeasured_tables(ctx)}
    return {**measured.held, **unmeasured}, measured.gone


def _dropped(ctx: ToolContext, table: str) -> bool:
    """After a StepFailed of `table`: whether it was dropped since the plan (reported
    gone); otherwise the failure is the step's."""
    return table not in user_tables(ctx.connection)


def _skipped_entries(table: str, exc: StepSkipped) -> list[dict[str, Any]]:
    """How the handler said it skipped the table, or its reason."""
    found = exc.details.get("skipped_tables")
    named = [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []
    return named or [{"table": table, "reason": str(exc)}]


def _output(
    tables: list[str],
    done: dict[str, dict[str, Any]],
    skipped: list[dict[str, Any]],
    gone: list[str],
) -> dict[str, Any]:
    """Each table's outcome, in the order the step lists them, and what the report adds
    up across them (each by its table in by_table)."""
    # The tool's own keys, added up over the tables done (a count, a size, a flag), so
    # that a reference to one means the step's; a share of one table is no sum.
    summed: dict[str, Any] = {}
    for t in tables:
        if t in done:
            _merge(
                summed,
                {
                    k: v
                    for k, v in done[t].items()
                    if isinstance(v, int | float) and "percent" not in k
                },
            )
    output: dict[str, Any] = {
        **summed,
        "table": None,
        "tables": tables,
        "tables_done": [t for t in tables if t in done],
        "by_table": [{**done[t], "table": t} for t in tables if t in done],
        "skipped_tables": skipped,
        "tables_gone": gone,
    }
    return unless_none_done(bool(done), skipped, gone, output)
