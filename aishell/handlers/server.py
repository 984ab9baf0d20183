"""What `aishell targets check` and `doctor` show of a server: version, privileges,
extensions, and per agent the privileges it needs there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.handlers.mysql import privileges as mysql_privileges
from aishell.handlers.needs import Declared, declared_needs
from aishell.handlers.postgresql import privileges as postgresql_privileges
from aishell.handlers.sqlite import privileges as sqlite_privileges
from aishell.sqltext import text


def describe_server(conn: Connection, declared: Declared | None = None) -> dict[str, Any]:
    """Server version, the privileges that matter, extensions, warnings; and per agent the
    privileges it needs on this target, each with what is missing (a warning when it is):
    aishell's own agents' from each engine's checks, other agents' from what they
    `declared` for this engine."""
    dialect = family(conn.dialect.name)
    info = _DESCRIBE[dialect](conn)
    info["needs"] = _AGENT_NEEDS[dialect](conn) + declared_needs(conn, declared or {})
    for need in info["needs"]:
        state = f"missing: {need['missing']}" if need["missing"] else "ok"
        info["privileges"].setdefault(f"{need['agent']} needs", []).append(
            f"{need['privilege']} ({need['needed_for']}): {state}"
        )
        if need["missing"] and not need.get("optional"):
            info["warnings"].append(
                f"{need['agent']} lacks {need['privilege']}, needed for {need['needed_for']}: "
                f"{need['missing']}"
            )
    return info


def _describe_postgresql(conn: Connection) -> dict[str, Any]:
    warnings: list[str] = []
    version = conn.execute(text("SHOW server_version")).scalar()
    role = (
        conn.execute(
            text(
                "SELECT rolname, rolsuper, rolcreaterole, rolbypassrls "
                "FROM pg_roles WHERE rolname = current_user"
            )
        )
        .mappings()
        .one()
    )
    # pg_maintain (PostgreSQL 17+) is the role made for exactly this work.
    maintain = _pg_has_role(conn, "pg_maintain") and bool(
        conn.execute(
            text("SELECT pg_catalog.pg_has_role(current_user, 'pg_maintain', 'member')")
        ).scalar()
    )
    extensions = sorted(r[0] for r in conn.execute(text("SELECT extname FROM pg_extension")))
    available = sorted(
        r[0]
        for r in conn.execute(
            text(
                "SELECT name FROM pg_available_extensions "
                "WHERE name IN ('pgstattuple', 'amcheck') AND installed_version IS NULL"
            )
        )
    )
    privileges = {
        "role": role["rolname"],
        "superuser": role["rolsuper"],
        "createrole": role["rolcreaterole"],
        "bypassrls": role["rolbypassrls"],
        "pg_maintain": maintain,
    }
    if role["rolsuper"]:
        warnings.append(
            f"role {role['rolname']} is a superuser: give aishell a role that owns the "
            "tables (or has pg_maintain on PostgreSQL 17+) instead"
        )
    elif role["rolcreaterole"] or role["rolbypassrls"]:
        warnings.append(f"role {role['rolname']} has more than maintenance needs")
    for name in available:
        warnings.append(f"extension {name} is available but not installed")
    return {
        "server_version": version,
        "privileges": privileges,
        "extensions": extensions,
        "warnings": warnings,
    }


def _describe_mysql(conn: Connection) -> dict[str, Any]:
    warnings: list[str] = []
    version = conn.execute(text("SELECT VERSION()")).scalar()
    # SHOW GRANTS carries the account's password hash after IDENTIFIED: never printed.
    grants = [str(r[0]).split(" IDENTIFIED ", 1)[0] for r in conn.execute(text("SHOW GRANTS"))]
    if any("ALL PRIVILEGES ON *.*" in g or "SUPER" in g for g in grants):
        warnings.append(
            "the account has ALL PRIVILEGES or SUPER on *.*: maintenance needs "
            "SELECT, INSERT, ALTER, LOCK TABLES and PROCESS on its own database"
        )
    return {
        "server_version": version,
        "privileges": {"grants": grants},
        "extensions": [],
        "warnings": warnings,
    }


def _describe_sqlite(conn: Connection) -> dict[str, Any]:
    warnings: list[str] = []
    version = conn.execute(text("SELECT sqlite_version()")).scalar()
    options = {r[0] for r in conn.execute(text("PRAGMA compile_options"))}
    if "ENABLE_DBSTAT_VTAB" not in options:
        warnings.append("this SQLite has no dbstat table: fragmentation is only estimated")
    return {
        "server_version": f"SQLite {version}",
        "privileges": {},
        "extensions": sorted(o for o in options if o.startswith("ENABLE_")),
        "warnings": warnings,
    }


def _pg_has_role(conn: Connection, role: str) -> bool:
    return bool(
        conn.execute(
            text("SELECT pg_catalog.count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).scalar()
    )


_DESCRIBE: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "postgresql": _describe_postgresql,
    "mysql": _describe_mysql,
    "sqlite": _describe_sqlite,
}
_AGENT_NEEDS: dict[str, Callable[[Connection], list[dict[str, Any]]]] = {
    "postgresql": postgresql_privileges.agent_needs,
    "mysql": mysql_privileges.agent_needs,
    "sqlite": sqlite_privileges.agent_needs,
}
