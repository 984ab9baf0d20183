"""A tool whose work is fixed SQL, as its definition gives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aishell.sqltext import text
from aishell.tool.context import ToolContext, fill_template


@dataclass(frozen=True)
class SqlImplementation:
    """A tool whose work is fixed SQL: identifiers as {name} (quoted), values as :name (bound)."""

    sql_templates: tuple[str, ...]
    result: Literal["none", "one", "all"]
    identifiers: frozenset[str]
    check_sql: str | None = None
    # Fixed SQL may do anything its risk allows to its tables.
    changes_tables: bool = True
    # Its SQL is the same every time: a tool whose author tagged reads medium keeps that
    # risk (their load, say). Only a handler that finds nothing to do runs as a read.
    reads_when_it_renders_reads: bool = False

    def render_sql(self, params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        return [fill_template(sql, params, ctx) for sql in self.sql_templates]

    def run(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        output: dict[str, Any] = {}
        statements = self.render_sql(params, ctx)
        for position, sql in enumerate(statements, start=1):
            bound = {k: v for k, v in params.items() if f":{k}" in sql}
            result = conn.execute(text(sql), bound)
            if position < len(statements):
                continue  # the result mode applies to the last statement
            if not result.returns_rows:
                # A statement that returns no result set (ANALYZE, a write): no rows, for
                # every mode; `one` finds no row, as a SELECT of nothing would.
                output = _no_rows(self.result, result.rowcount)
            elif self.result == "one":
                row = result.mappings().first()
                output = dict(row) if row is not None else {}
            elif self.result == "all":
                output = {"rows": [dict(r) for r in result.mappings()]}
            else:
                output = {"rowcount": max(result.rowcount, 0)}
        if conn.in_transaction():
            conn.commit()
        return output

    def check_done(self, params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
        if self.check_sql is None:
            return None
        sql = fill_template(self.check_sql, params, ctx)
        bound = {k: v for k, v in params.items() if f":{k}" in sql}
        return bool(ctx.connection.execute(text(sql), bound).scalar())


def _no_rows(mode: str, rowcount: int) -> dict[str, Any]:
    """The output of each result mode for a statement that returned no result set."""
    if mode == "all":
        return {"rows": []}
    if mode == "one":
        return {}
    return {"rowcount": max(rowcount, 0)}
