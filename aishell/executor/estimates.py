"""What a step would touch, measured before it runs: shown, and weighed by the policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aishell.registry import Implementation, ToolContext, ToolDefinition
from aishell.tablecatalog import TableCatalog


def subject(tables: tuple[str, ...]) -> str | None:
    """How a step's tables key the history of durations."""
    return ",".join(tables) if tables else None


def estimate_effect(
    tool: ToolDefinition,
    impl: Implementation,
    params: Mapping[str, Any],
    ctx: ToolContext,
    catalog: TableCatalog,
) -> dict[str, Any]:
    """What the step would touch: rows and bytes of its tables (from the catalog, current
    for them), and the tool's own figures."""
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
        ctx.step_cache["estimate"] = estimate
    return dict(ctx.step_cache["estimate"])
