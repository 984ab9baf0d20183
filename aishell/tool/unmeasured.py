"""The tables of a step another session held when the step was measured against a row
limit (policy/measured.py): their rows were never counted, so the step may not do them.
A step that does its tables one at a time leaves them out, named with their holders; any
other meets the lock's error before it runs (executor/prepare.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from aishell.targets.lockholders import lock_holders
from aishell.tool.context import ToolContext

# Where a step keeps them (ToolContext.step_cache), each with the lock's error.
UNMEASURED_KEY = "policy:unmeasured"


def unmeasured_tables(ctx: ToolContext) -> dict[str, Any]:
    """The step's tables held when it was measured, each with the lock's error."""
    found = ctx.step_cache.get(UNMEASURED_KEY)
    return found if isinstance(found, dict) else {}


def held_when_measured(conn: Connection, table: str) -> str:
    """Why such a table is left out of its step, in words, its holders named."""
    return (
        f"{table} held past the lock wait when its rows were to be counted against "
        f"max_table_size, by {lock_holders(conn, [table])}: left for the next run"
    )
