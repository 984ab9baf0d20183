"""Who may maintain what on PostgreSQL, and how a table the server skipped is told.

VACUUM and ANALYZE of a table the role may not maintain succeed with only a WARNING,
having done nothing: each step checks ownership first and listens for that warning,
and a step the server skipped ends `skipped` with the reason, never `succeeded`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.handlers import skip_table
from aishell.handlers.postgresql.catalog import AMCHECK_AVAILABLE, Amcheck, amcheck, extensions
from aishell.sqltext import text

# Who may VACUUM or ANALYZE a table: its owner (or a member of the owning role), the
# database's owner, and from PostgreSQL 17 whoever holds MAINTAIN on it. REINDEX needs
# the table's owner, or MAINTAIN from 17.
_PRIVILEGES = """
SELECT c.relname AS name, c.oid AS oid, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       current_user AS role,
       pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS owns,
       pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE')
         AND NOT c.relisshared AS owns_database,
       false AS maintain,
       pg_catalog.has_table_privilege(c.oid, 'SELECT') AS may_select,
       pg_catalog.has_table_privilege(c.oid, 'DELETE') AS may_delete
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN pg_database d
WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
  AND d.datname = pg_catalog.current_database()
  AND (pg_catalog.cardinality(CAST(:tables AS text[])) = 0
       OR c.relname = ANY(CAST(:tables AS text[])))
ORDER BY c.relname
"""
_PRIVILEGES_17 = _PRIVILEGES.replace(
    "false AS maintain", "pg_catalog.has_table_privilege(c.oid, 'MAINTAIN') AS maintain"
)


def table_privileges(conn: Connection, tables: list[str]) -> list[dict[str, Any]]:
    """Per table (every table of the schema when `tables` is empty): its owner and what
    the current role may do to it."""
    major = int((conn.dialect.server_version_info or (0,))[0])
    sql = _PRIVILEGES_17 if major >= 17 else _PRIVILEGES
    rows = [dict(r) for r in conn.execute(text(sql), {"tables": tables}).mappings()]
    for row in rows:
        row["maintain_known"] = major >= 17
        row["may_vacuum"] = bool(row["owns"] or row["owns_database"] or row["maintain"])
        row["may_reindex"] = bool(row["owns"] or row["maintain"])
    return rows


def _refusal(conn: Connection, row: Mapping[str, Any], action: str, reindex: bool) -> str:
    whom = "does not own it" if reindex else "owns neither it nor the database"
    # The fix is SQL to paste: its names quoted where they need it ("Upper Case").
    quote = conn.dialect.identifier_preparer.quote
    table, role = quote(row["name"]), quote(row["role"])
    fix = f"ALTER TABLE {table} OWNER TO {role}"
    if row["maintain_known"]:
        fix = f"GRANT MAINTAIN ON {table} TO {role}, or {fix}"
    return (
        f"{action} of {row['name']} skipped: role {row['role']} {whom} (owner: {row['owner']}); "
        f"run it as {row['owner']}, or {fix}"
    )


def require_maintain(
    conn: Connection,
    table: str,
    action: str,
    *,
    reindex: bool = False,
    run_cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Raise StepSkipped before `action` when the server would refuse or skip it; else
    the table's row of table_privileges (its oid among it). With a run's cache, every
    table's row is read once per run, in one query; a table made since is read alone.
    (A grant revoked meanwhile is still caught: the server's warning, server_warnings.)"""
    known: dict[str, dict[str, Any]] | None = None
    if run_cache is not None:
        known = run_cache.get("pg_table_privileges")
        if known is None:
            known = {row["name"]: row for row in table_privileges(conn, [])}
            run_cache["pg_table_privileges"] = known
    row = known.get(table) if known is not None else None
    if row is None:
        rows = table_privileges(conn, [table])
        if not rows:
            raise StepFailed(f"Table {table!r} is not in the current schema")
        row = rows[0]
    if row["may_reindex" if reindex else "may_vacuum"]:
        return row
    why = _refusal(conn, row, action, reindex)
    skip_table(table, why, {"owner": row["owner"], "role": row["role"]})


# VACUUM and ANALYZE report a table they skip as a WARNING, and succeed: 'skipping "t"
# -- only table or database owner can vacuum it' (from 17: 'permission denied to vacuum
# "t", skipping it'). The check above catches it in any language; this, the rest.
_SKIPPED = re.compile(r"skipping|permission denied", re.IGNORECASE)


@contextmanager
def server_warnings(conn: Connection) -> Iterator[list[str]]:
    """The WARNING notices the server sends while the block runs."""
    raw: Any = conn.connection.driver_connection
    found: list[str] = []

    def keep(diagnostic: Any) -> None:
        if diagnostic.severity_nonlocalized == "WARNING":
            found.append(str(diagnostic.message_primary or "").strip())

    raw.add_notice_handler(keep)
    try:
        yield found
    finally:
        raw.remove_notice_handler(keep)


def skipped_by_warnings(tables: list[str], action: str, warnings: list[str]) -> dict[str, str]:
    """table -> why, for the tables the server's warnings say it skipped. A skip that
    names none of them counts against them all: nothing is taken as done unsaid."""
    found: dict[str, str] = {}
    for warning in (w for w in warnings if _SKIPPED.search(w)):
        named = [t for t in tables if f'"{t}"' in warning] or tables
        for table in named:
            found.setdefault(table, f"{action} of {table} skipped by the server: {warning}")
    return found


def raise_if_skipped(
    table: str, action: str, warnings: list[str], result: dict[str, Any]
) -> dict[str, Any]:
    """result, or StepSkipped when the server's warnings say it skipped the table."""
    skipped = [w for w in warnings if _SKIPPED.search(w)]
    if warnings:
        result["server_warnings"] = warnings
    if not skipped:
        return result
    skip_table(table, f"{action} of {table} skipped by the server: {skipped[0]}", result)


