"""The maintenance agent: quick, standard, full and emergency plans."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.base import AgentSpec, CatalogFact, PlannedTool, PlanningContext, given_options
from aishell.agents.jobs import named_tables
from aishell.agents.limits import DraftLimits
from aishell.config.models import AgentConfig
from aishell.config.options import (
    MAINTENANCE_OPTIONS,
    MAINTENANCE_TYPE,
    REBUILD_INDEXES,
    UPDATE_STATS,
)
from aishell.dialects import family
from aishell.errors import UsageError
from aishell.plan.model import Step, step_id
from aishell.targets.partitions import PartitionTree
from aishell.units import exact

SPEC = AgentSpec(
    name="maintenance",
    description="Quick, standard, full and emergency maintenance: statistics, "
    "fragmentation, index rebuilds, compaction, corruption checks and repairs.",
    options=MAINTENANCE_OPTIONS,
    tools=(
        "analyze_database_health",
        "analyze_table_fragmentation",
        "update_table_statistics",
        "rebuild_fragmented_indexes",
        "optimize_table",
        "check_table_corruption",
        "repair_corrupted_tables",
        "generate_maintenance_report",
    ),
    privileges={
        "postgresql": ("ownership of the tables it maintains, or of the database",),
        "mysql": ("SELECT, INSERT, ALTER, INDEX on the tables it maintains",),
        "sqlite": ("write access to the database file and its folder",),
    },
)


class MaintenanceAgent:
    name = SPEC.name
    spec = SPEC

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        # A value given is checked as given ("no" is not a flag, None is no type but
        # the default's); only a key left out, or None, takes the command line's default.
        # The tables are a list, which no option kind is: they are checked on their own.
        given = given_options(SPEC, {**job, "tables": None})
        kind = given.get("type", MAINTENANCE_TYPE.default)
        update_stats = given.get("update_stats", UPDATE_STATS.default)
        if kind == "quick" and not update_stats:
            # Quick maintenance is its statistics steps: without them it has no work.
            raise UsageError(
                "Quick maintenance only refreshes statistics, so --no-update-stats leaves "
                "it nothing to do; use --type standard or full, or drop --no-update-stats"
            )
        return {
            "type": kind,
            "tables": named_tables(job.get("tables")),
            "rebuild_indexes": given.get("rebuild_indexes", REBUILD_INDEXES.default),
            "update_stats": update_stats,
        }

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        """Nothing past the tables it names, which planning finds or refuses."""

    def catalog_needs(self, job: dict[str, Any]) -> frozenset[CatalogFact]:
        """Full maintenance takes the most urgent tables first; every type takes first
        the tables the last run could not lock, and a partitioned table with its
        partitions."""
        facts: set[CatalogFact] = {"skipped", "partitions"}
        return frozenset({"urgency", *facts} if job["type"] == "full" else facts)

    def describe_job(self, job: dict[str, Any], ctx: PlanningContext) -> str:
        named = _scope(job, ctx).tables
        scope = f"tables {', '.join(named)}" if job.get("tables") else "every table"
        threshold = f"{exact(ctx.defaults.fragmentation_threshold)}%"
        rebuild = (
            f"rebuild indexes fragmented past {threshold}, "
            if job.get("rebuild_indexes", True)
            else ""
        )
        stats = " and refresh planner statistics" if job.get("update_stats", True) else ""
        work = {
            "quick": "refresh planner statistics",
            "standard": f"measure fragmentation{stats}",
            "full": (
                "check every table for corruption before anything changes, "
                f"measure fragmentation, {rebuild}compact tables fragmented past "
                f"{threshold}{stats}, most urgent tables first"
            ),
            "emergency": "check for corruption and repair corrupted tables after a backup copy",
        }[job["type"]]
        keep_stats = "" if job.get("update_stats", True) else " Do not refresh statistics."
        return (
            f"Run {job['type']} maintenance on {scope}: check the database's health first, "
            f"then {work}, and end with a maintenance report.{keep_stats}"
        )

    def draft_limits(self, job: dict[str, Any], ctx: PlanningContext) -> DraftLimits:
        """What a model's draft of the job must keep to, as plan_steps does: its tables
        (a partitioned one with its partitions), its type's changes, no statistics
        refreshed with --no-update-stats, no index rebuilt with --no-rebuild-indexes, the
        copy before a repair."""
        kind = job["type"]
        changes = {*_CHANGES[kind], *(p.tool for p in ctx.planned if kind in p.types)}
        refused: dict[str, str] = {}
        # The copy the plan makes before each repair: no draft may drop it.
        keep_copy = "a repair copies the database aside first: give create_backup true"
        required = {"repair_corrupted_tables": (("create_backup", True, keep_copy),)}
        if not job.get("rebuild_indexes", True):
            refused[_REBUILD] = "the job says --no-rebuild-indexes: no step may rebuild indexes"
        if not job.get("update_stats", True):
            no_stats = "the job says --no-update-stats: no step may refresh planner statistics"
            refused[_STATISTICS_TOOL] = no_stats
            if family(ctx.dialect) == "mysql":  # ALTER TABLE ... FORCE recalculates them
                refused[_REBUILD] = f"{no_stats}, which a rebuild on MySQL/MariaDB does"
            give = "the job says --no-update-stats: give optimize_table update_stats false"
            required["optimize_table"] = (("update_stats", False, give),)
        tables = frozenset(_scope(job, ctx).tables) if job.get("tables") else None
        only = f"{kind} maintenance changes the database only by {', '.join(sorted(changes))}"
        return DraftLimits(tables, frozenset(changes), only, refused, required)

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]:
        """Health first, then the work of the maintenance type per table, a report last."""
        kind = job["type"]
        if kind == "full" and not job.get("update_stats", True) and family(ctx.dialect) == "mysql":
            # Its index rebuilds and compaction rebuild tables, and every rebuild
            # recalculates the table's statistics: none of its work could be done.
            raise UsageError(
                "On MySQL and MariaDB a table's rebuild (OPTIMIZE TABLE, ALTER TABLE ... FORCE) "
                "recalculates its statistics, so full maintenance cannot leave them as they are; "
                "use --type standard, or drop --no-update-stats"
            )
        scope = _scope(job, ctx)
        work = [_health_check(kind, scope), *_WORK[kind](job, ctx, scope)]
        if not job.get("update_stats", True):
            work = [w for w in work if w.tool != _STATISTICS_TOOL]
        work = _with_planned(work, kind, ctx.planned)
        steps = [
            Step(step_id(i), w.tool, w.params, w.rationale, condition=w.condition)
            for i, w in enumerate(work)
        ]
        return [*steps, _report(kind, scope.tables, work)]


@dataclass(frozen=True)
class _Work:
    """One step of the work, before it is numbered; `table` is what the report names."""

    tool: str
    params: dict[str, Any]
    rationale: str
    table: str | None = None
    condition: str | None = None
    # A step over many tables: the tables it lists.
    tables: tuple[str, ...] = ()


def _with_planned(work: list[_Work], kind: str, planned: tuple[PlannedTool, ...]) -> list[_Work]:
    """After each step of a table, the catalog's tools that say they follow it in this
    type of maintenance (their `planned:`), on that table."""
    wanted = [p for p in planned if kind in p.types]
    if not wanted:
        return work
    placed: list[_Work] = []
    for w in work:
        placed.append(w)
        placed += [
            _Work(p.tool, {"table": t}, p.step_rationale(t), t)
            for t in ([w.table] if w.table is not None else w.tables)
            for p in wanted
            if p.after == w.tool
        ]
    return placed


def _in_order(job: dict[str, Any], ctx: PlanningContext) -> list[str]:
    tables = list(ctx.tables)
    if job["type"] == "full" and not job.get("tables"):
        # The most urgent tables first, so a window that closes early has done them.
        tables.sort(key=lambda t: (-ctx.urgency.get(t, 0.0), t))
    # The tables the last run could not lock go first: a window that closes early has
    # then done them, rather than skipping them night after night.
    first = [t for t in ctx.first if t in tables]
    return [*first, *(t for t in tables if t not in set(first))]


@dataclass(frozen=True)
class _Scope:
    """The tables a plan works on, in order, and what PostgreSQL's partitioning asks of
    it: a partitioned table named is named with its partitions, and comes after them."""

    tables: list[str]
    # Each partition of the plan whose statistics the ANALYZE of a partitioned table of
    # the plan refreshes (PostgreSQL's ANALYZE of a partitioned table analyzes every
    # partition under it too, before 18's ANALYZE ONLY): by that table. None has an
    # ANALYZE of its own, which would analyze it twice.
    covered: Mapping[str, str]
    # The partitioned tables of the plan (not one under another), each a step alone.
    parents: frozenset[str]
    # What the plan says of them.
    notes: tuple[str, ...]
    # Bytes by table for grouping: a partitioned table's are its partitions' (its ANALYZE
    # reads them all).
    sizes: Mapping[str, int]
    # Every table the plan covers, in order, a partitioned table under another of the
    # plan too (no step of its own): what the health analysis reports on.
    covers: list[str]


def _scope(job: dict[str, Any], ctx: PlanningContext) -> _Scope:
    """The job's tables in order, with each partitioned table's partitions at every
    depth (those of its schema) before it; a partitioned table under another one of the
    plan has no step of its own: the top one's ANALYZE analyzes it."""
    tables, trees = _in_order(job, ctx), ctx.partitions
    under = {m for p, tree in trees.items() if p in tables for m in tree.members}
    parents = [t for t in tables if t in trees and t not in under]
    order: dict[str, None] = {}
    for t in tables:
        if t in trees and t in under:
            continue  # partitioned, within a parent of the plan
        if t in parents:
            order.update(dict.fromkeys(trees[t].leaves))
        order.setdefault(t)
    stats = job.get("update_stats", True)
    # Not the partitions of one with a foreign partition, which is sent no ANALYZE.
    covered = {lf: p for p in parents if not trees[p].foreign for lf in trees[p].leaves}
    covered = covered if stats else {}
    sizes = {t: ctx.sizes.get(t) or 0 for t in order}
    for p in parents:
        sizes[p] += sum(sizes.get(leaf, 0) for leaf in trees[p].leaves)
    notes = tuple(_partitions_note(p, trees[p], tables) for p in parents)
    within = [m for p in parents for m in trees[p].partitioned if m not in order]
    return _Scope(list(order), covered, frozenset(parents), notes, sizes, [*order, *within])


