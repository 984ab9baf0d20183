"""Who holds a lock a statement of aishell's waited for: the one description every
message that names a holder uses (a step's lock timeout, a table skipped as held, a dump
or restore stopped at its lock wait, a step that could not be prepared). Each holder is
named with its session id (PostgreSQL pid, MySQL connection id), user, program
(application_name), state, what it runs and for how long; aishell names other sessions,
it never ends them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.sqltext import text
from aishell.targets.locks import run_lock_name
from aishell.targets.ownsessions import own_sessions
from aishell.units import took

# What each holder's description shows of its statement.
QUERY_CHARS = 80
# MySQL/MariaDB, which cannot say who holds a metadata lock: this many candidates.
MYSQL_CANDIDATES = 5

# The columns every description of a PostgreSQL session reads (describe_pg).
PG_SESSION = f"""
SELECT a.pid, a.usename, a.application_name, a.state,
       pg_catalog.left(a.query, {QUERY_CHARS}) AS query,
       extract(epoch FROM pg_catalog.clock_timestamp()
               - coalesce(a.state_change, a.backend_start))::bigint AS seconds,
       extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::bigint
           AS in_transaction
FROM pg_catalog.pg_stat_activity a
"""
# A statement on a table reads its partitions and the tables inheriting from it: a lock
# on any of them keeps it waiting too.
_PG_HOLDING = (
    """
WITH RECURSIVE named(oid) AS (
    SELECT c.oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = pg_catalog.current_schema() AND c.relname = ANY(CAST(:t AS text[]))
  UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN named ON i.inhparent = named.oid
)"""
    + PG_SESSION
    + """
WHERE a.pid IN (
    SELECT l.pid FROM pg_catalog.pg_locks l
    WHERE l.granted AND l.relation IN (SELECT oid FROM named))
  AND a.pid <> pg_catalog.pg_backend_pid()
ORDER BY a.pid
"""
)
# The named tables (with their partitions and inheriting tables) that another session
# holds, or waits to hold, ACCESS EXCLUSIVE: the one mode a read's ACCESS SHARE waits
# behind (and a waiting request is queued ahead of it).
_PG_HELD_EXCLUSIVE = """
WITH RECURSIVE named(name, oid) AS (
    SELECT c.relname::text, c.oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = pg_catalog.current_schema() AND c.relname = ANY(CAST(:t AS text[]))
  UNION
    SELECT named.name, i.inhrelid FROM pg_catalog.pg_inherits i
    JOIN named ON i.inhparent = named.oid
)
SELECT DISTINCT named.name FROM pg_catalog.pg_locks l JOIN named ON l.relation = named.oid
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
  AND l.pid <> pg_catalog.pg_backend_pid()
"""
_PG_BLOCKING = PG_SESSION + "WHERE a.pid = ANY(pg_catalog.pg_blocking_pids(:pid)) ORDER BY a.pid"
# Table locks (LOCK TABLES) and metadata locks are held by sessions that may look idle:
# every other session on this database is a candidate, those in a transaction first.
_MY_CANDIDATES = f"""
SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.COMMAND AS command,
       COALESCE(p.STATE, '') AS state, p.TIME AS seconds,
       LEFT(COALESCE(p.INFO, ''), {QUERY_CHARS}) AS query,
       TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS in_transaction
FROM information_schema.PROCESSLIST p
LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
WHERE p.ID NOT IN (CONNECTION_ID(), :besides, COALESCE(IS_USED_LOCK(:run_lock), 0))
  AND p.ID NOT IN :own
  AND p.DB = DATABASE()
ORDER BY t.trx_started IS NULL, p.TIME DESC
LIMIT {MYSQL_CANDIDATES}
"""

# Whether this login has the PROCESS privilege, without which the process list holds
# only its own sessions.
_MY_PROCESS = "SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'PROCESS'"
UNSEEN_HOLDER = (
    "a session this login cannot see (without the PROCESS privilege the server shows it "
    "only its own sessions)"
)


def is_lock_timeout(exc: DBAPIError) -> bool:
    """The server gave up waiting for a lock (PostgreSQL lock_timeout, MySQL's
    innodb_lock_wait_timeout or lock_wait_timeout)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "55P03":
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in (1205, 3572)


