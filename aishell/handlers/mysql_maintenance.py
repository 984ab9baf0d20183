"""MySQL and MariaDB implementations of the maintenance tools.

Fragmentation is InnoDB's DATA_FREE against the table's size. A rebuild is an
online ALTER TABLE ... FORCE (InnoDB) or OPTIMIZE TABLE (other engines); the
orphaned `#sql` tables an interrupted rebuild leaves behind are found and dropped
before a retry. Corruption comes from CHECK TABLE, per table: checked, or why not.

Sizes are the tablespace files' sizes where the account may read them (PROCESS), else
DATA_LENGTH + INDEX_LENGTH + DATA_FREE, measured the same way before and after. Before
a statement the account lacks the privileges for, SHOW GRANTS is read; a statement the
server refuses anyway (error 1142 and its kin, or an error row) ends the step
`skipped` with the server's reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from contextlib import suppress
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.catalog import mysql_urgency, user_tables
from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import Handler, each_table
from aishell.handlers.report import (
    checked_or_skipped,
    corruption_advice,
    corruption_summary,
    integrity_line,
)
from aishell.registry import RiskLevel, ToolContext

_TABLES = """
SELECT TABLE_NAME AS name, ENGINE AS engine, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) AS data_bytes, coalesce(INDEX_LENGTH, 0) AS index_bytes,
       coalesce(DATA_FREE, 0) AS free_bytes, UPDATE_TIME AS updated
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
ORDER BY TABLE_NAME
"""
_TABLE = """
SELECT TABLE_NAME AS name, ENGINE AS engine, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) AS data_bytes, coalesce(INDEX_LENGTH, 0) AS index_bytes,
       coalesce(DATA_FREE, 0) AS free_bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t
"""
_STATUS_MARIADB = """
SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value FROM information_schema.GLOBAL_STATUS
WHERE VARIABLE_NAME IN ('THREADS_CONNECTED', 'THREADS_RUNNING',
                        'INNODB_BUFFER_POOL_READ_REQUESTS', 'INNODB_BUFFER_POOL_READS')
"""
_STATUS_MYSQL = """
SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value FROM performance_schema.global_status
WHERE VARIABLE_NAME IN ('Threads_connected', 'Threads_running',
                        'Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads')
"""
_LONG_TRANSACTIONS = """
SELECT trx_mysql_thread_id AS id, trx_state AS state,
       TIMESTAMPDIFF(SECOND, trx_started, NOW()) AS seconds
FROM information_schema.INNODB_TRX
WHERE trx_started < NOW() - INTERVAL 5 MINUTE
ORDER BY trx_started
"""


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with the server's DECIMAL sums as Python integers."""
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in row.items()}


def _free_percent(row: Mapping[str, Any]) -> float:
    total = row["data_bytes"] + row["index_bytes"] + row["free_bytes"]
    return round(100.0 * row["free_bytes"] / total, 2) if total else 0.0


def urgency(row: Mapping[str, Any]) -> float:
    """How soon a table needs work (the same ranking the planner uses)."""
    return mysql_urgency(row["data_bytes"] + row["index_bytes"], row["free_bytes"])


def table_row(conn: Connection, table: str) -> dict[str, Any]:
    row = conn.execute(text(_TABLE), {"t": table}).mappings().first()
    if row is None:
        raise StepFailed(f"Table {table!r} is not in the current database")
    return _plain(row)


def _mariadb(conn: Connection) -> bool:
    return bool(getattr(conn.dialect, "is_mariadb", False))


# --- privileges -------------------------------------------------------------------------------

# Errors with which the server refuses a statement for want of a privilege, or because
# the table or server is read-only: the work was not done, and the step says why.
_DENIED = {1044, 1142, 1143, 1227, 1290, 1036}
_DENIED_TEXT = re.compile(r"denied|read.only|privilege", re.IGNORECASE)
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


def missing_privileges(conn: Connection, table: str, needed: set[str]) -> set[str]:
    """The privileges in `needed` the session lacks on `table` (empty when unknown)."""
    granted = grants(conn)
    if granted is None:
        return set()
    database = str(conn.execute(text("SELECT DATABASE()")).scalar())
    have = privileges_on(granted, database, table)
    return set() if "ALL" in have else needed - have


