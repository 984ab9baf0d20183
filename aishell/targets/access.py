"""Read-only sessions for the steps that only read."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

_SESSION_ACCESS = {
    "postgresql": (
        "SET default_transaction_read_only = on",
        "SET default_transaction_read_only = off",
    ),
    "mysql": ("SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION READ WRITE"),
    "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
}


def session_access(conn: Connection, read_only: bool, target_read_only: bool) -> None:
    """Make the session read-only for a step that only reads, so the database itself
    refuses a write the guard missed; back to read-write for the next step that writes
    (never on a target opened read-only). Sent only when it changes."""
    wanted = read_only or target_read_only
    if conn.info.get("aishell_read_only", target_read_only) == wanted:
        return
    name = "mysql" if conn.dialect.name in ("mysql", "mariadb") else conn.dialect.name
    on, off = _SESSION_ACCESS[name]
    conn.execute(text(on if wanted else off))
    conn.info["aishell_read_only"] = wanted
