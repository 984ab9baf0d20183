"""Who may do what on MySQL and MariaDB, from SHOW GRANTS; how a refusal is told; and
what each agent needs of the account.

Before a statement the account lacks the privileges for, SHOW GRANTS is read; a
statement the server refuses anyway (error 1142 and its kin, or an error row) ends the
step `skipped` with the server's reason.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed
from aishell.handlers import skip_table
from aishell.handlers.mysql.checkrows import DENIED_TEXT, raise_if_retryable
from aishell.scratch.leftovers import SCRATCH_DATABASE_PREFIX
from aishell.sqltext import display, mysql_account, quote_identifier, text
from aishell.targets.catalog import user_tables

# Errors with which the server refuses a statement for want of a privilege, or because
# the table or server is read-only: the work was not done, and the step says why.
_DENIED = {1044, 1142, 1143, 1227, 1290, 1036}
_GRANT = re.compile(
    r"^GRANT (?P<privileges>.+?) ON (?:(?:FUNCTION|PROCEDURE|PACKAGE BODY|PACKAGE) )?"
    r"(?P<db>\*|`(?:[^`]|``)*`)\.(?P<table>\*|`(?:[^`]|``)*`) TO "
)


def _unquote(name: str) -> str:
    return name if name == "*" else name[1:-1].replace("``", "`")


def _split_privileges(listed: str) -> set[str]:
    """'SELECT, INSERT, UPDATE (`a`, `b`)' -> {SELECT, INSERT}: column grants do not count."""
    found, depth, current = set(), 0, ""
    for char in listed + ",":
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            name = " ".join(current.split()).upper()
            if name and "(" not in name:
                found.add("ALL" if name == "ALL PRIVILEGES" else name)
            current = ""
        else:
            current += char
    return found


def _like(pattern: str, value: str) -> bool:
    """A database name in a grant matches as LIKE does (% and _, with \\ escapes)."""
    regex, escaped = "", False
    for char in pattern:
        if escaped:
            regex, escaped = regex + re.escape(char), False
        elif char == "\\":
            escaped = True
        else:
            regex += {"%": ".*", "_": "."}.get(char) or re.escape(char)
    return re.fullmatch(regex, value) is not None


def grants(conn: Connection) -> list[tuple[str, str, set[str]]] | None:
    """(database, table, privileges) of every GRANT in effect for this session (its
    account and current role); None when a line cannot be read, so nothing is assumed."""
    parsed = []
    for (line,) in conn.execute(text("SHOW GRANTS")):
        line = str(line)
        if " ON " not in line.split(" TO ", 1)[0] or line.startswith("GRANT PROXY ON"):
            continue  # a role granted to the account, or a proxy grant
        match = _GRANT.match(line)
        if match is None:
            return None
        if re.match(r"GRANT .+? ON (FUNCTION|PROCEDURE|PACKAGE) ", line):
            continue  # routines are not tables
        parsed.append(
            (
                _unquote(match["db"]),
                _unquote(match["table"]),
                _split_privileges(match["privileges"]),
            )
        )
    return parsed


def privileges_on(
    granted: list[tuple[str, str, set[str]]], database: str, table: str | None
) -> set[str]:
    """What the grants allow on one table (or, with table None, on the whole database)."""
    have: set[str] = set()
    for db, tbl, privileges in granted:
        if db != "*" and not (_like(db, database) if tbl == "*" else db == database):
            continue
        if tbl != "*" and tbl != table:
            continue
        have |= privileges
    return have


def refusals(
    conn: Connection,
    tables: list[str],
    needed: set[str],
    action: str,
    run_cache: dict[str, Any] | None = None,
) -> dict[str, str]:
    """table -> why, for the tables SHOW GRANTS says the server would refuse `action`
    on (lacking some of `needed`); the grants are read once for them all (with a run's
    cache, once per run), and nothing is assumed when they cannot be read."""
    granted, database = session_grants(conn, run_cache)
    if granted is None:
        return {}
    lacking: dict[str, str] = {}
    for table in tables:
        have = privileges_on(granted, database, table)
        if "ALL" not in have and needed - have:
            lacking[table] = ", ".join(sorted(needed - have))
    if not lacking:
        return {}
    account = current_account(conn)
    user, _, host = account.rpartition("@")
    return {
        table: (
            f"{action} of {table} skipped: {account} lacks {listed} on it "
            f"(GRANT {listed} ON {display(quote_identifier(conn.dialect, database))}.* TO "
            f"{mysql_account(user, host)})"
        )
        for table, listed in lacking.items()
    }


def session_grants(
    conn: Connection, run_cache: dict[str, Any] | None
) -> tuple[list[tuple[str, str, set[str]]] | None, str]:
    """The session's grants (None: unreadable) and its database. With a run's cache, a
    run reads them once: a grant revoked meanwhile is still caught, as the server's
    refusal (run_checked)."""
    if run_cache is not None and "mysql_grants" in run_cache:
        known: tuple[list[tuple[str, str, set[str]]] | None, str] = run_cache["mysql_grants"]
        return known
    granted = grants(conn)
    database = "" if granted is None else current_database(conn)
    if run_cache is not None:
        run_cache["mysql_grants"] = (granted, database)
    return granted, database


def current_database(conn: Connection) -> str:
    """The session's database, read once per connection: aishell's sessions never
    change it (no tool sends USE), and steps that each need it then share one read."""
    known = conn.info.get("aishell_mysql_database")
    if known is None:
        known = conn.info["aishell_mysql_database"] = str(
            conn.execute(text("SELECT DATABASE()")).scalar()
        )
    return str(known)


def current_account(conn: Connection) -> str:
    return str(conn.execute(text("SELECT CURRENT_USER()")).scalar())


def require_privileges(
    conn: Connection,
    table: str,
    needed: set[str],
    action: str,
    run_cache: dict[str, Any] | None = None,
) -> None:
    """Raise StepSkipped before `action` when SHOW GRANTS says the server would refuse it."""
    refused = refusals(conn, [table], needed, action, run_cache)
    if refused:
        skip_table(table, refused[table])


def denied(exc: DBAPIError) -> str | None:
    """The server's message when it refused for want of a privilege (or read-only)."""
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    if len(args) >= 2 and args[0] in _DENIED:
        return f"{args[1]} (error {args[0]})"
    return None