def _account(conn: Connection) -> str:
    return str(conn.execute(text("SELECT CURRENT_USER()")).scalar())


def require_privileges(conn: Connection, table: str, needed: set[str], action: str) -> None:
    """Raise StepSkipped before `action` when SHOW GRANTS says the server would refuse it."""
    missing = missing_privileges(conn, table, needed)
    if not missing:
        return
    listed = ", ".join(sorted(missing))
    account = _account(conn)
    user, _, host = account.rpartition("@")
    database = conn.execute(text("SELECT DATABASE()")).scalar()
    reason = (
        f"{action} of {table} skipped: {account} lacks {listed} on it "
        f"(GRANT {listed} ON `{database}`.* TO '{user}'@'{host}')"
    )
    _skip(table, reason)


def _skip(table: str, reason: str) -> None:
    raise StepSkipped(
        reason, {"table": table, "skipped_tables": [{"table": table, "reason": reason}]}
    )


def _denied(exc: DBAPIError) -> str | None:
    """The server's message when it refused for want of a privilege (or read-only)."""
    args = getattr(exc.orig, "args", ())
    if len(args) >= 2 and args[0] in _DENIED:
        return f"{args[1]} (error {args[0]})"
    return None


def run_checked(conn: Connection, sql: str, table: str, action: str) -> list[str]:
    """Run a maintenance statement; its result rows (Table, Op, Msg_type, Msg_text) as
    'type: text'. A refusal is a skip; any other error row fails the step."""
    try:
        result = conn.execute(text(sql))
    except DBAPIError as exc:
        message = _denied(exc)
        if message is None:
            raise
        _skip(table, f"{action} of {table} refused by the server: {message}")
    messages: list[str] = []
    if not result.returns_rows:  # ALTER TABLE reports by raising, not in rows
        return messages
    for row in result.mappings():
        kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
        messages.append(f"{kind}: {message}")
        if kind == "error":
            if _DENIED_TEXT.search(message):
                _skip(table, f"{action} of {table} refused by the server: {message}")
            raise StepFailed(f"{table}: {message}")
    return messages


# --- sizes ------------------------------------------------------------------------------------

_FILES_MARIADB = (
    "SELECT NAME AS name, FILE_SIZE AS bytes FROM information_schema.INNODB_SYS_TABLESPACES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/%')"
)
_FILES_MYSQL = (
    "SELECT NAME AS name, FILE_SIZE AS bytes FROM information_schema.INNODB_TABLESPACES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/%')"
)
FILE_SIZE = "tablespace file size"
STATISTICS = "DATA_LENGTH + INDEX_LENGTH + DATA_FREE"


def _file_sizes(conn: Connection) -> dict[str, int] | None:
    """Each file-per-table tablespace's size by table name; None without PROCESS."""
    try:
        rows = conn.execute(text(_FILES_MARIADB if _mariadb(conn) else _FILES_MYSQL)).all()
    except DBAPIError as exc:
        if _denied(exc) is None:
            raise
        return None
    database = str(conn.execute(text("SELECT DATABASE()")).scalar())
    prefix = f"{database}/"
    return {r.name[len(prefix) :]: int(r.bytes) for r in rows if r.name.startswith(prefix)}


def _measured(row: Mapping[str, Any], files: dict[str, int] | None) -> tuple[int, str]:
    if files is not None and row["name"] in files:
        return files[row["name"]], FILE_SIZE
    return row["data_bytes"] + row["index_bytes"] + row["free_bytes"], STATISTICS


def table_size(conn: Connection, table: str) -> dict[str, Any]:
    """One table's size on disk, and how it was measured."""
    size, method = _measured(table_row(conn, table), _file_sizes(conn))
    return {"bytes": size, "method": method}


def database_size(conn: Connection) -> dict[str, Any]:
    """Every table of the database, each measured as table_size measures it."""
    files = _file_sizes(conn)
    measured = [_measured(_plain(r), files) for r in conn.execute(text(_TABLES)).mappings()]
    methods = {m for _, m in measured} or {STATISTICS}
    method = (
        methods.pop() if len(methods) == 1 else f"{FILE_SIZE} where readable, else {STATISTICS}"
    )
    return {"size_bytes": sum(b for b, _ in measured), "method": method}


