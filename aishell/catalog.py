"""What a target holds: tables, row estimates, sizes, indexes; per dialect, in a constant
number of round trips however many tables there are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import TargetError
from aishell.sqltext import quote_identifier

_PG_SNAPSHOT = """
SELECT c.relname AS name,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint
            ELSE coalesce(s.n_live_tup, 0) END AS rows,
       (c.relpages + coalesce(sum(i.relpages), 0))::bigint
           * current_setting('block_size')::bigint AS bytes,
       coalesce(array_agg(i.relname ORDER BY i.relname)
                FILTER (WHERE i.relname IS NOT NULL), '{}') AS indexes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_index x ON x.indrelid = c.oid
LEFT JOIN pg_class i ON i.oid = x.indexrelid
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
GROUP BY c.oid, c.relname, c.reltuples, c.relpages, s.n_live_tup
ORDER BY c.relname
"""
# Sizes come from pg_class's page counts (as of the last VACUUM or ANALYZE), not from
# pg_total_relation_size, which takes a lock and would wait behind a held one.

_MYSQL_TABLES = """
SELECT TABLE_NAME AS name, coalesce(TABLE_ROWS, 0) AS row_count,
       coalesce(DATA_LENGTH, 0) + coalesce(INDEX_LENGTH, 0) AS bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
ORDER BY TABLE_NAME
"""
_MYSQL_INDEXES = """
SELECT DISTINCT TABLE_NAME AS tbl, INDEX_NAME AS name
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, INDEX_NAME
"""


def snapshot(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every user table: {name: {rows, bytes, indexes}}."""
    dialect = conn.dialect.name
    tables: dict[str, dict[str, Any]] = {}
    if dialect == "postgresql":
        for row in conn.execute(text(_PG_SNAPSHOT)):
            tables[row.name] = {
                "rows": int(row.rows),
                "bytes": int(row.bytes),
                "indexes": list(row.indexes),
            }
    elif dialect in ("mysql", "mariadb"):
        for row in conn.execute(text(_MYSQL_TABLES)):
            tables[row.name] = {"rows": int(row.row_count), "bytes": int(row.bytes), "indexes": []}
        for row in conn.execute(text(_MYSQL_INDEXES)):
            if row.tbl in tables:
                tables[row.tbl]["indexes"].append(row.name)
    else:
        rows = conn.execute(
            text(
                "SELECT name, type, tbl_name FROM sqlite_schema "
                "WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "ORDER BY name"
            )
        ).all()
        for row in rows:
            if row.type == "table":
                tables[row.name] = {"rows": None, "bytes": None, "indexes": []}
        for row in rows:
            if row.type == "index" and row.tbl_name in tables:
                tables[row.tbl_name]["indexes"].append(row.name)
        for row in conn.execute(
            text(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' "
                "AND name LIKE 'sqlite\\_autoindex%' ESCAPE '\\'"
            )
        ):
            if row.tbl_name in tables:
                tables[row.tbl_name]["indexes"].append(row.name)
        estimates = _sqlite_stat1(conn)
        for name, info in tables.items():
            info["indexes"].sort()
            info["rows"] = estimates.get(name)
            if info["rows"] is None:
                info["rows"] = _count(conn, name)
    return tables


