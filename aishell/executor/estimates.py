"""What a step would touch, measured before it runs: shown, and weighed by the policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aishell.registry import Implementation, ToolContext, ToolDefinition
from aishell.tablecatalog import TableCatalog
from aishell.writereach import write_reach


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
        ctx.step_cache["estimate"] = estimate
    return dict(ctx.step_cache["estimate"])