# --- what each agent needs of the role (aishell targets check) --------------------------------

_UNREADABLE = """
SELECT n.nspname::pg_catalog.text || '.' || c.relname::pg_catalog.text AS name,
       n.nspname AS schema
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') 
  AND n.nspname::pg_catalog.text !~ '^pg_(toast|temp)'
  AND NOT pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""


def _listed(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def agent_needs(conn: Connection) -> list[dict[str, Any]]:
    """The privileges each agent needs on this database and, per need, what is missing
    and the fix (one line: what to run, or as whom)."""
    rows = table_privileges(conn, [])
    role = str(conn.execute(text("SELECT current_user")).scalar())
    major = int((conn.dialect.server_version_info or (0,))[0])
    quote = conn.dialect.identifier_preparer.quote
    undeletable = [r["name"] for r in rows if not r["may_delete"]]
    needs = [
        *_maintenance_needs(conn, rows, role, major),
        _backup_need(conn, role, major),
        _validation_need(conn, role),
        {
            "agent": "log_cleanup",
            "privilege": "SELECT and DELETE on the tables it purges",
            "needed_for": "delete_old_records",
            "missing": f"not on {_listed(undeletable)}" if undeletable else None,
            "fix": f"GRANT SELECT, DELETE ON {_listed([quote(n) for n in undeletable])} TO "
            f"{quote(role)} (the tables it purges)",
        },
    ]
    for need in needs:
        need["role"] = role
        if not need["missing"]:
            need["fix"] = None
    return needs


def _maintenance_needs(
    conn: Connection, rows: list[dict[str, Any]], role: str, major: int
) -> list[dict[str, Any]]:
    quote = conn.dialect.identifier_preparer.quote
    owner = "owner of each table" + (" (or MAINTAIN on it)" if major >= 17 else "")

    def on_each(key: str) -> dict[str, Any]:
        lacking = [r for r in rows if not r[key]]
        owners = ", ".join(sorted({quote(r["owner"]) for r in lacking}))
        # From 17 one predefined role may maintain every table; before, only owners may.
        fix = (
            f"GRANT pg_maintain TO {quote(role)}"
            if major >= 17
            else f"run aishell as the owner ({owners}), or ALTER TABLE "
            f"{quote(lacking[0]['name']) if lacking else '...'} OWNER TO {quote(role)} "
            "(each table listed)"
        )
        return {"missing": f"not on {_listed([r['name'] for r in lacking])}", "fix": fix}

    tool = amcheck(conn)
    return [
        {
            "agent": "maintenance",
            "privilege": f"{owner}, or of the database",
            "needed_for": "VACUUM and ANALYZE (skipped without it)",
            "missing": None,
            **(on_each("may_vacuum") if not all(r["may_vacuum"] for r in rows) else {}),
        },
        {
            "agent": "maintenance",
            "privilege": owner,
            "needed_for": "REINDEX (skipped without it)",
            "missing": None,
            **(on_each("may_reindex") if not all(r["may_reindex"] for r in rows) else {}),
        },
        {
            "agent": "maintenance",
            "privilege": "EXECUTE on amcheck (bt_index_check, verify_heapam)",
            "needed_for": "the corruption check (tables reported not checked without it)",
            "missing": tool.reason,
            "fix": _amcheck_fix(conn, tool, quote(role)),
        },
        {
            "agent": "maintenance",
            "privilege": "EXECUTE on pgstattuple (pg_stat_scan_tables)",
            "needed_for": "measured bloat (estimated without it)",
            "missing": (
                None if "pgstattuple" in extensions(conn) else "pgstattuple is not installed"
            ),
            "optional": True,
            "fix": "CREATE EXTENSION pgstattuple (as a superuser); GRANT pg_stat_scan_tables TO "
            + quote(role),
        },
    ]


def _backup_need(conn: Connection, role: str, major: int) -> dict[str, Any]:
    quote = conn.dialect.identifier_preparer.quote
    unreadable = [(str(r[0]), str(r[1])) for r in conn.execute(text(_UNREADABLE))]
    if major >= 14:  # the predefined role that reads everything
        fix = f"GRANT pg_read_all_data TO {quote(role)}"
    else:
        fix = "; ".join(
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {quote(schema)} TO {quote(role)}; "
            f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {quote(schema)} TO {quote(role)}"
            for schema in sorted({schema for _, schema in unreadable})
        )
    return {
        "agent": "backup",
        "privilege": "SELECT on every table and sequence",
        "needed_for": "pg_dump",
        "missing": f"not on {_listed([n for n, _ in unreadable])}" if unreadable else None,
        "fix": fix,
    }


def _validation_need(conn: Connection, role: str) -> dict[str, Any]:
    """validate_backup restores into a scratch database it creates and drops."""
    may = conn.execute(
        text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    quote = conn.dialect.identifier_preparer.quote
    return {
        "agent": "backup",
        "privilege": "CREATEDB",
        "needed_for": "validate_backup (a restore into a scratch database)",
        "missing": None if may else f"role {role} may not create databases",
        "fix": f"ALTER ROLE {quote(role)} CREATEDB",
    }


def _amcheck_fix(conn: Connection, tool: Amcheck, role: str) -> str:
    grant = (
        "GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean), "
        f"verify_heapam(regclass, boolean, boolean, text, bigint, bigint) TO {role}"
    )
    if tool.schema is not None:
        return grant
    if not conn.execute(text(AMCHECK_AVAILABLE)).scalar():
        return "install PostgreSQL's contrib modules on the server, then CREATE EXTENSION amcheck"
    return f"CREATE EXTENSION amcheck (as a superuser, in this database); then {grant}"
