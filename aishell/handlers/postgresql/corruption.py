"""check_table_corruption and repair_corrupted_tables on PostgreSQL.

Corruption checks use amcheck when it is installed and the role may run it; otherwise a
table is reported not checked, with the reason (aishell never installs the extension:
CREATE EXTENSION amcheck needs a superuser and changes the database). A repair is
REINDEX TABLE CONCURRENTLY, checked again after.

The check is a read, and a read runs no user code unseen: bt_index_check's
heapallindexed evaluates an index's expressions and partial-index predicate for every
row, so an index whose code calls a function the site does not trust (guard/usercode.py)
gets the structure check alone, which evaluates neither, and its table is reported not
checked, naming the function. A read-only session would not stop what that function does
besides writing rows (take an advisory lock, reset statistics).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.guard.calls import vouched_for
from aishell.guard.usercode import index_code, tables_with_index_code
from aishell.handlers import Handler, cached, each_table, step_tables
from aishell.handlers.held import rollback
from aishell.handlers.integrity import (
    checked_or_skipped,
    corruption_summary,
    repair_each,
    repairing,
)
from aishell.handlers.postgresql.catalog import (
    AMCHECK,
    AMCHECK_AVAILABLE,
    INDEXES,
    PARTITIONED,
    TABLE_OIDS,
    Amcheck,
    Partitioned,
    amcheck,
    invalid_index,
    oids_and_partitioned,
    run_partitioned,
)
from aishell.handlers.postgresql.privileges import require_maintain
from aishell.risk import RiskLevel
from aishell.sqltext import text
from aishell.targets.lockholders import is_lock_timeout, lock_holders
from aishell.targets.servermessage import server_message
from aishell.tool.context import ToolContext

# The extension's schema is quoted in by the dialect; it comes from pg_extension.
_BT_CHECK = "SELECT {schema}.bt_index_check(CAST(:oid AS oid)::regclass, true)"
# Without heapallindexed: the B-tree's own order and links, no row of the table read.
_BT_STRUCTURE = "SELECT {schema}.bt_index_check(CAST(:oid AS oid)::regclass, false)"
_HEAP_CHECK = (
    "SELECT blkno, offnum, msg FROM {schema}.verify_heapam(CAST(:oid AS oid)::regclass) LIMIT 20"
)
_FULL_READ = "SELECT pg_catalog.count(*) FROM {table}"


def _read_check(
    conn: Connection, sql: str, params: Mapping[str, Any], table: str
) -> tuple[list[Any], str | None, str | None]:
    """Run one check of `table`: (rows, damage found, why it could not run; a lock it
    waited for in vain names the sessions holding the table)."""
    try:
        return list(conn.execute(text(sql), params)), None, None
    except DBAPIError as exc:
        state = str(getattr(exc.orig, "sqlstate", "") or "")
        message = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        if state.startswith("XX"):  # data_corrupted, index_corrupted, internal_error
            return [], message, None
        if is_lock_timeout(exc):
            rollback(conn)  # the failed read's transaction, before the look
            return [], None, f"{message}{_HELD_BY}{lock_holders(conn, [table])}"
        if state == "42501":
            return [], None, message
        raise


def _not_checked(table: str, reason: str, why: str | None) -> dict[str, Any]:
    """A table the check could not check; held by another session (its lock not
    granted within the lock wait: `why` names the holder) is cause locked."""
    result = {"table": table, "status": "not checked", "reason": reason}
    if why is not None and _HELD_BY in why:
        result["cause"] = "locked"
    return result


# What _read_check says of a table it waited for in vain, before naming the holders.
_HELD_BY = "; the lock is held by "


def _indexes(conn: Connection, oids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The indexes of these tables (by oid), in one query."""
    found: dict[int, list[dict[str, Any]]] = {oid: [] for oid in oids}
    for row in conn.execute(text(INDEXES), {"oids": oids}).mappings():
        found[int(row["table_oid"])].append(dict(row))
    return found


