"""What the PostgreSQL handlers read of the server's catalogs: a table's oid and indexes,
the partitions of the partitioned tables (the run's one read of targets/partitions.py),
the extensions installed, whether amcheck can run for this role, the database's size."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.sqltext import text
from aishell.targets.partitions import PARTITION_TREE, PartitionTree, partition_trees
from aishell.tool.context import ToolContext

TABLE_OIDS = (
    "SELECT c.relname, c.oid, c.relkind FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = ANY(CAST(:names AS text[])) AND n.nspname = pg_catalog.current_schema()"
)
# The indexes of several tables (by oid), in one query.
# With each index, the user-defined support functions of its operator classes (a B-tree's
# comparison function, which every check of its order calls), schema-qualified: the
# support functions of user-defined operator classes are found once and joined to each
# index's classes (a lookup per index read pg_amproc whole: 0.65 s for 10,000 indexes).
INDEXES = """
WITH support AS (
  SELECT oc.oid AS opclass,
         pn.nspname::pg_catalog.text || '.' || p.proname::pg_catalog.text AS qualified
  FROM pg_catalog.pg_opclass oc
  JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily
  JOIN pg_catalog.pg_proc p ON p.oid = ap.amproc::pg_catalog.oid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
  WHERE p.oid OPERATOR(pg_catalog.>=) '16384'::pg_catalog.oid
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid OPERATOR(pg_catalog.=)
                          'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid
                      AND d.objid = p.oid AND d.deptype = 'e')
)
SELECT x.indrelid::bigint AS table_oid, i.relname AS name, i.oid AS oid,
       x.indisvalid AS valid, x.indisready AS ready, am.amname AS method,
       coalesce(pg_catalog.array_agg(DISTINCT s.qualified)
                FILTER (WHERE s.qualified IS NOT NULL), '{}') AS support
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_am am ON am.oid = i.relam
CROSS JOIN LATERAL pg_catalog.unnest(CAST(x.indclass AS pg_catalog.oid[])) k(opclass)
LEFT JOIN support s ON s.opclass = k.opclass
WHERE x.indrelid::bigint = ANY(CAST(:oids AS bigint[]))
GROUP BY x.indrelid, i.relname, i.oid, x.indisvalid, x.indisready, am.amname
ORDER BY i.relname
"""
EXTENSIONS = "SELECT extname FROM pg_extension"


def extensions(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(text(EXTENSIONS))}


def table_oids(conn: Connection, tables: list[str], *, missing_ok: bool = False) -> dict[str, int]:
    """Each table's oid, in one query; a table not in the current schema fails the step
    (`missing_ok`: is left out)."""
    return _found(conn, tables, missing_ok)[0]


def _found(
    conn: Connection, tables: list[str], missing_ok: bool
) -> tuple[dict[str, int], list[str]]:
    """Each table's oid, and the partitioned ones among them."""
    rows = conn.execute(text(TABLE_OIDS), {"names": tables}).all()
    found = {str(name): int(oid) for name, oid, _ in rows}
    for table in tables:
        if table not in found and not missing_ok:
            raise StepFailed(f"Table {table!r} is not in the current schema")
    return found, [str(name) for name, _, kind in rows if kind == "p"]


def oids_and_partitioned(
    ctx: ToolContext, tables: list[str]
) -> tuple[dict[str, int], dict[str, Partitioned]]:
    """table_oids (a table not there left out), and the partitioned tables among them
    with their partitions (as the run read them: run_partitioned)."""
    oids, parents = _found(ctx.connection, tables, True)
    found = run_partitioned(ctx, parents)
    # Made partitioned since the run read the trees: read now, never checked as a table.
    unread = [p for p in parents if p not in found]
    return oids, {**found, **partitioned(ctx.connection, unread)}


# Each partitioned table named (relkind p: no storage of its own, so nothing that reads a
# relation's pages can be given it) with its leaf partitions, the tables that hold its
# rows: the query planning reads them with (targets/partitions.py).
PARTITIONED = PARTITION_TREE


@dataclass(frozen=True)
class Partitioned:
    """A partitioned table: its leaf partitions in the current schema (name: oid), and
    how many leaves are not among them (foreign, or in another schema)."""

    leaves: dict[str, int]
    elsewhere: int

    @classmethod
    def of(cls, tree: PartitionTree) -> Partitioned:
        return cls(tree.leaf_oids, tree.elsewhere)

    def described(self, what: str) -> str:
        """What is said of the parent: it is partitioned, and where its rows are `what`
        ("checked", "measured")."""
        line = "partitioned, with no storage of its own"
        if self.leaves:
            line += f"; its partitions ({', '.join(self.leaves)}) are {what} as tables"
        if self.elsewhere:
            line += (
                f"; {self.elsewhere} partition(s) outside this schema or foreign are not "
                f"{what} here"
            )
        return line


def partitioned(conn: Connection, tables: list[str] | None) -> dict[str, Partitioned]:
    """The partitioned tables among `tables` (None: every one of the current schema), in
    one query (no tables: no query)."""
    return {name: Partitioned.of(tree) for name, tree in partition_trees(conn, tables).items()}


def schema_partitions(ctx: ToolContext) -> dict[str, PartitionTree]:
    """Every partitioned table of the schema with its tree, read once a run for all its
    steps (one query, however many steps and tables: no query per table). A run's steps
    vacuum, analyze and rebuild: none of them attaches or detaches a partition."""
    found = ctx.run_cache.get("pg_partition_trees")
    if found is None:
        found = ctx.run_cache["pg_partition_trees"] = partition_trees(ctx.connection, None)
    return cast(dict[str, PartitionTree], found)


def run_partitioned(ctx: ToolContext, tables: list[str]) -> dict[str, Partitioned]:
    """The partitioned tables among `tables`, from the run's one read of the trees."""
    trees = schema_partitions(ctx)
    return {t: Partitioned.of(trees[t]) for t in tables if t in trees}


def foreign_partitions_refusal(ctx: ToolContext, table: str) -> str | None:
    """Why no ANALYZE is sent to this partitioned table (None: it may be): a partition of
    it, at any depth, is a foreign table, which its ANALYZE samples through the foreign
    data wrapper, on another server the plan does not name, failing the step when that
    server fails. Its local partitions keep their own steps."""
    tree = schema_partitions(ctx).get(table)
    foreign = () if tree is None else tree.foreign
    if not foreign:
        return None
    return (
        f"ANALYZE of {table} not sent: its partition(s) {', '.join(foreign)} are foreign "
        "tables, which its ANALYZE would read through their foreign servers"
    )


# The invalid copy an interrupted REINDEX CONCURRENTLY leaves (rebuild drops them).
REINDEX_LEFTOVER = re.compile(r"_cc(new|old)[0-9]*$")


def invalid_index(name: str, ready: bool) -> str:
    """What is said of an invalid index (pg_index.indisvalid false): what it is, and
    that it is no sign of damage. indisready: whether writes maintain it."""
    if REINDEX_LEFTOVER.search(name):
        return (
            f"index {name} is an invalid leftover of an interrupted REINDEX CONCURRENTLY "
            "(full maintenance drops it)"
        )
    upkeep = "writes still maintain it" if ready else "writes do not maintain it"
    return (
        f"index {name} is invalid, as a CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY "
        f"that failed leaves one: it is not used by queries, and {upkeep}; it is no sign "
        "of corruption; once what made it fail is put right (a unique index: its duplicate "
        "values), REINDEX INDEX CONCURRENTLY makes it valid, or DROP INDEX CONCURRENTLY "
        "removes it"
    )


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
