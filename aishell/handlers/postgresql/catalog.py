"""What the PostgreSQL handlers read of the server's catalogs: a table's oid and indexes,
the extensions installed, whether amcheck can run for this role, the database's size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.sqltext import text

TABLE_OIDS = (
    "SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = ANY(CAST(:names AS text[])) AND n.nspname = pg_catalog.current_schema()"
)
# The indexes of several tables (by oid), in one query.
# With each index, the user-defined support functions of its operator classes (a B-tree's
# comparison function, which every check of its order calls), schema-qualified.
INDEXES = """
SELECT x.indrelid::bigint AS table_oid, i.relname AS name, i.oid AS oid,
       x.indisvalid AS valid, am.amname AS method, pg_catalog.pg_relation_size(i.oid) AS bytes,
       ARRAY(SELECT DISTINCT pn.nspname::pg_catalog.text || '.' || p.proname::pg_catalog.text
             FROM pg_catalog.pg_opclass oc
             JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily
             JOIN pg_catalog.pg_proc p ON p.oid = ap.amproc::pg_catalog.oid
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
             WHERE oc.oid = ANY(x.indclass)
               AND p.oid OPERATOR(pg_catalog.>=) '16384'::pg_catalog.oid
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                               WHERE d.classid OPERATOR(pg_catalog.=)
                                     'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid
                                 AND d.objid = p.oid AND d.deptype = 'e')) AS support
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_am am ON am.oid = i.relam
WHERE x.indrelid::bigint = ANY(CAST(:oids AS bigint[]))
ORDER BY i.relname
"""
EXTENSIONS = "SELECT extname FROM pg_extension"


def extensions(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(text(EXTENSIONS))}


def table_oids(conn: Connection, tables: list[str], *, missing_ok: bool = False) -> dict[str, int]:
    """Each table's oid, in one query; a table not in the current schema fails the step
    (`missing_ok`: is left out)."""
    found = {str(name): int(oid) for name, oid in conn.execute(text(TABLE_OIDS), {"names": tables})}
    for table in tables:
        if table not in found and not missing_ok:
            raise StepFailed(f"Table {table!r} is not in the current schema")
    return found


def database_size(conn: Connection) -> dict[str, Any]:
    """The database's size, measured the same way before a run and after it."""
    size = conn.execute(
        text("SELECT pg_catalog.pg_database_size(pg_catalog.current_database())")
    ).scalar()
    return {"size_bytes": int(size or 0), "method": "pg_database_size"}


# --- amcheck: may this role check this database for corruption? -------------------------------

AMCHECK = """
SELECT n.nspname AS schema,
       (SELECT pg_catalog.bool_and(pg_catalog.has_function_privilege(p.oid, 'EXECUTE'))
        FROM pg_proc p
         WHERE p.pronamespace = e.extnamespace AND p.proname = 'bt_index_check'
           AND p.pronargs = 2) AS may_check_indexes,
       (SELECT pg_catalog.bool_and(pg_catalog.has_function_privilege(p.oid, 'EXECUTE'))
        FROM pg_proc p
         WHERE p.pronamespace = e.extnamespace AND p.proname = 'verify_heapam') AS may_check_heap
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'amcheck'
"""
AMCHECK_AVAILABLE = "SELECT pg_catalog.count(*) FROM pg_available_extensions WHERE name = 'amcheck'"


@dataclass(frozen=True)
class Amcheck:
    """Whether amcheck can check this database for this role, and if not, why."""

    schema: str | None
    heap: bool
    reason: str | None


def amcheck(conn: Connection) -> Amcheck:
    row = conn.execute(text(AMCHECK)).mappings().first()
    role = conn.execute(text("SELECT current_user")).scalar()
    if row is None:
        if conn.execute(text(AMCHECK_AVAILABLE)).scalar():
            reason = (
                "amcheck is not installed in this database (aishell does not install it: "
                "CREATE EXTENSION amcheck needs a superuser and changes the database)"
            )
        else:
            reason = (
                "amcheck is not installed and not available on this server (it ships with "
                "PostgreSQL's contrib modules)"
            )
        return Amcheck(None, False, reason)
    if not row["may_check_indexes"]:
        return Amcheck(
            row["schema"],
            False,
            f"role {role} may not run amcheck (GRANT EXECUTE ON FUNCTION "
            f"{row['schema']}.bt_index_check(regclass, boolean), "
            f"{row['schema']}.verify_heapam TO {role})",
        )
    return Amcheck(row["schema"], bool(row["may_check_heap"]), None)