def run_checked(
    conn: Connection, sql: str, table: str, action: str, *, must_be_done: bool = True
) -> list[str]:
    """Run a maintenance statement; its result rows (Table, Op, Msg_type, Msg_text) as
    'type: text'. A refusal is a skip; any other error row fails the step; a statement
    the server did not do (not_done) a skip too, unless not `must_be_done`."""
    try:
        result = conn.execute(text(sql))
    except DBAPIError as exc:
        message = denied(exc)
        if message is None:
            raise
        skip_table(table, f"{action} of {table} refused by the server: {message}")
    messages: list[str] = []
    if not result.returns_rows:  # ALTER TABLE reports by raising, not in rows
        return messages
    rows = [(str(r["Msg_type"]).lower(), str(r["Msg_text"])) for r in result.mappings()]
    for kind, message in rows:
        messages.append(f"{kind}: {message}")
        if kind == "error":
            if DENIED_TEXT.search(message):
                skip_table(table, f"{action} of {table} refused by the server: {message}")
            raise_if_retryable(sql, message)
            raise StepFailed(f"{table}: {message}")
    said = not_done(rows)
    if said is not None and must_be_done:
        skip_table(table, f"{action} of {table} not done: {said}")
    return messages


def not_done(rows: list[tuple[str, str]]) -> str | None:
    """What the server said of a table whose maintenance statement it did not do, or
    None. It answers a table it did with a status row ("OK", "Table is already up to
    date"); one whose engine has no such operation (MEMORY, CSV) with a note alone ("The
    storage engine for the table doesn't support optimize"), in the server's language."""
    if not rows or any(kind == "status" for kind, _ in rows):
        return None
    return "the server said: " + "; ".join(f"{kind}: {said}" for kind, said in rows)


# ALTER TABLE needs ALTER, CREATE and INSERT on the table; OPTIMIZE and ANALYZE need
# SELECT and INSERT.
REBUILD_NEEDS = {"ALTER", "CREATE", "INSERT"}
OPTIMIZE_NEEDS = {"SELECT", "INSERT"}


# --- what each agent needs of the account (aishell targets check) -----------------------------

