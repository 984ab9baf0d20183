"""Privileges an agent declares in a form `aishell doctor` and `targets check` can test.

aishell's own agents have their needs checked by hand in each engine's `privileges`
module. An agent from a package declares its own as `Privilege`s in its spec, per
engine: what it needs (privilege names as the engine grants them), on what (the tables
of the target's schema, the schema or database itself, or the server), and what for.
Each is tested against the catalog with the login aishell uses, and a missing one
comes with the GRANT that gives it. A privilege in words only is shown as declared and
not checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.handlers.mysql import privileges as mysql_privileges
from aishell.handlers.sqlite.privileges import read_only_reason
from aishell.sqltext import text
from aishell.targets.catalog import user_tables

# What a privilege is on: every table of the target's schema (PostgreSQL: the current
# schema; MySQL: the database), the schema, the database itself (PostgreSQL's CREATE,
# CONNECT, TEMPORARY; on MySQL the same as the schema), or the whole server
# (PostgreSQL: a role such as pg_monitor to be a member of; MySQL: a global privilege).
Scope = Literal["tables", "schema", "database", "server"]
_WORD = re.compile(r"^[A-Za-z][A-Za-z_ ]*$")
# What each scope may hold on PostgreSQL; OWNER on tables means owning each (or the
# database), as VACUUM, REINDEX and ALTER TABLE need.
_PG_TABLE = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
_PG_SCHEMA = {"CREATE", "USAGE"}
_PG_DATABASE = {"CREATE", "CONNECT", "TEMPORARY", "TEMP"}
# The schema and the database: what each may be granted, how its name and a grant on it
# are read.
_PG_OBJECTS = {
    "schema": (
        _PG_SCHEMA,
        "SELECT pg_catalog.current_schema()",
        "SELECT pg_catalog.has_schema_privilege(pg_catalog.current_schema(), :p)",
    ),
    "database": (
        _PG_DATABASE,
        "SELECT pg_catalog.current_database()",
        "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), :p)",
    ),
}


@dataclass(frozen=True)
class Privilege:
    """One privilege an agent needs on one engine, checked by `aishell doctor`."""

    grants: tuple[str, ...]
    needed_for: str
    on: Scope = "tables"
    # An optional privilege is shown but not a problem (the agent does less without it).
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.grants or not all(_WORD.match(g) for g in self.grants):
            raise ValueError(f"privilege names are words, such as SELECT: {self.grants!r}")

    @property
    def words(self) -> str:
        where = {
            "tables": "on its tables",
            "schema": "on the schema",
            "database": "on the database",
            "server": "on the server",
        }
        return f"{', '.join(self.grants)} {where[self.on]}"


Declared = Mapping[str, Sequence["Privilege | str"]]
# What a check found missing (None: nothing) and the fix for it.
Found = tuple[str | None, str]


def declared_needs(conn: Connection, declared: Declared) -> list[dict[str, Any]]:
    """Per agent and declared privilege on this engine: what is missing and the fix, in
    the shape of the engines' own `agent_needs`."""
    check = _CHECKS[family(conn.dialect.name)]
    needs = []
    for agent, privileges in declared.items():
        for privilege in privileges:
            if isinstance(privilege, str):
                needs.append(
                    {
                        "agent": agent,
                        "privilege": privilege,
                        "needed_for": "declared in words: not checked",
                        "missing": None,
                        "optional": True,
                        "fix": None,
                    }
                )
                continue
            missing, fix = check(conn, privilege)
            needs.append(
                {
                    "agent": agent,
                    "privilege": privilege.words,
                    "needed_for": privilege.needed_for,
                    "missing": missing,
                    "optional": privilege.optional,
                    "fix": fix if missing else None,
                }
            )
    return needs


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _postgresql(conn: Connection, privilege: Privilege) -> Found:
    role, schema = conn.execute(text("SELECT current_user, pg_catalog.current_schema()")).one()
    grants = [g.upper() for g in privilege.grants]
    checks: dict[str, Callable[[Connection, list[str], str, str], Found]] = {
        "server": _pg_server,
        "schema": partial(_pg_object, "schema"),
        "database": partial(_pg_object, "database"),
        "tables": _pg_tables,
    }
    return checks[privilege.on](conn, grants, str(role), str(schema))


def _pg_server(conn: Connection, grants: list[str], role: str, schema: str) -> Found:
    quote = conn.dialect.identifier_preparer.quote
    lacking = [
        g.lower()
        for g in grants
        if not conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r) "
                "AND pg_catalog.pg_has_role(current_user, :r, 'MEMBER')"
            ),
            {"r": g.lower()},
        ).scalar()
    ]
    fix = f"GRANT {', '.join(quote(g) for g in lacking)} TO {quote(role)}"
    return (f"not a member of {', '.join(lacking)}" if lacking else None), fix


