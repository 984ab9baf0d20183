"""The guard's own lookups are bounded like the statement they judge.

Before a statement is sent, the guard may ask the server's catalog on a second cursor
of the same connection: what the functions it calls are (volatile, user-defined), and
what may make a read write without naming a function. On PostgreSQL (libpq has no read
timeout) those asks waited for ever on a server that stopped answering: a dump's look
at the server, or any step's first read, then hung until the run lock's look found the
server gone (10 s and more), and without a run lock for good. They now end at the
statement's own bound, the read timeout, in one line naming the setting.

The server's port is behind a proxy the test owns, frozen before the statement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from aishell.guard.connection import Guard
from tests.handlers.backup.test_silent_dump import ends_at_the_read_timeout, frozen_target


def _guarded(conn: Any, guard: Guard) -> None:
    """The guard on the connection's cursor events, as a step's audit puts it."""

    def before(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        why = guard.check(statement, cursor, "postgresql", conn.dialect.paramstyle)
        assert why is None, why

    event.listen(conn, "before_cursor_execute", before)


@pytest.mark.parametrize(
    "statement",
    [
        # Its function is looked up: volatile, and known to only read?
        "SELECT pg_catalog.pg_stat_clear_snapshot()",
        # A read on a read-write session: what may make a read write is looked up.
        "SELECT count(*) FROM pg_catalog.pg_class",
    ],
)
def test_a_guards_lookup_on_a_frozen_server_ends_at_the_read_timeout(
    home: Path, pg_url: str, statement: str
):
    with frozen_target(home, pg_url) as (target, proxy):
        conn = target.connect()
        conn.execute(text("SELECT 1")).scalar()  # connected before the freeze
        _guarded(conn, Guard(label="a read", connection=conn))
        ends_at_the_read_timeout(proxy, lambda: conn.execute(text(statement)))
