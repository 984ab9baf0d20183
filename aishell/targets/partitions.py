"""The partition trees of a PostgreSQL schema, read in one query: each partitioned table
with every table under it at any depth. Planning expands a partitioned table into its
partitions from it, the maintenance handlers find a parent's leaves (and those they do
not maintain) from it, and the health report sums a parent's figures over it: one walk
of pg_inherits, so that they cannot disagree on which tables hold a parent's rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from aishell.sqltext import text

# Each partitioned table of the current schema (those named, or every one), with every
# relation under it at any depth, whatever its kind or schema: a table (r) holds rows, a
# partitioned table (p) is a level between, a foreign table (f) holds rows elsewhere.
# `here`: in the schema of the partitioned table it is under; `direct`: one of its own
# partitions, not a partition's. A partitioned table with none: one row of nulls.
# One query however many there are.
PARTITION_TREE = """
WITH RECURSIVE roots AS (
  SELECT p.oid, p.relname, p.relnamespace FROM pg_catalog.pg_class p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
  WHERE p.relkind = 'p' AND n.nspname = pg_catalog.current_schema()
    AND (CAST(:names AS text[]) IS NULL OR p.relname = ANY(CAST(:names AS text[])))
), tree AS (
  SELECT x.oid AS root, i.inhrelid AS relid, 1 AS depth FROM roots x
  JOIN pg_catalog.pg_inherits i ON i.inhparent = x.oid
  UNION ALL
  SELECT t.root, i.inhrelid, t.depth + 1 FROM tree t
  JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid
)
SELECT x.relname AS parent, x.oid::bigint AS parent_oid, c.relname AS name,
       c.oid::bigint AS oid, c.relkind::pg_catalog.text AS kind,
       c.relnamespace = x.relnamespace AS here, t.depth = 1 AS direct
FROM roots x
LEFT JOIN tree t ON t.root = x.oid
LEFT JOIN pg_catalog.pg_class c ON c.oid = t.relid
ORDER BY x.relname, c.relname
"""


@dataclass(frozen=True)
class Member:
    """A relation under a partitioned table: its name, oid and relkind; `here`, in the
    partitioned table's schema; `direct`, one of its own partitions."""

    name: str
    oid: int
    kind: str
    here: bool
    direct: bool


@dataclass(frozen=True)
class PartitionTree:
    """A partitioned table (its oid) and every relation under it, at every depth."""

    oid: int = 0
    under: tuple[Member, ...] = ()

    @property
    def leaves(self) -> tuple[str, ...]:
        """The partitions of its schema that hold its rows: those the target maintains."""
        return tuple(m.name for m in self.under if m.kind == "r" and m.here)

    @property
    def leaf_oids(self) -> dict[str, int]:
        return {m.name: m.oid for m in self.under if m.kind == "r" and m.here}

    @property
    def partitioned(self) -> tuple[str, ...]:
        """The partitioned tables of its schema between it and its leaves."""
        return tuple(m.name for m in self.under if m.kind == "p" and m.here)

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.partitioned, *self.leaves)

    @property
    def foreign(self) -> tuple[str, ...]:
        """The foreign tables under it, at any depth: its ANALYZE reads them through their
        foreign servers."""
        return tuple(m.name for m in self.under if m.kind == "f")

    @property
    def elsewhere(self) -> int:
        """How many leaves are not among `leaves`: foreign, or of another schema."""
        return sum(1 for m in self.under if m.kind != "p" and not (m.kind == "r" and m.here))

    @property
    def partitions(self) -> tuple[Member, ...]:
        """Its own partitions, of any kind and schema."""
        return tuple(m for m in self.under if m.direct)

    @property
    def storing(self) -> tuple[Member, ...]:
        """The tables holding its rows here, of any schema (a foreign table's are not)."""
        return tuple(m for m in self.under if m.kind == "r")


def partition_trees(conn: Connection, names: Sequence[str] | None) -> dict[str, PartitionTree]:
    """The partitioned tables among `names` (None: all) with their trees, in one query
    (none named: no query); {} on an engine whose partitions are not tables of their own."""
    if conn.dialect.name != "postgresql" or (names is not None and not names):
        return {}
    params = {"names": None if names is None else list(names)}
    found: dict[str, tuple[int, list[Member]]] = {}
    for r in conn.execute(text(PARTITION_TREE), params).mappings():
        _, under = found.setdefault(str(r["parent"]), (int(r["parent_oid"]), []))
        if r["oid"] is not None:
            member = Member(str(r["name"]), int(r["oid"]), str(r["kind"]), r["here"], r["direct"])
            under.append(member)
    return {p: PartitionTree(oid, tuple(under)) for p, (oid, under) in found.items()}