_NEEDS: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    (
        "maintenance",
        ("SELECT", "INSERT"),
        "ANALYZE TABLE and OPTIMIZE TABLE (skipped without them)",
        False,
    ),
    (
        "maintenance",
        ("ALTER", "CREATE", "INSERT", "DROP"),
        "online rebuilds, ALTER TABLE ... FORCE (skipped without them)",
        False,
    ),
    ("maintenance", ("SELECT",), "CHECK TABLE, the corruption check", False),
    (
        "maintenance",
        ("PROCESS",),
        "long transactions, orphaned #sql tables and tablespace file sizes",
        True,
    ),
    (
        "backup",
        ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "LOCK TABLES"),
        "mariadb-dump with routines, triggers and events",
        False,
    ),
    ("log_cleanup", ("SELECT", "DELETE"), "delete_old_records", False),
)
_GLOBAL_ONLY = {"PROCESS"}
# validate_backup restores into a scratch database named aishell_verify_<10 hex digits>
# and dumps it again to compare (validate.py): what that restore and dump take there,
# as a grant on the pattern gives it (seen on MariaDB 10.11, one privilege at a time).
_SCRATCH_PATTERN = SCRATCH_DATABASE_PREFIX.replace("_", "\\_") + "%"
_SCRATCH_SAMPLE = f"{SCRATCH_DATABASE_PREFIX}0123456789"
_SCRATCH_NEEDS = (
    "SELECT", "INSERT", "CREATE", "DROP", "ALTER", "LOCK TABLES", "CREATE VIEW", "SHOW VIEW",
    "TRIGGER", "EVENT", "CREATE ROUTINE", "ALTER ROUTINE",
)  # fmt: skip


def agent_needs(conn: Connection) -> list[dict[str, Any]]:
    """The privileges each agent needs on this database and, per need, what is missing."""
    account = current_account(conn)
    granted = grants(conn)
    database = current_database(conn)
    tables = user_tables(conn)
    needs = []
    for agent, privileges, needed_for, optional in _NEEDS:
        missing: str | None
        if granted is None:
            missing = "unknown: SHOW GRANTS could not be read"
        else:
            lacking: dict[str, list[str]] = {}
            for privilege in privileges:
                everywhere: list[str | None] = [None]
                scopes = everywhere if privilege in _GLOBAL_ONLY else (tables or everywhere)
                for table in scopes:
                    have = privileges_on(
                        [g for g in granted if privilege not in _GLOBAL_ONLY or g[0] == "*"],
                        database,
                        table,
                    )
                    if "ALL" not in have and privilege not in have:
                        lacking.setdefault(privilege, []).append(table or "*")
            missing = (
                "; ".join(
                    f"{p} " + ("globally" if p in _GLOBAL_ONLY else _on(t, tables))
                    for p, t in lacking.items()
                )
                or None
            )
        needs.append(
            {
                "agent": agent,
                "privilege": ", ".join(privileges)
                + (" (global)" if set(privileges) <= _GLOBAL_ONLY else ""),
                "needed_for": needed_for,
                "missing": missing,
                "optional": optional,
                "role": account,
                "fix": _grant(conn, privileges, database, account) if missing else None,
            }
        )
    return [*needs, _scratch_need(conn, granted, account)]


def _scratch_need(
    conn: Connection, granted: list[tuple[str, str, set[str]]] | None, account: str
) -> dict[str, Any]:
    """What validate_backup needs on its scratch databases (_SCRATCH_NEEDS)."""
    missing: str | None = "unknown: SHOW GRANTS could not be read"
    if granted is not None:
        have = privileges_on(granted, _SCRATCH_SAMPLE, None)
        lacking = [p for p in _SCRATCH_NEEDS if p not in have and "ALL" not in have]
        missing = f"it has no {', '.join(lacking)} there" if lacking else None
    user, _, host = account.rpartition("@")
    scope = display(quote_identifier(conn.dialect, _SCRATCH_PATTERN))
    fix = f"GRANT {', '.join(_SCRATCH_NEEDS)} ON {scope}.* TO {mysql_account(user, host)}"
    return {
        "agent": "backup",
        "privilege": f"{', '.join(_SCRATCH_NEEDS)} on the scratch databases {_SCRATCH_PATTERN}",
        "needed_for": "validate_backup, which restores a backup into one and dumps it "
        "again; without them a backup fails validation",
        "missing": missing,
        "optional": False,
        "role": account,
        "fix": fix if missing else None,
    }


def _grant(conn: Connection, privileges: tuple[str, ...], database: str, account: str) -> str:
    """The GRANT that gives the account what it lacks, as one line to run."""
    user, _, host = account.rpartition("@")
    scope = "*.*"
    if not set(privileges) <= _GLOBAL_ONLY:  # as typed: no driver's %% for a % in it
        scope = f"{display(quote_identifier(conn.dialect, database))}.*"
    return f"GRANT {', '.join(privileges)} ON {scope} TO {mysql_account(user, host)}"


def _on(lacking: list[str], tables: list[str]) -> str:
    if lacking == ["*"] or (tables and len(lacking) == len(tables)):
        return "on the database"
    shown = ", ".join(lacking[:10]) + (
        f" and {len(lacking) - 10} more" if len(lacking) > 10 else ""
    )
    return f"on {shown}"
