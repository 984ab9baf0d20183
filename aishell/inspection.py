"""SQLAlchemy's inspector on a connection, which leaves the connection's error hooks on.

On MySQL and MariaDB the inspector reads a table through SHOW CREATE TABLE and DESCRIBE
sent with `skip_user_error_events`, and SQLAlchemy 2 sets an execution option on the
Connection itself: every later error of that connection would go unseen by the
engine's handle_error hooks (a state store's faults told in one line, a silent
server's limits). The option is put back as it was when the inspection ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.engine.reflection import Inspector

_SKIP = "skip_user_error_events"


@contextmanager
def inspected(conn: Connection) -> Iterator[Inspector]:
    from sqlalchemy import inspect

    before = bool(conn.get_execution_options().get(_SKIP, False))
    try:
        yield inspect(conn)
    finally:
        conn.execution_options(**{_SKIP: before})
