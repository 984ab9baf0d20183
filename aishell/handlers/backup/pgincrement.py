"""What a PostgreSQL increment must hold for its chain to restore the database as it was
when it was taken, not only the rows of the tables that changed.

An increment's archive holds the changed tables, and with them every relation whose
drop their drop would need (views and materialized views over them, tables whose
foreign keys point at them, at any depth): pg_restore --clean drops and recreates them
all. Sequence values change without any row changing: each increment records every
sequence's value in its snapshot, and loading it sets them (apply.py). What it cannot
carry piecemeal makes the run take the whole database instead, as a full backup that
says why: a schema that differs from the parent's (compared by the sha256 of
`pg_dump --schema-only` in the dump's snapshot), large objects (their contents have no
cheap checksum), an object other than a relation that depends on a changed table, or a
parent that recorded no schema.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from aishell.handlers.backup.processes import pg_args, run_tool, server_env
from aishell.sqltext import quote_identifier, quote_plain_identifier, text
from aishell.tool.context import ToolContext

# The manifest's record of the schema, large objects and sequence values.
SCHEMA_SHA256 = "schema_sha256"
LARGE_OBJECTS = "large_objects"
SEQUENCES = "sequences"
# Why an increment was taken as a whole backup (the manifest's word, and the event's).
TAKEN_WHOLE = "taken_whole"


def schema_lines(sql: str) -> list[str]:
    """A schema dump's lines that describe the schema: without comments, blank lines and
    the random \\restrict / \\unrestrict tokens current pg_dump writes."""
    return [
        line
        for line in sql.splitlines()
        if line.strip()
        and not line.startswith("--")
        and not line.startswith(("\\restrict ", "\\unrestrict "))
    ]


def schema_sha256(snapshot: str, ctx: ToolContext, lock_wait: float) -> str:
    """The sha256 of the database's schema as pg_dump --schema-only writes it in the
    snapshot (waiting at most lock_wait for a table lock)."""
    url = ctx.connection.engine.url
    wait = f"--lock-wait-timeout={math.ceil(lock_wait * 1000)}"
    argv = ["pg_dump", "--schema-only", "--snapshot", snapshot, wait, *pg_args(url)]
    done = run_tool([*argv, str(url.database)], server_env(url), ctx)
    lines = schema_lines(done.stdout.decode(errors="replace"))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


_LARGE_OBJECTS = "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata"

_SEQUENCES = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname <> 'information_schema'
  AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""
# Sequences read by one statement.
SEQUENCE_BATCH = 100


def sequence_values(snap: Connection) -> list[list[Any]]:
    """Each sequence's schema, name, last value and whether it was called (a sequence is
    read as it is now, not as of the snapshot, as pg_dump reads it)."""
    dialect = snap.dialect
    names = [(str(schema), str(name)) for schema, name in snap.execute(text(_SEQUENCES))]
    values: list[list[Any]] = []
    for start in range(0, len(names), SEQUENCE_BATCH):
        batch = names[start : start + SEQUENCE_BATCH]
        union = " UNION ALL ".join(
            f"SELECT {i}, last_value, is_called FROM "
            f"{quote_identifier(dialect, schema)}.{quote_identifier(dialect, name)}"
            for i, (schema, name) in enumerate(batch)
        )
        for i, last, called in snap.execute(text(union)):
            values.append([*batch[i], int(last), bool(called)])
    return values


# The objects that depend on the relations named (on them, their row types, indexes and
# owned sequences), each with the relation it belongs to (NULL: not a relation's).
_DEPENDENTS = """
SELECT d.deptype, rel.oid, rel.relkind, n.nspname, rel.relname,
       pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_catalog.pg_depend d
LEFT JOIN pg_catalog.pg_rewrite r
  ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid
LEFT JOIN pg_catalog.pg_constraint k
  ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = d.objid
LEFT JOIN pg_catalog.pg_trigger g
  ON d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND g.oid = d.objid
LEFT JOIN pg_catalog.pg_policy p
  ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND p.oid = d.objid
LEFT JOIN pg_catalog.pg_attrdef a
  ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND a.oid = d.objid
LEFT JOIN pg_catalog.pg_class rel ON rel.oid = CASE d.classid
    WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN d.objid
    WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN r.ev_class
    WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN k.conrelid
    WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN g.tgrelid
    WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN p.polrelid
    WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN a.adrelid END
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = rel.relnamespace
WHERE d.deptype IN ('n', 'a') AND (
    (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.refobjid = ANY(CAST(:oids AS pg_catalog.oid[])))
    OR (d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.refobjid IN (
        SELECT reltype FROM pg_catalog.pg_class WHERE oid = ANY(CAST(:oids AS pg_catalog.oid[])))))
