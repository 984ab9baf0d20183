"""A step's session: read-only for the steps that only read, and the server's statement
limit, each sent only when it changes, and both in one round trip when both do."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from aishell.sqltext import text
from aishell.targets.limits import STATEMENT_LIMIT_KEY, limit_setting, statement_limit

SESSION_ACCESS = {
    "postgresql": (
        "SET default_transaction_read_only = on",
        "SET default_transaction_read_only = off",
    ),
    "mysql": ("SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION READ WRITE"),
    "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
}
# The session variable behind SET SESSION TRANSACTION READ ONLY, which a SET of several
# variables can name: MariaDB's name, and MySQL's since 5.7.20.
_MYSQL_READ_ONLY = {True: "tx_read_only", False: "transaction_read_only"}
ACCESS_KEY = "aishell_read_only"


def session_access(
    conn: Connection, read_only: bool, target_read_only: bool, limit_seconds: float | None = None
) -> None:
    """Make the session read-only for a step that only reads, so the database itself
    refuses a write the guard missed; back to read-write for the next step that writes
    (never on a target opened read-only). With limit_seconds, the server's statement
    limit for the step as well (step_deadline then finds it set)."""
    wanted = read_only or target_read_only
    access = conn.info.get(ACCESS_KEY, target_read_only) != wanted
    dialect = conn.dialect
    name = "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name
    mariadb = bool(getattr(dialect, "is_mariadb", False))
    limit = None
    if limit_seconds is not None:
        limit = statement_limit(dialect.name, mariadb, limit_seconds)
        if limit is not None and conn.info.get(STATEMENT_LIMIT_KEY) == limit:
            limit = None
    if access and limit is not None and limit_seconds is not None:  # a server, not SQLite
        _both(conn, name, mariadb, wanted, limit_seconds)
    elif access:
        on, off = SESSION_ACCESS[name]
        conn.execute(text(on if wanted else off))
    elif limit is not None:
        conn.execute(text(limit))
    if access:
        conn.info[ACCESS_KEY] = wanted
    if limit is not None:
        conn.info[STATEMENT_LIMIT_KEY] = limit


def _both(conn: Connection, name: str, mariadb: bool, read_only: bool, seconds: float) -> None:
    """Read-only (or not) and the statement limit in one statement."""
    setting = limit_setting(name, mariadb, seconds)
    assert setting is not None
    variable, value = setting
    if name == "postgresql":
        conn.execute(
            text(
                "SELECT set_config('default_transaction_read_only', :access, false), "
                "set_config(:variable, :value, false)"
            ),
            {"access": "on" if read_only else "off", "variable": variable, "value": value},
        )
        return
    # Both values are aishell's own (a flag, a number of seconds); neither is user text.
    access = _MYSQL_READ_ONLY[mariadb]
    conn.execute(text(f"SET SESSION {access} = {int(read_only)}, SESSION {variable} = {value}"))
