"""The rows of each table of a PostgreSQL dump, counted in the dump's own snapshot
(count(*) of each, which sees exactly the rows pg_dump copies) on a thread of its own
while pg_dump streams; a table aishell's login may not read is refused first."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aishell.errors import StepFailed, StepInterrupted, StepTimeout
from aishell.sqltext import quote_identifier, text
from aishell.targets.deadlines import cancel_then_sever
from aishell.targets.limits import Limits
from aishell.targets.lockholders import is_lock_timeout
from aishell.targets.servermessage import server_message
from aishell.tool.context import ToolContext

# Relations counted by one statement.
COUNT_BATCH = 100


@dataclass(frozen=True)
class Relation:
    oid: int
    kind: str
    quoted: str  # schema-qualified, quoted
    schema: str = ""
    name: str = ""


# Each user table (as aishell.targets.catalog.user_tables lists them), with itself and every
# table that inherits from it, at any depth: count(*) of a table counts their rows too.
_TABLE_TREES = """
WITH RECURSIVE tree(top, rel) AS (
    SELECT c.oid, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
  UNION
    SELECT tree.top, i.inhrelid FROM tree JOIN pg_inherits i ON i.inhparent = tree.rel
)
SELECT t.relname, r.oid, r.relkind, n.nspname, r.relname
FROM tree JOIN pg_class t ON t.oid = tree.top JOIN pg_class r ON r.oid = tree.rel
JOIN pg_namespace n ON n.oid = r.relnamespace
ORDER BY 1
"""


# The tables and sequences pg_dump reads that this login may not read: pg_dump stops at
# the first (and the rows counted in its snapshot, where the table comes first, end the
# snapshot's transaction, so that pg_dump says only that the snapshot is gone).
_UNREADABLE = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname <> 'information_schema'
  AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_%'
  AND NOT pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY 1, 2 LIMIT 6
"""


def refuse_unreadable(conn: Connection) -> None:
    """Before anything is written: the tables and sequences this login may not read."""
    found = [f"{schema}.{name}" for schema, name in conn.execute(text(_UNREADABLE))]
    if not found:
        return
    user = str(conn.execute(text("SELECT current_user")).scalar())
    shown = ", ".join(found[:5]) + (" and more" if len(found) > 5 else "")
    raise StepFailed(
        f"The login {user} may not read {shown} (no SELECT privilege): a backup reads every "
        f"table and sequence; grant it (GRANT SELECT ON ... TO {user}) or back up as a "
        "role that may read them; nothing was written"
    )


def table_trees(conn: Connection) -> dict[str, list[Relation]]:
    trees: dict[str, list[Relation]] = {}
    for table, oid, kind, schema, name in conn.execute(text(_TABLE_TREES)):
        quoted = f"{quote_identifier(conn.dialect, schema)}.{quote_identifier(conn.dialect, name)}"
        relation = Relation(int(oid), str(kind), quoted, str(schema), str(name))
        trees.setdefault(table, []).append(relation)
    return trees


def relation_rows(
    snap: Connection, trees: dict[str, list[Relation]], sums: dict[str, tuple[int, str]]
) -> dict[int, int]:
    """count(*) of each relation's own rows (ONLY: not those of the tables inheriting
    from it), COUNT_BATCH relations to a statement; a partitioned table holds none, and
    a table with no other in its tree whose rows an increment's checksum read has them."""
    own = {rel.oid: 0 for tree in trees.values() for rel in tree if rel.kind == "p"}
    own.update(
        (tree[0].oid, sums[t][0]) for t, tree in trees.items() if len(tree) == 1 and t in sums
    )
    relations = {rel.oid: rel for tree in trees.values() for rel in tree if rel.oid not in own}
    listed = list(relations.values())
    for start in range(0, len(listed), COUNT_BATCH):
        batch = listed[start : start + COUNT_BATCH]
        union = " UNION ALL ".join(
            f"SELECT {rel.oid}::oid, count(*) FROM ONLY {rel.quoted}" for rel in batch
        )
        own.update((int(oid), int(rows)) for oid, rows in snap.execute(text(union)))
    return own


def pg_counts(trees: dict[str, list[Relation]], own: dict[int, int]) -> dict[str, int]:
    """Each table's count(*) in the snapshot: its own rows and those of every table
    inheriting from it."""
    return {table: sum(own[rel.oid] for rel in tree) for table, tree in trees.items()}


# How often the wait for the counts after the dump looks whether the run must stop.
COUNT_WAIT_SECONDS = 0.1


@contextmanager
def counting(
    snap: Connection,
    trees: dict[str, list[Relation]],
    sums: dict[str, tuple[int, str]],
    ctx: ToolContext,
) -> Iterator[dict[int, int]]:
    """The rows of each relation, counted in the snapshot on a thread of its own while
    the block runs (the dump), and filled in when it ends. The snapshot's session is
    the thread's until then. A block that fails cancels the count; so does a stop of
    the run, or the step's time limit, while the count goes on after the block."""
    own: dict[int, int] = {}
    failed: list[BaseException] = []

    def count() -> None:
        try:
            own.update(relation_rows(snap, trees, sums))
        except BaseException as exc:  # raised again in the step's thread
            failed.append(exc)

    def ended(seconds: float) -> bool:
        counter.join(seconds)
        return not counter.is_alive()

    def cancel() -> None:
        # Bounded as every stop's cancel is: on a server that answers neither the count
        # nor the cancel, the snapshot's socket is closed read_timeout_seconds on.
        if counter.is_alive():
            cancel_then_sever(snap, ended, time.monotonic(), Limits.unanswered_cancel)
        counter.join()

    counter = threading.Thread(target=count, name="aishell-row-counts", daemon=True)
    counter.start()
    try:
        yield own
    except BaseException as exc:
        # A count that failed first ended the snapshot's transaction: that is why the
        # dump failed (pg_dump says only that the snapshot is gone).
        first = failed[0] if failed else None
        cancel()
        # A lock wait is the dump's own to say, naming who holds the table (lockwait.py).
        said_by_dump = isinstance(exc, StepInterrupted) or (
            isinstance(first, DBAPIError) and is_lock_timeout(first)
        )
        if isinstance(first, SQLAlchemyError) and not said_by_dump:
            raise StepFailed(
                f"counting the rows in the dump's snapshot failed ({server_message(first)}), "
                "which ended the snapshot pg_dump reads"
            ) from None
        raise
    while counter.is_alive():
        counter.join(COUNT_WAIT_SECONDS)
        if ctx.should_stop():
            cancel()
            raise StepInterrupted("counting the rows was stopped: the run was asked to stop")
        if ctx.deadline is not None and time.monotonic() > ctx.deadline:
            cancel()
            raise StepTimeout("counting the rows ran past the step's time limit and was stopped")
    if failed:
        raise failed[0]