"""
_CHANGED_OIDS = """
SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = pg_catalog.current_schema() AND c.relname = ANY(:names)
"""
# Relations an increment's archive names, and those dropped along with a table (its
# indexes, its owned sequences) whose own dependents count too.
_NAMED = frozenset("rpvmf")
_ALONG = frozenset("iIS")


@dataclass
class Closure:
    """The relations an increment's archive holds (quoted, qualified), and why it cannot
    be one (an object other than a relation depends on a changed table)."""

    relations: dict[int, str] = field(default_factory=dict)
    blocked: str | None = None


def closure(snap: Connection, changed: list[str]) -> Closure:
    """The changed tables and every relation that depends on them, at any depth."""
    found = Closure()
    seen: set[int] = set()
    for oid, schema, name in snap.execute(text(_CHANGED_OIDS), {"names": changed}):
        found.relations[int(oid)] = (
            f"{quote_plain_identifier(schema)}.{quote_plain_identifier(name)}"
        )
    frontier = set(found.relations)
    while frontier:
        seen |= frontier
        rows = snap.execute(text(_DEPENDENTS), {"oids": sorted(frontier)}).all()
        frontier = set()
        for deptype, oid, kind, schema, name, described in rows:
            if oid is None or (kind not in _NAMED and kind not in _ALONG):
                if deptype == "n":  # it would stop the drop of a changed table
                    found.blocked = f"{described} depends on a changed table"
                    return found
                continue
            if int(oid) in seen:
                continue
            frontier.add(int(oid))
            if kind in _NAMED:
                quoted = f"{quote_plain_identifier(schema)}.{quote_plain_identifier(name)}"
                found.relations[int(oid)] = quoted
    return found


def taken_whole_because(
    parent: dict[str, Any], digest: str, large_objects: int, blocked: str | None
) -> str | None:
    """Why the increment is taken as a whole backup; None when an increment holds it all."""
    if not parent.get(SCHEMA_SHA256):
        return f"its parent {parent['path']} recorded no schema to compare"
    if parent[SCHEMA_SHA256] != digest:
        return "the schema changed since its parent (routines, indexes, views, types, ...)"
    if large_objects or parent.get(LARGE_OBJECTS):
        return "the database holds large objects, which an increment cannot compare"
    return blocked


def recorded(snap: Connection, snapshot: str, ctx: ToolContext, lock_wait: float) -> dict[str, Any]:
    """What every manifest records of the database's schema and large objects in the
    snapshot, for the increments taken after it to compare."""
    return {
        SCHEMA_SHA256: schema_sha256(snapshot, ctx, lock_wait),
        LARGE_OBJECTS: int(snap.execute(text(_LARGE_OBJECTS)).scalar_one()),
    }


@dataclass
class Held:
    """What a PostgreSQL backup's archive holds: for an increment, the relations it names
    (quoted, qualified) and the tables among them; why it is taken whole instead, if it
    is; and what its manifest records of the schema and the sequences."""

    notes: dict[str, Any]
    relations: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    whole: str | None = None


def holds(
    snap: Connection,
    snapshot: str,
    tops: dict[str, int],
    parent: dict[str, Any] | None,
    changed: list[str],
    ctx: ToolContext,
    lock_wait: float,
) -> Held:
    """What the archive must hold for its chain to restore the database as it is in the
    snapshot. `tops`: each user table's oid. An increment that cannot hold it is taken
    whole, as a full backup that says why: its manifest has no parent. A full backup's
    notes are read after its dump (recorded): its pg_dump is the first to wait for a
    table's lock, watched, and the one that says who holds it."""
    if parent is None:
        return Held({})
    notes = recorded(snap, snapshot, ctx, lock_wait)
    objects = notes[LARGE_OBJECTS]
    reach = closure(snap, changed) if changed else Closure()
    why = taken_whole_because(parent, notes[SCHEMA_SHA256], objects, reach.blocked)
    if why is not None:
        said = f"taken as a full backup, not an increment of {Path(parent['path']).name}: {why}"
        ctx.record_event("backup_taken_whole", {"why": said})
        whole = {"kind": "full", "parent": None, "changed": None, "dropped": None, "method": None}
        return Held(notes | whole | {TAKEN_WHOLE: said}, whole=said)
    notes[SEQUENCES] = sequence_values(snap)
    relations = list(reach.relations.values())
    tables = sorted(t for t, oid in tops.items() if oid in reach.relations)
    return Held(notes, relations, tables)
