"""A step's session: read-only for the steps that only read, and the server's statement
limit, each sent only when it changes, and both in one round trip when both do."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.sqltext import text
from aishell.targets.limits import (
    STATEMENT_LIMIT_KEY,
    limit_setting,
    set_statement_limit,
    statement_limit,
)
from aishell.targets.searchpath import SEARCH_PATH_KEY, SESSION_START_KEY

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
    access = _current_access(conn, target_read_only) != wanted
    dialect = conn.dialect
    name = family(dialect.name)
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
    elif limit is not None and limit_seconds is not None:
        set_statement_limit(conn, limit_seconds)
    if access:
        conn.info[ACCESS_KEY] = wanted
    if limit is not None:
        conn.info[STATEMENT_LIMIT_KEY] = limit


def _current_access(conn: Connection, target_read_only: bool) -> bool | None:
    """Whether the session is read-only: as PostgreSQL last reported it (a function may
    have switched it), elsewhere as aishell last set it (None: unknown)."""
    if conn.dialect.name == "postgresql" and ACCESS_KEY in conn.info:
        dbapi = conn.connection.dbapi_connection
        reported = (
            None if dbapi is None else dbapi.info.parameter_status("default_transaction_read_only")
        )
        if reported is not None:
            return bool(reported == "on")
    return conn.info.get(ACCESS_KEY, target_read_only)  # type: ignore[no-any-return]


def _both(conn: Connection, name: str, mariadb: bool, read_only: bool, seconds: float) -> None:
    """Read-only (or not) and the statement limit in one statement."""
    setting = limit_setting(name, mariadb, seconds)
    assert setting is not None
    variable, value = setting
    if name == "postgresql":
        conn.execute(
            text(
                "SELECT pg_catalog.set_config('default_transaction_read_only', :access, false), "
                "pg_catalog.set_config(:variable, :value, false)"
            ),
            {"access": "on" if read_only else "off", "variable": variable, "value": str(value)},
        )
        return
    # Both names are aishell's own; the values are bound.
    access = _MYSQL_READ_ONLY[mariadb]
    conn.execute(
        text(f"SET SESSION {access} = :access, SESSION {variable} = :value"),
        {"access": int(read_only), "value": value},
    )


def session_changed(conn: Connection, cursor: Any, thorough: bool) -> str | None:
    """What a statement changed of its read-only session's settings, or None: a function
    it ran (one the site trusts, or code behind an operator) may switch the session back
    to read-write (set_config, SET @@session.tx_read_only) or redirect its names. What
    PostgreSQL reports with every answer is checked always; with `thorough`, the rest is
    asked of the server on a second cursor."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _pg_session_changed(conn, cursor, thorough)
    if family(dialect) == "mysql":
        if not thorough:
            return None
        value = _second_cursor(cursor, "SELECT @@session.tx_read_only")
        return None if str(value) == "1" else "the session is read-write again"
    value = _second_cursor(cursor, "PRAGMA query_only")
    return None if str(value) == "1" else "query_only is now off"


def _pg_session_changed(conn: Connection, cursor: Any, thorough: bool) -> str | None:
    """PostgreSQL's part of session_changed: what the server reports with every answer
    (the read-only default, string escapes; the time zone, date and interval styles,
    superuser status and session authorization as the session began); with `thorough`,
    the rest (unreported_change)."""
    info = cursor.connection.info
    for name in ("default_transaction_read_only", "standard_conforming_strings"):
        value = info.parameter_status(name)  # None from a server before 14
        if value is not None and value != "on":
            return f"{name} is now {value}"
    reported = reported_change(conn, info)
    if reported is not None or not thorough:
        return reported
    return unreported_change(conn, cursor)


