"""What the server's catalog says of a partitioned table, its partitions and their
archives: every name the tools quote is first found here, in the target's own schema
(the one aishell's catalog reads) or in the archive schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell.agents.api import StepFailed, TargetError

# The partition keys whose range bounds are dates or times: the only ones a retention
# in days means anything for.
TIME_KEYS = ("date", "timestamp without time zone", "timestamp with time zone")

# The upper bound of a one-column range partition, as pg_get_expr prints it:
# FOR VALUES FROM ('2024-01-01') TO ('2024-02-01'). MAXVALUE and DEFAULT do not match.
_UPPER = r" TO \('([^']*)'\)$"

PARENT_SQL = """
SELECT c.oid, c.relkind::text AS kind, p.partstrat::text AS strategy, p.partnatts AS keys,
       p.partdefid <> 0 AS has_default,
       (SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum = p.partattrs[0]) AS key_type
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = c.oid
WHERE n.nspname = pg_catalog.current_schema() AND c.relname = :name
"""

PARTITIONS_SQL = """
SELECT c.relname AS name, c.relkind::text AS kind, i.inhdetachpending AS detach_pending,
       n.nspname = pg_catalog.current_schema() AS in_schema,
       pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound,
       CAST(pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                 CAST(:upper AS text)) AS timestamptz) AS ends
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = :parent
ORDER BY ends NULLS LAST, c.relname
"""

_CUTOFF = "SELECT pg_catalog.now() - CAST(:days AS integer) * INTERVAL '1 day' AS cutoff"
_NOW = "SELECT pg_catalog.now() AS cutoff"

_TABLE = """
SELECT c.oid, c.relkind::text AS kind, c.relispartition AS is_partition
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = coalesce(CAST(:schema AS text), pg_catalog.current_schema())
  AND c.relname = :name
"""

_SCHEMA = """
SELECT pg_catalog.current_schema() AS current,
       EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :schema) AS found
"""

# A table's columns, in order, with their types: a detached partition has its parent's.
_COLUMNS = """
SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class Parent:
    oid: int
    name: str
    has_default: bool


@dataclass(frozen=True)
class Partition:
    name: str
    kind: str
    detach_pending: bool
    in_schema: bool
    bound: str
    ends: datetime | None


@dataclass(frozen=True)
class Table:
    oid: int
    kind: str
    is_partition: bool


def parent(conn: Connection, name: str) -> Parent:
    """The partitioned table `name` of the target's schema, partitioned by range on one
    date or time column; any other is a TargetError saying what it is."""
    row = conn.execute(text(PARENT_SQL), {"name": name}).mappings().first()
    if row is None:
        raise TargetError(f"Table '{name}' is not in the target's schema")
    if row["kind"] != "p":
        raise TargetError(f"Table '{name}' is not partitioned")
    if row["strategy"] != "r" or row["keys"] != 1 or row["key_type"] not in TIME_KEYS:
        raise TargetError(
            f"Table '{name}' is not partitioned by range on one date or timestamp column; "
            "partition_archive archives only time ranges"
        )
    return Parent(int(row["oid"]), name, bool(row["has_default"]))


def partitions(conn: Connection, of: Parent) -> list[Partition]:
    """The partitions attached to `of` (detach-pending ones too), oldest end first."""
    rows = conn.execute(text(PARTITIONS_SQL), {"parent": of.oid, "upper": _UPPER}).mappings()
    return [Partition(**row) for row in rows]


def cutoff(conn: Connection, older_than_days: int | None) -> datetime:
    """The server's clock less the retention (now, without one)."""
    if older_than_days is None:
        found: datetime = conn.execute(text(_NOW)).scalar_one()
    else:
        found = conn.execute(text(_CUTOFF), {"days": older_than_days}).scalar_one()
    return found


def table(conn: Connection, name: str, schema: str | None = None) -> Table | None:
    """The table `name` in `schema` (the target's schema when None), or None."""
    row = conn.execute(text(_TABLE), {"schema": schema, "name": name}).mappings().first()
    return None if row is None else Table(int(row["oid"]), row["kind"], row["is_partition"])


def archive_schema(conn: Connection, schema: str) -> bool:
    """Whether the archive schema exists; refused when it is the target's own schema or
    the server's (names would clash, or land among the system's)."""
    row = conn.execute(text(_SCHEMA), {"schema": schema}).mappings().one()
    if schema == row["current"] or schema.startswith("pg_") or schema == "information_schema":
        raise TargetError(
            f"Archive schema '{schema}' must be a schema of its own, not the target's "
            f"('{row['current']}') nor the server's"
        )
    return bool(row["found"])


def columns(conn: Connection, oid: int) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(text(_COLUMNS), {"oid": oid})]


def detached_from(conn: Connection, name: str, of: Parent) -> Table:
    """The table `name`, detached from `of`: a plain table of the target's schema with
    the parent's columns. Anything else (still attached, another table) is refused, so
    that no table the job did not detach is archived or dropped."""
    found = table(conn, name)
    if found is None:
        raise StepFailed(f"Table '{name}' is not in the target's schema")
    if found.is_partition:
        raise StepFailed(f"Table '{name}' is still a partition; detach it first")
    if found.kind != "r" or columns(conn, found.oid) != columns(conn, of.oid):
        raise StepFailed(
            f"Table '{name}' does not have the columns of '{of.name}': not one of its partitions"
        )
    return found


def count_rows(conn: Connection, quoted: str) -> int:
    """The rows of a table, by its quoted (and found) name."""
    found: Any = conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one()
    return int(found)
