"""Python implementations of procedural tools, one module per family of tools."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aishell.registry import RiskLevel, ToolContext, fill_template

RunFn = Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]
RenderFn = Callable[[Mapping[str, Any], ToolContext], list[str]]
EstimateFn = Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]
CheckFn = Callable[[Mapping[str, Any], ToolContext], bool | None]


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

    def render_sql(self, params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        if self.render_fn is not None and ctx.conn is not None:
            return self.render_fn(params, ctx)
        return [fill_template(sql, params, ctx) for sql in self.sql_templates]

    def run(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return self.run_fn(params, ctx)

    def estimate(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """The tool's own figures for what it would do (read-only)."""
        return self.estimate_fn(params, ctx) if self.estimate_fn is not None else {}

    def check_done(self, params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
        """After a crash: is the step's effect in the database? None when it cannot tell."""
        return self.check_fn(params, ctx) if self.check_fn is not None else None


def cached(ctx: ToolContext, key: str, compute: Callable[[], Any]) -> Any:
    """compute() once per step: render_sql, the estimate and run share its answer."""
    if key not in ctx.step_cache:
        ctx.step_cache[key] = compute()
    return ctx.step_cache[key]


def corruption_report(
    tables: list[str], issues: list[dict[str, str]], **extra: Any
) -> dict[str, Any]:
    """check_table_corruption's output, the same on every dialect."""
    corrupted = sorted({i["table"] for i in issues})
    return {
        "checked_tables": tables,
        "corrupted_tables": corrupted,
        "issues": issues[:200],
        "ok": not corrupted,
        **extra,
    }


def each_table(statement: str) -> RenderFn:
    """A render_fn writing `statement` (with {table}) once per table in params['tables']."""

    def render(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        tables = params.get("tables")
        if not isinstance(tables, list) or not tables:
            return ["-- nothing to repair"]
        return [statement.replace("{table}", ctx.quote(t)) for t in tables]

    return render
