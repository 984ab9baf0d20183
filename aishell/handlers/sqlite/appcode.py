"""What the SQLite handlers leave out because it needs the application's own functions
or collations (aishell/targets/appcode.py): the database's uses read once per dry run
or preview, else once per attempt, so that a step's render and its run agree; and the
refusal of a purge that needs it, read again as each of its steps starts."""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import TargetError
from aishell.handlers import read_once_in_dry_run
from aishell.targets.appcode import (
    AppCode,
    Use,
    missing_code,
    read_app_code,
    stops_delete,
    stops_insert,
    stops_reading,
)
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
    why = code.reason(table, "rows not counted", lambda u: _counts_by_key(u) or stops_reading(u))
    if why is not None:
        return None, why
    if code.of(table, _sorts_an_index):
        return f"SELECT count(*) FROM {quoted} NOT INDEXED", None
    return f"SELECT count(*) FROM {quoted}", None


def refuse_purge_app_code(
    conn: Connection, table: str, date_column: str, archive_table: str | None = None
) -> None:
    """Refuse, naming the table and why, a purge whose DELETE (its indexes' keys and
    expressions, its DELETE triggers, the date column's collation, a virtual table's
    module) or whose archive table's INSERT (its indexes, CHECK constraints, generated
    columns, defaults, INSERT triggers) needs the application's own code: every batch
    would fail, or one part way through. Read from the schema as it is now, when the
    job is planned and again when each step starts, before its first batch: a saved
    plan applied after a trigger or index was added is refused, not failed mid-way."""
    code = read_app_code(conn)
    uses = code.of(table, stops_delete([date_column]))
    if uses:
        said = "; ".join(dict.fromkeys(u.says() for u in uses))
        raise TargetError(
            f"Cannot purge {table}: a DELETE from it needs the application's own code, "
            f"which aishell does not have: {said}"
        )
    if archive_table:
        uses = code.of(archive_table, stops_insert)
        if uses:
            said = "; ".join(dict.fromkeys(u.says() for u in uses))
            raise TargetError(
                f"Cannot purge {table} into archive table {archive_table}: an INSERT into "
                f"it needs the application's own code, which aishell does not have: {said}"
            )