def user_tables(conn: Connection) -> list[str]:
    """User tables of the target, by name."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY 1"
        )
    elif dialect in ("mysql", "mariadb"):
        sql = (
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
        )
    else:
        sql = (
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1"
        )
    return [r[0] for r in conn.execute(text(sql))]


def table_columns(conn: Connection, table: str) -> list[str]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT attname FROM pg_attribute WHERE attrelid = "
            "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :t AND n.nspname = current_schema()) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    elif dialect in ("mysql", "mariadb"):
        sql = (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"
        )
    else:
        sql = "SELECT name FROM pragma_table_info(:t) ORDER BY cid"
    return [r[0] for r in conn.execute(text(sql), {"t": table})]


def row_estimate(conn: Connection, table: str) -> int:
    """The catalog's row estimate for one table."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        value = conn.execute(
            text(
                "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint "
                "ELSE coalesce(s.n_live_tup, 0) END FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relname = :t AND n.nspname = current_schema()"
            ),
            {"t": table},
        ).scalar()
        return int(value or 0)
    if dialect in ("mysql", "mariadb"):
        value = conn.execute(
            text(
                "SELECT TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            ),
            {"t": table},
        ).scalar()
        return int(value or 0)
    estimate = _sqlite_stat1(conn).get(table)
    return estimate if estimate is not None else _count(conn, table)


def table_bytes(conn: Connection, table: str) -> int | None:
    """Bytes a table and its indexes occupy, where the database can say."""
    dialect = conn.dialect.name
    try:
        if dialect == "postgresql":
            return int(
                conn.execute(
                    text(
                        "SELECT (c.relpages + coalesce((SELECT sum(i.relpages) FROM pg_index x "
                        "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid), 0))"
                        " * current_setting('block_size')::bigint FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relname = :t AND n.nspname = current_schema()"
                    ),
                    {"t": table},
                ).scalar()
                or 0
            )
        if dialect in ("mysql", "mariadb"):
            return int(
                conn.execute(
                    text(
                        "SELECT coalesce(DATA_LENGTH, 0) + coalesce(INDEX_LENGTH, 0) "
                        "FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
                    ),
                    {"t": table},
                ).scalar()
                or 0
            )
        return conn.execute(
            text(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = :t OR name IN "
                "(SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = :t)"
            ),
            {"t": table},
        ).scalar_one()
    except DBAPIError:
        return None


def check_tables(
    conn: Connection, target: str, tables: Sequence[str], known: Sequence[str] | None = None
) -> None:
    """Every name must be an existing user table; the error lists the ones there are."""
    known = list(known) if known is not None else user_tables(conn)
    present = set(known)
    for table in tables:
        if table not in present:
            listing = ", ".join(known[:50]) + (" ..." if len(known) > 50 else "")
            raise TargetError(
                f"Table {table!r} not found in target '{target}'; tables are: {listing or '(none)'}"
            )


def check_column(conn: Connection, table: str, column: str) -> None:
    columns = table_columns(conn, table)
    if column not in columns:
        raise TargetError(
            f"Table {table!r} has no column {column!r}; columns are: {', '.join(columns)}"
        )


def _sqlite_stat1(conn: Connection) -> dict[str, int]:
    has_stats = conn.execute(
        text("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'")
    ).scalar_one()
    if not has_stats:
        return {}
    estimates: dict[str, int] = {}
    for tbl, stat in conn.execute(text("SELECT tbl, stat FROM sqlite_stat1")):
        if stat and tbl not in estimates:
            estimates[tbl] = int(str(stat).split()[0])
    return estimates


def _count(conn: Connection, table: str) -> int:
    quoted = quote_identifier(conn.dialect, table)
    return int(conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one())


def blocking_sessions(conn: Connection, tables: Sequence[str]) -> list[str]:
    """Other sessions holding locks on these tables (or open transactions), described."""
    dialect = conn.dialect.name
    try:
        if dialect == "postgresql":
            rows = conn.execute(
                text(
                    "SELECT DISTINCT a.pid, a.usename, a.application_name, a.state, "
                    "left(a.query, 80) AS query FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "JOIN pg_class c ON c.oid = l.relation "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE l.granted AND a.pid <> pg_backend_pid() "
                    "AND n.nspname = current_schema() AND c.relname = ANY(CAST(:t AS text[]))"
                ),
                {"t": list(tables)},
            ).mappings()
            return [
                f"pid {r['pid']} ({r['usename']}, {r['application_name'] or 'no name'}, "
                f"{r['state']}: {r['query']!r})"
                for r in rows
            ]
        if dialect in ("mysql", "mariadb"):
            rows = conn.execute(
                text(
                    "SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.COMMAND AS command, "
                    "p.TIME AS seconds, LEFT(COALESCE(p.INFO, ''), 80) AS query "
                    "FROM information_schema.PROCESSLIST p "
                    # Table locks (LOCK TABLES) and metadata locks are held by sessions
                    # that may look idle: every other session on this database is listed.
                    "WHERE p.ID <> CONNECTION_ID() AND p.DB = DATABASE() "
                    "ORDER BY p.TIME DESC LIMIT 5"
                )
            ).mappings()
            return [
                f"connection {r['id']} ({r['user']}@{r['host']}, {r['command']} for "
                f"{r['seconds']}s: {r['query']!r})"
                for r in rows
            ]
    except DBAPIError:
        return []
    return []


def is_lock_timeout(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "55P03":
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in (1205, 3572)


_PG_URGENCY = """
SELECT c.relname AS name, age(c.relfrozenxid) AS xid_age,
       coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       c.relpages::bigint * current_setting('block_size')::bigint AS total_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
"""
_MYSQL_URGENCY = """
SELECT TABLE_NAME AS name, coalesce(DATA_LENGTH, 0) + coalesce(INDEX_LENGTH, 0) AS bytes,
       coalesce(DATA_FREE, 0) AS free_bytes
FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
"""
# Autovacuum forces a freeze at 200 million transactions.
FREEZE_MAX_AGE = 200_000_000


def pg_urgency(xid_age: int | None, live: int, dead: int, total_bytes: int) -> float:
    """Transaction-ID age toward a forced freeze, the share of dead rows, then size."""
    xid = min((xid_age or 0) / FREEZE_MAX_AGE, 1.0)
    total = (live or 0) + (dead or 0)
    dead_share = (dead or 0) / total if total else 0.0
    return round(3 * xid + 2 * dead_share + min((total_bytes or 0) / 2**30, 1.0), 4)


def mysql_urgency(used_bytes: int, free_bytes: int) -> float:
    """The share of free space, then size."""
    total = used_bytes + free_bytes
    free = free_bytes / total if total else 0.0
    return round(2 * free + min(used_bytes / 2**30, 1.0), 4)


def urgency(conn: Connection) -> dict[str, float]:
    """How soon each table needs maintenance, higher first, in one query.

    PostgreSQL: transaction-ID age toward a forced freeze, then the share of dead
    rows, then size; MySQL/MariaDB: the share of free space, then size; SQLite: size.
    """
    dialect = conn.dialect.name
    scores: dict[str, float] = {}
    if dialect == "postgresql":
        for r in conn.execute(text(_PG_URGENCY)).mappings():
            scores[r["name"]] = pg_urgency(r["xid_age"], r["live"], r["dead"], r["total_bytes"])
    elif dialect in ("mysql", "mariadb"):
        for r in conn.execute(text(_MYSQL_URGENCY)).mappings():
            scores[r["name"]] = mysql_urgency(int(r["bytes"]), int(r["free_bytes"]))
    else:
        try:
            rows = conn.execute(
                text(
                    "SELECT s.tbl_name AS name, sum(d.pgsize) AS bytes FROM dbstat d "
                    "JOIN sqlite_schema s ON s.name = d.name GROUP BY s.tbl_name"
                )
            )
            scores = {r.name: round(min(r.bytes / 2**30, 1.0), 9) for r in rows}
        except DBAPIError:
            scores = {}
    return scores