def _partitions_note(parent: str, tree: PartitionTree, named: list[str]) -> str:
    added = [leaf for leaf in tree.leaves if leaf not in named]
    said = f"{parent} (partitioned): " + (
        f"its partitions {_names(added)} included" if added else "its partitions are in the plan"
    )
    if tree.partitioned:
        said += f", through {_names(list(tree.partitioned))}, partitioned in turn"
    return said


def _names(tables: list[str], most: int = 8) -> str:
    if len(tables) <= most:
        return ", ".join(tables)
    return f"{', '.join(tables[: most - 1])} ... {tables[-1]} ({len(tables)})"


def maintained_tables(job: dict[str, Any], ctx: PlanningContext) -> list[str]:
    """The tables a maintenance job works on: those it names (or every one), each
    partitioned table with its partitions."""
    return _scope(job, ctx).tables


def _health_check(kind: str, scope: _Scope) -> _Work:
    # Full maintenance checks for corruption in its first step, before a REINDEX could
    # hide a damaged index or a VACUUM touch a damaged page; the report says per table
    # whether it was checked. Emergency maintenance has a check step of its own.
    return _Work(
        "analyze_database_health",
        {"tables": scope.covers, "check_corruption": kind == "full"},
        "Assess the database's health before changing anything"
        + (", and check every table for corruption" if kind == "full" else "")
        + "".join(f"; {note}" for note in scope.notes),
    )