def unreported_change(conn: Connection, cursor: Any) -> str | None:
    """What of a PostgreSQL session's settings the server does not report with its
    answers differs from what aishell set or the session began with, said; None if
    nothing: its search_path, its role (a function's set_config('role', ...) makes every
    name after it resolve in that role's schema, and the steps after it run as that
    role), extra_float_digits and lc_monetary, and the statement limit aishell set.
    Asked of the server in one round trip, on a second cursor beside `cursor`."""
    start = conn.info.get(SESSION_START_KEY) or {}
    row = _second_cursor_row(cursor, _PG_SESSION_NOW)
    path, user, limit, digits, monetary = row if row is not None else (None,) * 5
    pinned = conn.info.get(SEARCH_PATH_KEY)
    if pinned is not None and path != pinned:
        return f"search_path is now {path}"
    if start.get("user") is not None and user != start["user"]:
        return f"the session's role is now {user}"
    # Fewer digits: every float read after it (a purge's keys, an archive's rows) is
    # rounded.
    if start.get("extra_float_digits") is not None and digits != start["extra_float_digits"]:
        return f"extra_float_digits is now {digits}"
    # Another currency's text: a money value read after it is not written as the
    # session began, the text an archive file's values are read back in
    # (purge/exactread.py).
    if start.get("lc_monetary") is not None and monetary != start["lc_monetary"]:
        return f"lc_monetary is now {monetary}"
    kept = str(conn.info.get(STATEMENT_LIMIT_KEY) or "")
    if kept.startswith("SET statement_timeout = ") and kept.rsplit(" ", 1)[1] != str(limit):
        return f"statement_timeout is now {limit} ms"
    return None


def written_session_changed(conn: Connection, code_ran: bool) -> str | None:
    """What a PostgreSQL step that writes changed of its session's settings, which the
    steps after it run in, said; None if nothing. Those the server reports with every
    answer are known without a round trip; with `code_ran` (the step may have run code
    of a user's: a trigger, a function the site trusts, which may SET any of them), the
    rest are asked (unreported_change) in one, in whatever transaction the step left
    open (none in a failed one, which answers nothing)."""
    if conn.closed or conn.invalidated:
        return None
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:
        return None
    changed = reported_change(conn, dbapi.info)
    if changed is not None or not code_ran:
        return changed
    import psycopg  # only a PostgreSQL target gets here

    status = dbapi.info.transaction_status
    idle = status == psycopg.pq.TransactionStatus.IDLE
    if not idle and status != psycopg.pq.TransactionStatus.INTRANS:
        return None
    # Without autocommit the question would begin a transaction left open after the
    # step: it is asked as one of its own (psycopg switches without a round trip).
    switched = idle and not dbapi.autocommit
    if switched:
        dbapi.autocommit = True
    cursor = dbapi.cursor()
    try:
        return unreported_change(conn, cursor)
    finally:
        cursor.close()
        if switched:
            dbapi.autocommit = False


def reported_change(conn: Connection, info: Any) -> str | None:
    """Which of the settings PostgreSQL reports with every answer (searchpath.REPORTED)
    differs from the session's start, said; None if none. `info`: psycopg's."""
    start = conn.info.get(SESSION_START_KEY) or {}
    for name, was in (start.get("reported") or {}).items():
        value = info.parameter_status(name)
        if value is not None and value != was:
            return f"{name} is now {value}"
    return None


# The statement limit in milliseconds, as aishell sets it (pg_settings' unit).
_PG_SESSION_NOW = (
    "SELECT pg_catalog.current_setting('search_path'), CURRENT_USER, setting, "
    "pg_catalog.current_setting('extra_float_digits'), "
    "pg_catalog.current_setting('lc_monetary') "
    "FROM pg_catalog.pg_settings WHERE name OPERATOR(pg_catalog.=) 'statement_timeout'"
)


def _second_cursor_row(cursor: Any, sql: str) -> tuple[Any, ...] | None:
    """One row, read on the statement's connection beside its cursor."""
    second = cursor.connection.cursor()
    try:
        second.execute(sql)
        row = second.fetchone()
    finally:
        second.close()
    return tuple(row) if row else None


def _second_cursor(cursor: Any, sql: str) -> Any:
    """One value, read on the statement's connection beside its cursor (whose rows the
    tool may not have read yet)."""
    row = _second_cursor_row(cursor, sql)
    return row[0] if row else None
