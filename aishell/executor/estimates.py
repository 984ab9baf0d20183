"""What a step would touch, measured before it runs: shown, and weighed by the policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aishell.dialects import family
from aishell.guard.calls import vouched_for
from aishell.guard.usercode import user_code
from aishell.guard.usercodeactions import maintenance_actions, write_actions
from aishell.guard.writereach import Reach, write_reach
from aishell.registry import ToolDefinition
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
            estimate["cascades"], estimate["fires"] = reach.cascades, reach.fires
        code = _user_code(ctx, rendered, reach)
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