def _pg_object(on: str, conn: Connection, grants: list[str], role: str, schema: str) -> Found:
    """Grants on the current schema or database (`on`), tested by the server's own
    has_schema_privilege or has_database_privilege."""
    allowed, name_sql, test_sql = _PG_OBJECTS[on]
    quote = conn.dialect.identifier_preparer.quote
    unknown = [g for g in grants if g not in allowed]
    if unknown:
        return (
            f"unknown {on} privilege {', '.join(unknown)}",
            f"declare {' or '.join(sorted(allowed))}",
        )
    name = str(conn.execute(text(name_sql)).scalar())
    lacking = [g for g in grants if not conn.execute(text(test_sql), {"p": g}).scalar()]
    fix = f"GRANT {', '.join(lacking)} ON {on.upper()} {quote(name)} TO {quote(role)}"
    return (f"{', '.join(lacking)} on {on} {name}" if lacking else None), fix


def _pg_tables(conn: Connection, grants: list[str], role: str, schema: str) -> Found:
    quote = conn.dialect.identifier_preparer.quote
    unknown = [g for g in grants if g not in _PG_TABLE | {"OWNER"}]
    if unknown:
        return f"unknown table privilege {', '.join(unknown)}", "declare table privileges"
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_catalog.pg_get_userbyid(c.relowner), "
            "pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') "
            "  OR pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE'), "
            "ARRAY(SELECT p FROM pg_catalog.unnest(CAST(:grants AS pg_catalog.text[])) AS p "
            "      WHERE p <> 'OWNER' AND NOT pg_catalog.has_table_privilege(c.oid, p)) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN pg_database d "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema() "
            "  AND d.datname = pg_catalog.current_database() ORDER BY 1"
        ),
        {"grants": grants},
    ).all()
    not_owned = [r[0] for r in rows if "OWNER" in grants and not r[2]]
    lacking = sorted({g for r in rows for g in r[3]})
    short = [r[0] for r in rows if r[3]]
    missing = "; ".join(
        [
            *([f"{', '.join(lacking)} not on {_listed(short)}"] if short else []),
            *([f"does not own {_listed(not_owned)}"] if not_owned else []),
        ]
    )
    fixes = [
        *(
            [f"GRANT {', '.join(lacking)} ON ALL TABLES IN SCHEMA {quote(schema)} TO {quote(role)}"]
            if short
            else []
        ),
        *([f"run aishell as the tables' owner ({quote(rows[0][1])})"] if not_owned else []),
    ]
    return missing or None, "; ".join(fixes)


def _mysql(conn: Connection, privilege: Privilege) -> Found:
    account = mysql_privileges.current_account(conn)
    granted = mysql_privileges.grants(conn)
    database = mysql_privileges.current_database(conn)
    grants = [g.upper() for g in privilege.grants]
    user, _, host = account.rpartition("@")
    quoted = conn.dialect.identifier_preparer.quote_identifier(database)
    scope = "*.*" if privilege.on == "server" else f"{quoted}.*"
    fix = f"GRANT {', '.join(grants)} ON {scope} TO '{user}'@'{host}'"
    if granted is None:
        return "unknown: SHOW GRANTS could not be read", fix
    if privilege.on == "server":
        have = mysql_privileges.privileges_on([g for g in granted if g[0] == "*"], database, None)
        lacking = [g for g in grants if "ALL" not in have and g not in have]
        return (f"{', '.join(lacking)} globally" if lacking else None), fix
    scopes: list[str | None] = [None]
    if privilege.on == "tables":
        scopes = [*user_tables(conn)] or scopes
    short: dict[str, list[str]] = {}
    for table in scopes:
        have = mysql_privileges.privileges_on(granted, database, table)
        for grant in grants:
            if "ALL" not in have and grant not in have:
                short.setdefault(grant, []).append(table or database)
    missing = "; ".join(f"{g} not on {_listed(t)}" for g, t in short.items())
    return missing or None, fix


def _sqlite(conn: Connection, privilege: Privilege) -> Found:
    # A SQLite file has no grants: reading needs the file readable (it is, connected),
    # anything else needs it and its folder writable.
    if {g.upper() for g in privilege.grants} <= {"SELECT", "USAGE"}:
        return None, ""
    reason = read_only_reason(conn)
    return reason, "give the user aishell runs as write access to the file and its folder"


_CHECKS: dict[str, Callable[[Connection, Privilege], tuple[str | None, str]]] = {
    "postgresql": _postgresql,
    "mysql": _mysql,
    "sqlite": _sqlite,
}