def _check_tables(
    conn: Connection,
    ctx: ToolContext,
    tables: list[str],
    tool: Amcheck,
    code_approved: bool = False,
) -> list[dict[str, Any]]:
    """Each table checked; the tables' oids and indexes are read in one query each. A
    table no longer there was dropped since the plan: it is gone, not unchecked. A
    partitioned table has no storage of its own: its partitions are checked as tables,
    those not named among `tables` after them. `code_approved`: the step was approved
    with the indexes' code named (a repair's REINDEX runs it), so the check after it may
    run that code too."""
    oids, parents = oids_and_partitioned(ctx, tables)
    leaves = _unnamed_partitions(tables, parents)
    oids.update(leaves)
    stored = [oid for t, oid in oids.items() if t not in parents]
    indexes = _indexes(conn, stored) if tool.reason is None else {}
    results = []
    for t in [*tables, *leaves]:
        if t in parents:
            results.append(_partitioned(t, parents[t]))
        elif t not in oids:
            results.append({"table": t, "status": "gone"})
        else:
            own = indexes.get(oids[t], [])
            results.append(
                _held_when_looked(conn, ctx, t)
                or _check_table(conn, ctx, t, oids[t], own, tool, code_approved)
            )
    return results


def _unnamed_partitions(tables: list[str], parents: Mapping[str, Partitioned]) -> dict[str, int]:
    """The partitions of the partitioned tables named that are not named themselves."""
    named = set(tables)
    return {
        leaf: oid
        for parent in parents.values()
        for leaf, oid in parent.leaves.items()
        if leaf not in named
    }


def _partitioned(table: str, parent: Partitioned) -> dict[str, Any]:
    """What the check says of a partitioned table: that it is one, and where its rows
    are checked; nothing that reads a relation's pages is given it."""
    return {
        "table": table,
        "status": "partitioned",
        "partitions": list(parent.leaves),
        "notes": [parent.described("checked")],
    }


def _held_when_looked(conn: Connection, ctx: ToolContext, table: str) -> dict[str, Any] | None:
    """A table a preview (a dry run) already found held is not waited on again: not
    checked, saying so and who holds it (None: check it)."""
    seen = ctx.table_readings.held(table)
    if not isinstance(seen, DBAPIError):
        return None
    why = f"held when the preview looked ({server_message(seen)}){_HELD_BY}"
    why += lock_holders(conn, [table])
    return _not_checked(table, f"not waited on again: {why}", why)


def _without_amcheck(conn: Connection, ctx: ToolContext, table: str, reason: str) -> dict[str, Any]:
    """What can be done without amcheck: read every row, so that an unreadable page (or,
    with data checksums on, a bad checksum) shows. It is not a check of the indexes or
    of the rows' consistency, so the table stays "not checked"."""
    _, damage, why = _read_check(conn, _FULL_READ.replace("{table}", ctx.quote(table)), {}, table)
    if damage:
        return {"table": table, "status": "corrupted", "issues": [f"full read: {damage}"]}
    read = f"could not read it either: {why}" if why else "a full read found no unreadable page"
    return _not_checked(table, f"{reason}; {read}", why)


@dataclass
class _Findings:
    """One table's check so far: damage found, notes, what was left unchecked and why
    (the index's code), and why the check could not go on (a lock, a privilege)."""

    issues: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    why: str | None = None


def _check_table(
    conn: Connection,
    ctx: ToolContext,
    table: str,
    oid: int,
    indexes: list[dict[str, Any]],
    tool: Amcheck,
    code_approved: bool = False,
) -> dict[str, Any]:
    if tool.reason is not None:
        return _without_amcheck(conn, ctx, table, tool.reason)
    schema = ctx.quote(str(tool.schema))
    found = _Findings()
    if tool.heap:
        rows, damage, why = _read_check(
            conn, _HEAP_CHECK.replace("{schema}", schema), {"oid": oid}, table
        )
        if why:
            return _not_checked(table, f"verify_heapam: {why}", why)
        found.issues += [f"verify_heapam: {damage}"] if damage else []
        found.issues += [f"block {r.blkno}, item {r.offnum}: {r.msg}" for r in rows]
    else:
        found.notes.append("the table's rows were not checked (verify_heapam needs amcheck 1.3+)")
    for index in indexes:
        _check_index(conn, ctx, table, index, schema, found, code_approved)
        if found.why:
            return _not_checked(table, f"bt_index_check: {found.why}", found.why)
    result: dict[str, Any] = {"table": table, "status": "ok", "issues": found.issues}
    if found.issues:
        result["status"] = "corrupted"
    elif found.unchecked:
        result = _not_checked(table, "; ".join(found.unchecked), None)
    if found.notes:
        result["notes"] = found.notes
    return result