# --- analyze_database_health ------------------------------------------------------------


def _status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text(_STATUS_MARIADB if _mariadb(conn) else _STATUS_MYSQL))
    return {str(r.name).lower(): int(r.value) for r in rows}


def _health(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    wanted = set(params.get("tables") or [])
    rows = [_plain(r) for r in conn.execute(text(_TABLES)).mappings()]
    rows = [r for r in rows if not wanted or r["name"] in wanted]
    status = _status(conn)
    requests = status.get("innodb_buffer_pool_read_requests", 0)
    misses = status.get("innodb_buffer_pool_reads", 0)
    report = sorted(
        (
            {
                "table": r["name"],
                "engine": r["engine"],
                "rows": r["row_count"],
                "table_bytes": r["data_bytes"],
                "index_bytes": r["index_bytes"],
                "data_free_bytes": r["free_bytes"],
                "free_percent": _free_percent(r),
                "urgency": urgency(r),
            }
            for r in rows
        ),
        key=lambda t: (-t["urgency"], t["table"]),
    )
    recommendations = [
        f"{t['table']}: {t['free_percent']}% of its space is free (data_free); a rebuild "
        "would return it"
        for t in report
        if t["free_percent"] >= 20 and t["data_free_bytes"] >= 4 * 2**20
    ]
    long_running: list[dict[str, Any]] | None
    try:
        long_running = [_plain(r) for r in conn.execute(text(_LONG_TRANSACTIONS)).mappings()]
    except DBAPIError as exc:
        if _denied(exc) is None:
            raise
        long_running = None
        recommendations.append(
            "Long transactions were not looked at: INNODB_TRX needs the PROCESS privilege"
        )
    recommendations += [
        f"connection {tx['id']} has held a transaction open for {tx['seconds']}s; "
        "it holds back purge and may block a rebuild"
        for tx in long_running or []
    ]
    check = (
        corruption_check(conn, ctx, [t["table"] for t in report])
        if params.get("check_corruption")
        else None
    )
    recommendations += corruption_advice(check, "CHECK TABLE")
    size = database_size(conn)
    return {
        "database_size_bytes": size["size_bytes"],
        "size_method": size["method"],
        "connections": status.get("threads_connected"),
        "active_connections": status.get("threads_running"),
        "cache_hit_percent": round(100.0 * (1 - misses / requests), 2) if requests else None,
        "long_running_transactions": long_running,
        "tables": report,
        "integrity": integrity_line(check),
        "corruption_check": check,
        "recommendations": recommendations,
    }


analyze_database_health = Handler(
    sql_templates=(
        _TABLES,
        _STATUS_MARIADB,
        _STATUS_MYSQL,
        _LONG_TRANSACTIONS,
        _FILES_MARIADB,
        "SHOW GRANTS",
        "CHECK TABLE {table}",
    ),
    run_fn=_health,
)


# --- analyze_table_fragmentation ----------------------------------------------------------


def _fragmentation(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row = table_row(ctx.connection, params["table"])
    threshold = params.get("fragmentation_threshold", 30)
    percent = _free_percent(row)
    return {
        "table": params["table"],
        "method": "data_free",
        "engine": row["engine"],
        "fragmentation_percent": percent,
        "free_space_percent": percent,
        "size_bytes": row["data_bytes"] + row["index_bytes"],
        "data_free_bytes": row["free_bytes"],
        "indexes": [],
        "estimated_benefit_bytes": row["free_bytes"],
        "recommendation": (
            f"rebuild (ALTER TABLE ... FORCE) to return {row['free_bytes']:,} bytes"
            if percent >= threshold
            else "No optimization needed"
        ),
    }


analyze_table_fragmentation = Handler(sql_templates=(_TABLE,), run_fn=_fragmentation)


# --- rebuild_fragmented_indexes / optimize_table ---------------------------------------------

_ORPHANS_MARIADB = (
    "SELECT NAME FROM information_schema.INNODB_SYS_TABLES "
    "WHERE NAME LIKE CONCAT(DATABASE(), '/#sql%')"
)
_ORPHANS_MYSQL = (
    "SELECT NAME FROM information_schema.INNODB_TABLES WHERE NAME LIKE CONCAT(DATABASE(), '/#sql%')"
)


def orphans(conn: Connection) -> list[str]:
    """Tables an interrupted ALTER left behind (InnoDB names them #sql-...)."""
    try:
        rows = conn.execute(text(_ORPHANS_MARIADB if _mariadb(conn) else _ORPHANS_MYSQL))
    except DBAPIError as exc:
        # A lost server is the step's failure, never "no leftovers"; a catalog this
        # account may not read is.
        if exc.connection_invalidated:
            raise
        with suppress(DBAPIError):
            conn.rollback()
        return []
    return [str(r[0]).split("/", 1)[1] for r in rows]


def _rebuild_statement(ctx: ToolContext, table: str, engine: str | None) -> str:
    if (engine or "").lower() == "innodb":
        return f"ALTER TABLE {ctx.quote(table)} FORCE, ALGORITHM=INPLACE, LOCK=NONE"
    return f"OPTIMIZE TABLE {ctx.quote(table)}"


def _rebuild_reason(params: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    threshold = params.get("fragmentation_threshold", 30)
    percent = _free_percent(row)
    pages = (row["data_bytes"] + row["index_bytes"]) // 16384
    if pages < params.get("min_pages", 8):
        return None
    if percent >= threshold:
        return f"{percent}% of its space is free"
    return None


# ALTER TABLE needs ALTER, CREATE and INSERT on the table; OPTIMIZE and ANALYZE need
# SELECT and INSERT.
_REBUILD_NEEDS = {"ALTER", "CREATE", "INSERT"}
_OPTIMIZE_NEEDS = {"SELECT", "INSERT"}


def _rebuild_table(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    before = table_row(conn, table)
    reason = _rebuild_reason(params, before)
    found = orphans(conn)
    if reason is None and not found:
        return {
            "table": table,
            "indexes_rebuilt": 0,
            "rebuilt": [],
            "skipped": [
                {"table": table, "reason": f"{_free_percent(before)}% free: under the threshold"}
            ],
            "leftovers_dropped": [],
        }
    require_privileges(conn, table, _REBUILD_NEEDS | ({"DROP"} if found else set()), "Rebuild")
    dropped = []
    for orphan in found:
        # "#mysql50#" makes the server take the name as written, not as an encoded file name.
        conn.execute(text(f"DROP TABLE IF EXISTS {ctx.quote('#mysql50#' + orphan)}"))
        dropped.append(orphan)
    if reason is None:
        return {
            "table": table,
            "indexes_rebuilt": 0,
            "rebuilt": [],
            "skipped": [
                {"table": table, "reason": f"{_free_percent(before)}% free: under the threshold"}
            ],
            "leftovers_dropped": dropped,
        }
    size_before = table_size(conn, table)
    started = time.monotonic()
    run_checked(conn, _rebuild_statement(ctx, table, before["engine"]), table, "Rebuild")
    after = table_row(conn, table)
    size_after = table_size(conn, table)
    return {
        "table": table,
        "indexes_rebuilt": 1,
        "rebuilt": [
            {
                "table": table,
                "reason": reason,
                "bytes_before": size_before["bytes"],
                "bytes_after": size_after["bytes"],
                "size_method": size_after["method"],
                "free_before": before["free_bytes"],
                "free_after": after["free_bytes"],
                "seconds": round(time.monotonic() - started, 3),
            }
        ],
        "skipped": [],
        "leftovers_dropped": dropped,
    }


def _rebuild_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    conn = ctx.connection
    row = table_row(conn, params["table"])
    sql = [f"DROP TABLE IF EXISTS {ctx.quote('#mysql50#' + o)}" for o in orphans(conn)]
    if _rebuild_reason(params, row):
        sql.append(_rebuild_statement(ctx, params["table"], row["engine"]))
    return sql or [f"-- {ctx.quote(params['table'])} is under the threshold"]


def _rebuild_estimate(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    row = table_row(ctx.connection, params["table"])
    will = _rebuild_reason(params, row) is not None
    return {
        "tables_to_rebuild": [params["table"]] if will else [],
        "bytes_to_rewrite": row["data_bytes"] + row["index_bytes"] if will else 0,
        "free_bytes_to_reclaim": row["free_bytes"] if will else 0,
    }


rebuild_fragmented_indexes = Handler(
    sql_templates=("ALTER TABLE {table} FORCE, ALGORITHM=INPLACE, LOCK=NONE",),
    run_fn=_rebuild_table,
    render_fn=_rebuild_sql,
    estimate_fn=_rebuild_estimate,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds a table",
)


def _optimize(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    table = params["table"]
    row = table_row(conn, table)
    if _rebuild_reason({**params, "min_pages": 1}, row) is None:
        size = table_size(conn, table)
        return {
            "table": table,
            "vacuumed": False,
            "reason": f"{_free_percent(row)}% free: under the threshold",
            "size_before": size["bytes"],
            "size_after": size["bytes"],
            "size_method": size["method"],
            "reclaimed_bytes": 0,
        }
    require_privileges(conn, table, _OPTIMIZE_NEEDS, "OPTIMIZE TABLE")
    before = table_size(conn, table)
    if before["method"] != FILE_SIZE:
        # The statistics lag behind the table; OPTIMIZE refreshes them, so refresh them
        # first too, or the difference is the statistics catching up.
        run_checked(conn, f"ANALYZE TABLE {ctx.quote(table)}", table, "ANALYZE TABLE")
        before = table_size(conn, table)
    messages = run_checked(conn, f"OPTIMIZE TABLE {ctx.quote(table)}", table, "OPTIMIZE TABLE")
    after = table_size(conn, table)
    result: dict[str, Any] = {
        "table": table,
        "vacuumed": True,
        "size_before": before["bytes"],
        "size_after": after["bytes"],
        "size_method": after["method"],
        "reclaimed_bytes": max(before["bytes"] - after["bytes"], 0),
        "messages": messages,
    }
    if after["bytes"] > before["bytes"]:
        result["size_note"] = (
            f"the table grew by {after['bytes'] - before['bytes']} bytes while it was rebuilt "
            "(other sessions' writes, or the new file's preallocation)"
        )
    return result


def _optimize_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    conn, table = ctx.connection, params["table"]
    if _rebuild_reason({**params, "min_pages": 1}, table_row(conn, table)) is None:
        return [f"-- {ctx.quote(table)} is under the threshold"]
    sql = [f"OPTIMIZE TABLE {ctx.quote(table)}"]
    if table_size(conn, table)["method"] != FILE_SIZE:
        sql.insert(0, f"ANALYZE TABLE {ctx.quote(table)}")
    return sql


optimize_table = Handler(
    # ANALYZE TABLE first only where the file's size cannot be read: it brings the
    # statistics the size is then measured from up to date.
    sql_templates=("ANALYZE TABLE {table}", "OPTIMIZE TABLE {table}"),
    run_fn=_optimize,
    render_fn=_optimize_sql,
    risk=RiskLevel.MEDIUM,
    effect="rebuilds a table",
)


def _analyze(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn, table = ctx.connection, params["table"]
    require_privileges(conn, table, _OPTIMIZE_NEEDS, "ANALYZE TABLE")
    messages = run_checked(conn, f"ANALYZE TABLE {ctx.quote(table)}", table, "ANALYZE TABLE")
    return {"table": table, "statistics_updated": True, "messages": messages}


update_table_statistics = Handler(
    sql_templates=("ANALYZE TABLE {table}",),
    run_fn=_analyze,
    risk=RiskLevel.LOW,
    effect="updates statistics",
)


# --- corruption checks: check_table_corruption, and the health analysis when asked ------------


def _check_table(
    conn: Connection, ctx: ToolContext, table: str, have: set[str] | None
) -> dict[str, Any]:
    if have is not None and not have:
        return {
            "table": table,
            "status": "not checked",
            "reason": f"{_account(conn)} has no privilege on {table} (CHECK TABLE needs one, "
            "such as SELECT)",
        }
    try:
        rows = conn.execute(text(f"CHECK TABLE {ctx.quote(table)}")).mappings().all()
    except DBAPIError as exc:
        message = _denied(exc)
        if message is None:
            raise
        return {"table": table, "status": "not checked", "reason": message}
    problems, unsupported, ok = [], None, False
    for row in rows:
        kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
        if kind == "status" and message.upper() == "OK":
            ok = True
        elif kind == "note" and "support" in message.lower():
            unsupported = message
        elif kind == "error" and _DENIED_TEXT.search(message):
            return {"table": table, "status": "not checked", "reason": message}
        elif kind == "error" or kind == "status":
            problems.append(message)
    if problems:
        return {"table": table, "status": "corrupted", "issues": problems}
    if not ok:
        return {
            "table": table,
            "status": "not checked",
            "reason": unsupported or "CHECK TABLE gave no verdict",
        }
    return {"table": table, "status": "ok", "issues": []}


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """CHECK TABLE of each table; per table, checked or why not."""
    granted = grants(conn)
    database = str(conn.execute(text("SELECT DATABASE()")).scalar())

    def have(table: str) -> set[str] | None:
        return None if granted is None else privileges_on(granted, database, table)

    results = [_check_table(conn, ctx, t, have(t)) for t in tables]
    return corruption_summary("CHECK TABLE", results)


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or []) or user_tables(conn)
    return checked_or_skipped(corruption_check(conn, ctx, tables))


check_table_corruption = Handler(
    sql_templates=("SHOW GRANTS", "CHECK TABLE {table}"), run_fn=_check
)


def _repair(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = list(params.get("tables") or [])
    if not tables:
        return {"repaired_tables": [], "backup_path": None, "note": "no corrupted tables given"}
    for table in tables:
        require_privileges(
            conn, table, {"SELECT", "INSERT", "CREATE", "ALTER"}, "Repair (copy, then rebuild)"
        )
    backups, repaired, still = [], [], {}
    for table in tables:
        row = table_row(conn, table)
        if params.get("create_backup", True):
            copy = f"{table[:40]}_aishell_bak_{time.strftime('%Y%m%d%H%M%S')}"
            conn.execute(text(f"CREATE TABLE {ctx.quote(copy)} LIKE {ctx.quote(table)}"))
            conn.execute(text(f"INSERT INTO {ctx.quote(copy)} SELECT * FROM {ctx.quote(table)}"))
            backups.append(copy)
        if (row["engine"] or "").lower() == "innodb":
            run_checked(conn, f"ALTER TABLE {ctx.quote(table)} FORCE", table, "ALTER TABLE")
        else:
            run_checked(conn, f"REPAIR TABLE {ctx.quote(table)}", table, "REPAIR TABLE")
        after = _check_table(conn, ctx, table, None)
        if after["status"] == "corrupted":
            still[table] = after["issues"]
        else:
            repaired.append(table)
    if still:
        detail = "; ".join(f"{t}: {m[0]}" for t, m in still.items())
        raise StepFailed(f"Could not repair {', '.join(still)}: {detail}")
    return {"repaired_tables": repaired, "backup_tables": backups, "backup_path": None}


repair_corrupted_tables = Handler(
    sql_templates=("ALTER TABLE {table} FORCE", "REPAIR TABLE {table}"),
    run_fn=_repair,
    render_fn=each_table("ALTER TABLE {table} FORCE  -- REPAIR TABLE for MyISAM and Aria"),
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged tables",
)


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


def agent_needs(conn: Connection) -> list[dict[str, Any]]:
    """The privileges each agent needs on this database and, per need, what is missing."""
    account = _account(conn)
    granted = grants(conn)
    database = str(conn.execute(text("SELECT DATABASE()")).scalar())
    tables = user_tables(conn)
    needs = []
    for agent, privileges, needed_for, optional in _NEEDS:
        missing: str | None
        if granted is None:
            missing = "unknown: SHOW GRANTS could not be read"
        else:
            lacking: dict[str, list[str]] = {}
            for privilege in privileges:
                scopes = [None] if privilege in _GLOBAL_ONLY else (tables or [None])
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
            }
        )
    return needs


def _on(lacking: list[str], tables: list[str]) -> str:
    if lacking == ["*"] or (tables and len(lacking) == len(tables)):
        return "on the database"
    shown = ", ".join(lacking[:10]) + (
        f" and {len(lacking) - 10} more" if len(lacking) > 10 else ""
    )
    return f"on {shown}"