_STATISTICS_TOOL = "update_table_statistics"
_REBUILD = "rebuild_fragmented_indexes"
# The tools by which each type of maintenance changes the database.
_CHANGES = {
    "quick": (_STATISTICS_TOOL,),
    "standard": (_STATISTICS_TOOL,),
    "full": (_REBUILD, "optimize_table", _STATISTICS_TOOL),
    "emergency": ("repair_corrupted_tables",),
}


def _of_group(tool: str, tables: list[str], params: dict[str, Any], doing: str) -> _Work:
    """The step of `tool` over one table, or over a group of small tables (each done in
    turn in the one step: handlers/shared.py); `doing` says what, "of {}" its tables."""
    if len(tables) == 1:
        t = tables[0]
        return _Work(tool, {"table": t, **params}, doing.format(t), t)
    shown = f"{len(tables)} tables, {tables[0]} to {tables[-1]}"
    return _Work(tool, {"tables": tables, **params}, doing.format(shown), tables=tuple(tables))


def _fragmentation(tables: list[str], ctx: PlanningContext) -> _Work:
    return _of_group(
        "analyze_table_fragmentation",
        tables,
        {"fragmentation_threshold": ctx.defaults.fragmentation_threshold},
        "Measure fragmentation of {}",
    )


# Small tables share a step in every type of maintenance: a step per table would cost
# far more than ANALYZE, VACUUM or REINDEX of a small table does. A table this large
# (bytes with its indexes) has steps of its own, and a shared step stops growing at
# either bound, so that each step's time (and its time limit) stays that of a few tables.
STATISTICS_ALONE_BYTES = 64 * 2**20
STATISTICS_BATCH_TABLES = 200
STATISTICS_BATCH_BYTES = 256 * 2**20