def _check_index(
    conn: Connection,
    ctx: ToolContext,
    table: str,
    index: dict[str, Any],
    schema: str,
    found: _Findings,
    code_approved: bool,
) -> None:
    """One index's check, into `found`: with heapallindexed, or, where that would run
    user code not trusted, its structure alone (and the index counts as unchecked)."""
    name = index["name"]
    if index["method"] != "btree":
        found.notes.append(f"index {name} ({index['method']}): amcheck checks B-trees only")
        return
    if not index["valid"]:
        # Not used by queries, so not checked (amcheck refuses it): what it is is said.
        found.notes.append(invalid_index(name, bool(index["ready"])))
        return
    support = [] if code_approved else _untrusted_support(index, ctx.trusted_functions)
    if support:
        # Every check of a B-tree's order calls its comparison function: none is run.
        found.unchecked.append(
            f"index {name} orders its entries with {', '.join(support)}, a user-defined "
            "function that may write, which any check of the index runs: it was not checked "
            "(list a function that only reads in the target's trusted_functions to check it)"
        )
        return
    code = (
        [] if code_approved else index_code(conn, table, name, ctx.trusted_functions, ctx.run_cache)
    )
    sql = _BT_STRUCTURE if code else _BT_CHECK
    _, damage, found.why = _read_check(
        conn, sql.replace("{schema}", schema), {"oid": index["oid"]}, table
    )
    if damage:
        found.issues.append(f"index {name}: {damage}")
    elif code:
        found.unchecked.append(
            f"{'; '.join(code)}: only the index's structure was checked, not its entries "
            "against the table's rows (list a function that only reads in the target's "
            "trusted_functions to check it in full)"
        )


def _untrusted_support(index: Mapping[str, Any], trusted: tuple[str, ...]) -> list[str]:
    """The index's user-defined support functions that trusted_functions does not name."""
    found = []
    for qualified in index.get("support") or []:
        schema, name = qualified.split(".", 1)
        if not vouched_for(schema, name, trusted, False):
            found.append(f"{qualified}()")
    return found


def corruption_check(conn: Connection, ctx: ToolContext, tables: list[str]) -> dict[str, Any]:
    """amcheck over each table and its B-tree indexes; per table, checked or why not."""
    tool = cached(ctx, "amcheck", lambda: amcheck(conn))
    results = _check_tables(conn, ctx, tables, tool)
    if tool.reason is None:
        method = "amcheck" if tool.heap else "amcheck (indexes only)"
    else:
        method = "full read of each table"
    notes = [f"{r['table']}: {n}" for r in results for n in r.get("notes") or []]
    return corruption_summary(method, results, notes=notes)


def check_statements(conn: Connection, ctx: ToolContext, tables: list[str]) -> list[str]:
    """What the check sends per table, as a preview shows it: each statement that reads a
    table is named, never summed up (amcheck's, or without it the full read). A
    partitioned table is said to be one, and its partitions not named are checked after."""
    tool = cached(ctx, "amcheck", lambda: amcheck(conn))
    parents = run_partitioned(ctx, tables)
    stored = [t for t in [*tables, *_unnamed_partitions(tables, parents)] if t not in parents]
    said = [f"-- {ctx.quote(t)}: {p.described('checked')}" for t, p in parents.items()]
    if tool.reason is not None:
        return [*said, *(_FULL_READ.replace("{table}", ctx.quote(t)) for t in stored)]
    schema = ctx.quote(str(tool.schema))
    heap = _HEAP_CHECK.replace("{schema}", schema)
    index = _BT_CHECK.replace("{schema}", schema)
    structure = _BT_STRUCTURE.replace("{schema}", schema)
    with_code = tables_with_index_code(conn, stored, ctx.trusted_functions, ctx.run_cache)
    statements = said
    for t in stored:
        statements += [f"{heap} -- {ctx.quote(t)}"] if tool.heap else []
        statements.append(f"{index} -- each B-tree index of {ctx.quote(t)}")
        if t in with_code:
            statements.append(
                f"{structure} -- instead, each index of {ctx.quote(t)} whose code is not "
                "trusted (heapallindexed would run it)"
            )
    return statements


