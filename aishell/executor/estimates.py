"""What a step would touch, measured before it runs: shown, and weighed by the policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aishell.dialects import family
from aishell.errors import StepFailed
from aishell.guard.calls import called_said, user_written_calls, vouched_for
from aishell.guard.connection import session_database
from aishell.guard.hidden import HiddenWriters, hidden_writers
from aishell.guard.memory import HIDDEN_WRITERS_KEY
from aishell.guard.statements import classify
from aishell.guard.usercode import user_code
from aishell.guard.usercodeactions import maintenance_actions, write_actions
from aishell.guard.writereach import Reach, write_reach
from aishell.registry import ToolDefinition
from aishell.risk import RiskLevel
from aishell.targets.tables import TableCatalog
from aishell.tool.context import Implementation, ToolContext


def subject(tables: tuple[str, ...]) -> str | None:
    """How a step's tables key the history of durations."""
    return ",".join(tables) if tables else None


def estimate_effect(
    tool: ToolDefinition,
    impl: Implementation,
    params: Mapping[str, Any],
    ctx: ToolContext,
    catalog: TableCatalog,
    rendered: Sequence[str],
) -> dict[str, Any]:
    """What the step would touch: rows and bytes of its tables (from the catalog, current
    for them), the tool's own figures, and what the rendered statements' writes do
    beyond the rows they name (writereach.py)."""
    if "estimate" not in ctx.step_cache:
        estimate: dict[str, Any] = {
            "tables": {
                t: {"rows": catalog.rows(t), "bytes": catalog.size(t)}
                for t in tool.tables_in(params)
            }
        }
        extra = getattr(impl, "estimate", None)
        if callable(extra):
            estimate.update(extra(params, ctx))
        reach = write_reach(ctx.connection, rendered)
        if reach is not None:
            estimate["cascades"] = reach.cascades_said(ctx.trusted_functions)
            estimate["fires"] = reach.fires
        code = _user_code(ctx, rendered, reach) + _functions_called(tool, ctx, rendered)
        if code:
            estimate["user_code"] = code
        ctx.step_cache["estimate"] = estimate
    return dict(ctx.step_cache["estimate"])


def _user_code(ctx: ToolContext, rendered: Sequence[str], reach: Reach | None) -> list[str]:
    """The user-defined code the server runs for the statements, that is not trusted
    (usercode.py): on the tables their writes and cascades reach, the tables they
    maintain, and the event triggers their DDL fires."""
    actions = list(maintenance_actions(rendered, ctx.dialect))
    if reach is not None:
        # InnoDB runs no trigger for the rows a foreign key's action writes.
        unfired = reach.by_keys if family(ctx.dialect) == "mysql" else []
        actions += write_actions(w for w in reach.writes if w not in unfired)
    trusted = ctx.trusted_functions
    code = user_code(ctx.connection, actions, trusted, ctx.run_cache)
    for fired in reach.event_triggers if reach is not None else []:
        if fired.function is not None and not vouched_for(*fired.function, trusted, fold=False):
            schema, name = fired.function
            code.append(f"{fired.said}: {schema}.{name}(), a user-defined function that may write")
    return code


def _functions_called(tool: ToolDefinition, ctx: ToolContext, rendered: Sequence[str]) -> list[str]:
    """The user-defined functions (not trusted) the statements themselves call, which
    may write whatever they do (`DELETE ... WHERE id = f()`), and the views they name
    that run such code (the view a write goes through, one its subquery reads, and the
    views under those): each names what the step runs unseen, as a trigger does. The
    guard passes such a write only in a step of a tool tagged high or critical, so a
    lower one is refused here, before any yes."""
    dialect = family(ctx.dialect)
    if dialect not in ("postgresql", "mysql"):
        return []
    # Below high, writes only: a read that calls one is refused by the guard as it is
    # sent, and recorded so (its own call's lookup is the guard's). A step of a tool
    # tagged high sends such a read as a write it was approved with: its yes must have
    # been given with the call named.
    high = tool.risk_level.rank >= RiskLevel.HIGH.rank
    writes = [sql for sql in rendered if high or classify(sql, dialect).writes]
    if not writes:
        return []
    # Asked of the catalog on a cursor of its own, as the guard asks it.
    cursor = ctx.connection.connection.cursor()
    try:
        called = user_written_calls(writes, dialect, cursor, ctx.trusted_functions)
        views = _views_named(ctx, writes, dialect, cursor)
    finally:
        cursor.close()
    found = [f"call {called_said({c: note})}" for c, note in called.items()]
    found += [f"read {name} ({why})" for name, why in views.items()]
    if not found:
        return []
    if tool.risk_level.rank < RiskLevel.HIGH.rank:
        raise StepFailed(
            f"its statements {'; '.join(found)}: user-defined code not known to only read, "
            f"a high risk, above the {tool.risk_level} of its tool (tag the tool high to "
            "approve it, or list the function in the target's trusted_functions if it "
            "only reads)"
        )
    return [
        f"its statements call {called_said({c: note})}, a user-defined function that may write"
        for c, note in called.items()
    ] + [f"its statements read {name}: {why}" for name, why in views.items()]


def _views_named(
    ctx: ToolContext, writes: Sequence[str], dialect: str, cursor: Any
) -> dict[str, str]:
    """{name: why} of the views (and tables) the writes name whose reading runs code that
    may write (guard/hidden.py, looked up once per run, as the guard looks it up)."""
    hidden = ctx.run_cache.get(HIDDEN_WRITERS_KEY)
    if not isinstance(hidden, HiddenWriters):
        hidden = ctx.run_cache[HIDDEN_WRITERS_KEY] = hidden_writers(
            dialect, cursor, ctx.trusted_functions
        )
    code = hidden.running_code
    found: dict[str, str] = {}
    for sql in writes:
        named = code.named_in(sql, dialect, lambda: session_database(cursor))
        if named is not None:
            found[named] = code.relations[named]
    return found