def _quick(job: dict[str, Any], ctx: PlanningContext, scope: _Scope) -> Iterator[_Work]:
    """Fresh planner statistics: a step per large table, small tables in batches."""
    for group in _statistics_groups(scope):
        yield from _statistics_of(group, scope)


def _statistics_groups(scope: _Scope) -> Iterator[list[str]]:
    """The tables in order, in the groups whose statistics one step refreshes; a
    partitioned table alone, as its step's rationale says what it does."""
    batch: list[str] = []
    held = 0
    for t in scope.tables:
        size = scope.sizes.get(t, 0)
        if size >= STATISTICS_ALONE_BYTES or t in scope.parents:
            if batch:
                yield batch
                batch, held = [], 0
            yield [t]
            continue
        if batch and (
            len(batch) >= STATISTICS_BATCH_TABLES or held + size > STATISTICS_BATCH_BYTES
        ):
            yield batch
            batch, held = [], 0
        batch.append(t)
        held += size
    if batch:
        yield batch


def _statistics_of(tables: list[str], scope: _Scope) -> Iterator[_Work]:
    """The statistics step of a group, but for its partitions that their partitioned
    table's ANALYZE refreshes later."""
    own = [t for t in tables if t not in scope.covered]
    if len(own) == 1 and own[0] in scope.parents:
        # Named with its partitions, the step sends the ANALYZE of the partitioned table
        # alone and says of each partition that its statistics were refreshed.
        parent = own[0]
        with_it = [*(t for t, p in scope.covered.items() if p == parent), parent]
        said = _parent_analyze(parent, scope)
        if len(with_it) == 1:
            yield _Work(_STATISTICS_TOOL, {"table": parent}, said, parent)
        else:
            yield _Work(_STATISTICS_TOOL, {"tables": with_it}, said, tables=tuple(with_it))
    elif own:
        yield _of_group(_STATISTICS_TOOL, own, {}, "Refresh planner statistics for {}")


def _parent_analyze(parent: str, scope: _Scope) -> str:
    leaves = [t for t, p in scope.covered.items() if p == parent]
    return (
        f"ANALYZE {parent}, after its partitions' steps: the statistics of the table as "
        "a whole, which queries on it are planned from and autovacuum never gathers; it "
        "analyzes every partition under it too (PostgreSQL has no ANALYZE ONLY before "
        "18)" + (f", so {_names(leaves)} have no ANALYZE of their own" if leaves else "")
    )


def _standard(job: dict[str, Any], ctx: PlanningContext, scope: _Scope) -> Iterator[_Work]:
    """Per table or group of small tables: measure fragmentation, then fresh planner
    statistics."""
    for group in _statistics_groups(scope):
        if group[0] not in scope.parents:  # a partitioned table's rows are its partitions'
            yield _fragmentation(group, ctx)
        yield from _statistics_of(group, scope)