def _check_sql(params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
    tables = step_tables(params, ctx)
    statements = check_statements(ctx.connection, ctx, tables)
    return [TABLE_OIDS, PARTITIONED, INDEXES, AMCHECK, *statements]


def _check(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    tables = step_tables(params, ctx)
    return checked_or_skipped(corruption_check(conn, ctx, tables))


check_table_corruption = Handler(
    sql_templates=(
        TABLE_OIDS,
        PARTITIONED,
        INDEXES,
        AMCHECK,
        AMCHECK_AVAILABLE,
        _HEAP_CHECK,
        _BT_CHECK,
        _BT_STRUCTURE,
        _FULL_READ,
    ),
    run_fn=_check,
    render_fn=_check_sql,
)


def _repair(tables: list[str], params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    for table in tables:
        require_maintain(
            conn, table, "REINDEX TABLE CONCURRENTLY", reindex=True, run_cache=ctx.run_cache
        )
    tool = amcheck(conn)

    def repair(table: str) -> Mapping[str, Any]:
        conn.execute(text(f"REINDEX TABLE CONCURRENTLY {ctx.quote(table)}"))
        # Its REINDEX, approved with the indexes' code named, ran that code already.
        after = _as_one(_check_tables(conn, ctx, [table], tool, code_approved=True))
        if after["status"] == "corrupted":
            after = {**after, "issues": [_still_damaged(after["issues"])]}
        return after

    repaired = repair_each(tables, repair, "REINDEX did not repair")
    return {
        "repaired_tables": repaired,
        "backup_path": None,
        "note": "REINDEX rebuilds indexes from the table's rows and changes no data, "
        "so no copy was taken",
    }


# An issue found in the table's rows rather than in an index (verify_heapam's, or
# without amcheck the full read's), a partition's named first.
_ROWS_DAMAGED = re.compile(r"(^|: )(verify_heapam|block [0-9]+, item|full read)")


def _still_damaged(issues: list[str]) -> str:
    """The first damage a check still finds after REINDEX, and what it means: only damage
    in the table's rows, which REINDEX rebuilds the indexes from, calls for a backup."""
    rows = [i for i in issues if _ROWS_DAMAGED.search(i)]
    if rows:
        return f"{rows[0]} (the table's own data is damaged; restore it from a backup)"
    return f"{issues[0]} (an index is still damaged after REINDEX)"


def _as_one(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The check of one table named: a partitioned table's is its partitions' (REINDEX
    TABLE of it rebuilds theirs), the worst of them first."""
    first, partitions = results[0], results[1:]
    if first["status"] != "partitioned":
        return first
    issues = [f"{r['table']}: {i}" for r in partitions for i in r.get("issues") or []]
    unchecked = [f"{r['table']}: {r['reason']}" for r in partitions if r.get("reason")]
    if issues:
        return {**first, "status": "corrupted", "issues": issues}
    if unchecked:
        return {**first, "status": "not checked", "reason": "; ".join(unchecked)}
    return {**first, "status": "ok"}


repair_corrupted_tables = Handler(
    sql_templates=("REINDEX TABLE CONCURRENTLY {table}",),
    run_fn=repairing(_repair),
    render_fn=each_table("REINDEX TABLE CONCURRENTLY {table}"),
    risk=RiskLevel.HIGH,
    effect="rebuilds damaged indexes",
)
