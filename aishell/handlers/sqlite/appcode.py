"""What the SQLite handlers leave out because it needs the application's own functions
or collations (aishell/targets/appcode.py): the database's uses read once per dry run
or preview, else once per attempt, so that a step's render and its run agree."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from aishell.handlers import read_once_in_dry_run
from aishell.targets.appcode import AppCode, Use, missing_code, read_app_code
from aishell.tool.context import ToolContext


def app_code(ctx: ToolContext) -> AppCode:
    """The target's uses of application code, from one read of its schema."""
    return read_once_in_dry_run(ctx, "sqlite app code", lambda: read_app_code(ctx.connection))


def needs_app_code(exc: DBAPIError, table: str, what: str) -> str | None:
    """A reason naming the table for an error that says a statement needed a function
    or collation this connection lacks (one the schema read did not foresee); None for
    any other error."""
    lacked = missing_code(exc)
    if lacked is None:
        return None
    name, collation = lacked
    needed = f"collation {name}" if collation else f"{name}()"
    return f"{table}: {what}: it needs {needed}, which the application defines, not SQLite"


def _counts_by_key(use: Use) -> bool:
    return use.kind == "primary key" and use.collation


def _sorts_an_index(use: Use) -> bool:
    return use.kind == "index" and use.collation


def count_statement(ctx: ToolContext, table: str) -> tuple[str | None, str | None]:
    """The statement that counts the table's rows without the application's code, or
    None and why not. An index sorted by its collation is one SQLite may count with,
    and cannot open: the table's own b-tree is counted (NOT INDEXED); a WITHOUT ROWID
    table sorted by one has no other."""
    code = app_code(ctx)
    quoted = ctx.quote(table)
    why = code.reason(table, "rows not counted", _counts_by_key)
    if why is not None:
        return None, why
    if code.of(table, _sorts_an_index):
        return f"SELECT count(*) FROM {quoted} NOT INDEXED", None
    return f"SELECT count(*) FROM {quoted}", None