def _full(job: dict[str, Any], ctx: PlanningContext, scope: _Scope) -> Iterator[_Work]:
    """Per table or group of small tables (grouped as in quick maintenance: a large
    table alone): measure, rebuild fragmented indexes (unless told not to), compact, and
    fresh planner statistics."""
    update_stats = bool(job.get("update_stats", True))
    threshold = ctx.defaults.fragmentation_threshold
    for group in _statistics_groups(scope):
        if group[0] in scope.parents:
            # Its rows and indexes are its partitions', measured and rebuilt as tables.
            yield _parent_compaction(group[0], ctx, scope, update_stats)
            continue
        yield _fragmentation(group, ctx)
        if job.get("rebuild_indexes", True):
            yield _of_group(
                "rebuild_fragmented_indexes",
                group,
                {"fragmentation_threshold": threshold, "min_pages": ctx.defaults.min_index_pages},
                f"Rebuild indexes of {{}} fragmented past {exact(threshold)}%",
            )
        yield from _compaction(group, ctx, scope, update_stats)
        if ctx.dialect != "postgresql" and update_stats:
            yield from _statistics_of(group, scope)


def _compaction(
    group: list[str], ctx: PlanningContext, scope: _Scope, update_stats: bool
) -> Iterator[_Work]:
    """The group's compaction: on PostgreSQL optimize_table is VACUUM (ANALYZE), which
    refreshes the statistics too (its output counts them), so no ANALYZE follows; told
    to leave them, or for a partition its partitioned table's ANALYZE refreshes later,
    a plain VACUUM."""
    analyzes = ctx.dialect == "postgresql"
    compact: dict[str, Any] = {"fragmentation_threshold": ctx.defaults.fragmentation_threshold}
    doing = "Compact {} and return free pages"
    by_parent: dict[str | None, list[str]] = {}
    for t in group:
        by_parent.setdefault(scope.covered.get(t), []).append(t)
    for parent, tables in by_parent.items():
        if parent is not None:
            # A name is text, not a format: its braces are kept as they are.
            shown = parent.replace("{", "{{").replace("}", "}}")
            later = f"; {shown}'s ANALYZE after them refreshes their statistics"
            yield _of_group(
                "optimize_table", tables, {**compact, "update_stats": False}, doing + later
            )
        elif not update_stats:
            yield _of_group("optimize_table", tables, {**compact, "update_stats": False}, doing)
        else:
            refreshing = ", refreshing planner statistics" if analyzes else ""
            yield _of_group("optimize_table", tables, compact, doing + refreshing)


def _parent_compaction(
    parent: str, ctx: PlanningContext, scope: _Scope, update_stats: bool
) -> _Work:
    """A partitioned table's compaction: its ANALYZE alone (no VACUUM, which would
    vacuum each partition again), or with --no-update-stats nothing, as it says."""
    compact: dict[str, Any] = {"fragmentation_threshold": ctx.defaults.fragmentation_threshold}
    if update_stats:
        return _Work(
            "optimize_table", {"table": parent, **compact}, _parent_analyze(parent, scope), parent
        )
    return _Work(
        "optimize_table",
        {"table": parent, **compact, "update_stats": False},
        f"{parent} is partitioned: no VACUUM of it, which would vacuum its partitions "
        "again after their own steps, and no ANALYZE (--no-update-stats)",
        parent,
    )


def _emergency(job: dict[str, Any], ctx: PlanningContext, scope: _Scope) -> Iterator[_Work]:
    """Check every table for corruption, then repair what the check found."""
    yield _Work(
        "check_table_corruption", {"tables": scope.covers}, "Look for corrupted tables and indexes"
    )
    yield _Work(
        "repair_corrupted_tables",
        {"tables": "${step_1.output.corrupted_tables}", "create_backup": True},
        "Repair the tables the check found corrupted, after a backup copy",
        # Nothing to repair, nothing to approve: skip unless the check found damage.
        condition="${step_1.output.corrupted_tables}",
    )


_WORK: dict[str, Callable[[dict[str, Any], PlanningContext, _Scope], Iterator[_Work]]] = {
    "quick": _quick,
    "standard": _standard,
    "full": _full,
    "emergency": _emergency,
}


def _report(kind: str, tables: list[str], work: list[_Work]) -> Step:
    """The report step: runs whatever happened before it, and reads every step's output."""
    actions = [
        {"tool": w.tool, "table": w.table, "output": f"${{{step_id(i)}.output}}"}
        for i, w in enumerate(work)
        if i > 0
    ]
    return Step(
        id=step_id(len(work)),
        tool="generate_maintenance_report",
        params={
            "maintenance_type": kind,
            "tables": tables,
            "baseline": "${step_0.output}",
            "actions": actions,
        },
        rationale="Summarize what was done and the database before and after",
        always_run=True,
    )