def blocking_sessions(
    conn: Connection, tables: Sequence[str], *, run_lock: str = "", besides: int = 0
) -> list[str]:
    """Other sessions holding locks on these tables, described. MySQL/MariaDB, which
    cannot say who holds a metadata lock: the sessions on the database (those in a
    transaction first) but this one, the one holding the GET_LOCK `run_lock` (aishell's
    own run lock), the session `besides` and this process's other sessions there
    (ownsessions.py). Empty when the server cannot be asked."""
    dialect = conn.dialect.name
    try:
        if dialect == "postgresql":
            rows = conn.execute(text(_PG_HOLDING), {"t": list(tables)}).mappings()
            return [describe_pg(r) for r in rows]
        if family(dialect) == "mysql":
            candidates = text(_MY_CANDIDATES).bindparams(bindparam("own", expanding=True))
            values = {"besides": besides, "run_lock": run_lock, "own": own_sessions(conn)}
            try:
                rows = conn.execute(candidates, values).mappings()
                found = [describe_mysql(r) for r in rows]
            except DBAPIError:  # INNODB_TRX, like other sessions, needs PROCESS
                found = []
            return found or _unseen(conn)
    except DBAPIError:
        return []
    return []


def _unseen(conn: Connection) -> list[str]:
    """MySQL/MariaDB, where no other session was found: a login without PROCESS sees only
    its own sessions, so the holder is one it cannot see, not one that has gone."""
    if conn.execute(text(_MY_PROCESS)).first() is not None:
        return []
    return [UNSEEN_HOLDER]


def lock_holders(conn: Connection, tables: Sequence[str], *, besides: int = 0) -> str:
    """Who holds the lock a statement on these tables waited for, as every message names
    them (blocking_sessions, named_holders); aishell's own run lock's session (MySQL)
    and the session `besides` left out. After a failed statement, end its transaction
    first (PostgreSQL answers nothing else in it)."""
    found = blocking_sessions(conn, tables, run_lock=run_lock_name(conn), besides=besides)
    return named_holders(found)


def blockers_of(conn: Connection, pid: int) -> list[str]:
    """PostgreSQL: the sessions that keep backend `pid` waiting for its lock, described."""
    rows = conn.execute(text(_PG_BLOCKING), {"pid": pid}).mappings()
    return [describe_pg(r) for r in rows]


def named_holders(holders: Sequence[str]) -> str:
    """Who holds a lock, as a message names them: the sessions found, or that none was
    (the holder ended between the timeout and the look)."""
    return "; ".join(holders) if holders else "a session that has since gone"


# What pg_stat_activity shows of another role's session to a login without
# pg_read_all_stats, for its statement; its state and times are NULL.
_PG_HIDDEN = "<insufficient privilege>"


def describe_pg(r: RowMapping) -> str:
    """A PostgreSQL session as every message names it, from PG_SESSION's columns."""
    program = r["application_name"] or "no application_name"
    if r["query"] == _PG_HIDDEN:
        return (
            f"pid {r['pid']} ({r['usename']}, {program}; its state and statement are "
            "hidden from this login: grant it pg_read_all_stats to see them)"
        )
    doing = r["state"] or "no state"
    if r["seconds"] is not None:
        doing += f" for {took(float(r['seconds']), 0)}"
    if r["in_transaction"] is not None:
        doing += f", in a transaction for {took(float(r['in_transaction']), 0)}"
    return f"pid {r['pid']} ({r['usename']}, {program}, {doing}: {r['query']!r})"


def describe_mysql(r: RowMapping) -> str:
    """A MySQL/MariaDB session as every message names it, from _MY_CANDIDATES' columns."""
    held = r["in_transaction"]
    state = f", {r['state']}" if r["state"] else ""
    doing = f"{r['command']}{state} for {took(float(r['seconds']), 0)}"
    if held is not None:
        doing += f", in a transaction for {took(float(held), 0)}"
    return f"connection {r['id']} ({r['user']}@{r['host']}, {doing}: {r['query']!r})"


def held_exclusive(conn: Connection, tables: Sequence[str]) -> list[str]:
    """PostgreSQL: which of these tables a read would wait on now (another session holds
    or waits for ACCESS EXCLUSIVE on it or on a partition), in one look at pg_locks;
    elsewhere (MySQL's metadata locks are not shown so) none."""
    if conn.dialect.name != "postgresql" or not tables:
        return []
    found = conn.execute(text(_PG_HELD_EXCLUSIVE), {"t": list(tables)}).scalars()
    return sorted(str(name) for name in found)
