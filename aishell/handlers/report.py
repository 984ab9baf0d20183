"""generate_maintenance_report: what the run did, what the server skipped, and the
database before and after.

Every count comes from what the steps report, never from what they were asked to do:
a statistics update the server skipped is not counted, a table the corruption check
could not check is listed as not checked with the reason, and `corruption_found` is
true or false only when every table was checked (null otherwise).

What a step adds is its tool's `report:` rule (aishell/tool/report.py), given by the
catalog the report is loaded into: this module knows the report's sections, not the tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.handlers import Handler, RunFn
from aishell.handlers.mysql.catalog import database_size as mysql_size
from aishell.handlers.postgresql.catalog import database_size as postgresql_size
from aishell.handlers.sqlite.catalog import database_size as sqlite_size
from aishell.tool.context import ToolContext
from aishell.tool.report import ReportRule
from aishell.units import binary_size

# The counters of tables: a table two steps did the same kind of work on (on MySQL the
# rebuild step's ALTER ... FORCE and the optimize step's OPTIMIZE TABLE) is one table
# optimized, not two. A step that names no table adds its number as it is. (Statistics
# are counted by update: two ANALYZEs of a table are two updates.)
TABLE_COUNTERS = ("tables_optimized",)


def summarize(
    maintenance_type: str,
    tables: list[str],
    actions: list[Mapping[str, Any]],
    baseline: Mapping[str, Any] | None = None,
    rules: Mapping[str, tuple[ReportRule, ...]] | None = None,
) -> dict[str, Any]:
    """Aggregate the outputs of a run's steps into the report's counters, each step by
    its tool's rule in `rules` (by tool name)."""
    report: dict[str, Any] = {
        "maintenance_type": maintenance_type,
        "actions_count": len(actions),
        "tables_processed": [],
        "indexes_rebuilt": 0,
        "statistics_updated": 0,
        "tables_optimized": 0,
        "corruption_check": f"not part of {maintenance_type} maintenance",
        "corruption_found": None,
        "corrupted_tables": [],
        "corruption_not_checked": [],
        "corruption_by_table": {},
        "repaired_tables": [],
        # The reference's name for what the repair step repaired: its tables, [] for none.
        "corruption_repaired": [],
        "skipped": [],
        "tables_gone": [],
        "fragmentation": {},
        "dead_rows_kept": {},
        "steps_not_run": 0,
    }
    checks: list[Mapping[str, Any]] = []
    # Per table counter, the tables counted in it so far.
    counted: dict[str, set[str]] = {section: set() for section in TABLE_COUNTERS}
    # The tables in the order first named; a dict, so that thousands stay linear.
    processed: dict[str, None] = {}
    if baseline and isinstance(baseline.get("corruption_check"), Mapping):
        checks.append(baseline["corruption_check"])
    for action in actions:
        tool, output = action.get("tool"), action.get("output")
        if output is None:
            report["steps_not_run"] += 1
            continue
        table = action.get("table")
        if table:
            processed.setdefault(table)
        declined = _note_skipped(report, tool, output)
        adds = (rules or {}).get(tool, ()) if isinstance(tool, str) else ()
        if declined and table in {s.get("table") for s in declined}:
            continue  # the server did not do this step's work
        # A step over many tables (handlers/shared.py) counts as a step per table done.
        for each, said in _per_table(table, output):
            for rule in adds:
                _add(rule, report, checks, each, said, counted)
    processed.update(dict.fromkeys(t for t in tables if t not in processed))
    report["tables_processed"] = list(processed)
    if checks:
        _merge_checks(report, checks)
    return report


def _per_table(
    table: str | None, output: Mapping[str, Any]
) -> list[tuple[str | None, Mapping[str, Any]]]:
    """The (table, output) pairs a step's output counts as: each table it did, when it
    was given many and says each one's outcome (by_table), else itself."""
    by_table = output.get("by_table")
    if not isinstance(by_table, list):
        return [(table, output)]
    return [(str(o.get("table")), o) for o in by_table if isinstance(o, Mapping)]


def _note_skipped(report: dict[str, Any], tool: Any, output: Mapping[str, Any]) -> list[Any]:
    """A step's skipped tables into the report (with their cause when a lock kept the
    step off them), its tables gone too; the skipped entries."""
    declined = list(output.get("skipped_tables") or [])
    for s in declined:
        entry = {"tool": tool, "table": s.get("table"), "reason": s.get("reason")}
        if s.get("cause"):
            entry["cause"] = s["cause"]  # locked: held by another session past the lock wait
        report["skipped"].append(entry)
    report["tables_gone"] += [
        t for t in output.get("tables_gone") or [] if t not in report["tables_gone"]
    ]
    return declined


def _add(
    rule: ReportRule,
    report: dict[str, Any],
    checks: list[Mapping[str, Any]],
    table: str | None,
    output: Mapping[str, Any],
    counted: dict[str, set[str]],
) -> None:
    """What one step's output adds to its section of the report, by its tool's rule;
    `counted`: the tables each table counter has counted."""
    if rule.when is not None and not output.get(rule.when):
        return
    if rule.action == "add":
        number = int(output.get(rule.source, 0)) if rule.source else 1
        tables = counted.get(rule.section)
        if tables is not None and table and number > 0:
            number = 0 if table in tables else 1
            tables.add(table)
        report[rule.section] += number
    elif rule.action == "set":
        report[rule.section] = list(output.get(rule.source or "") or [])
    elif rule.action == "per_table":
        if table:
            report[rule.section][table] = {f: output.get(f) for f in rule.fields}
    else:  # merge: the checks are merged per table once every step is seen
        checks.append(output)


def _merge_checks(report: dict[str, Any], checks: list[Mapping[str, Any]]) -> None:
    """Per table, the latest check that checked it wins; otherwise why none could."""
    status: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for check in checks:
        for table, state in (check.get("status_by_table") or {}).items():
            if state != "not checked" or table not in status:
                status[table] = state
        for item in check.get("unchecked_tables") or []:
            reasons.setdefault(item["table"], item["reason"])
    unchecked = [t for t, s in status.items() if s == "not checked"]
    corrupted = sorted(t for t, s in status.items() if s == "corrupted")
    report["corruption_by_table"] = status
    report["corrupted_tables"] = corrupted
    report["corruption_not_checked"] = [{"table": t, "reason": reasons.get(t)} for t in unchecked]
    report["corruption_methods"] = sorted({str(c.get("method")) for c in checks})
    if corrupted:
        report["corruption_found"] = True
    elif unchecked:
        report["corruption_found"] = None
    else:
        report["corruption_found"] = False
    if not unchecked:
        report["corruption_check"] = "checked"
    elif len(unchecked) < len(status):
        report["corruption_check"] = "partly checked"
    else:
        report["corruption_check"] = "not checked"


def database_size(conn: Connection) -> dict[str, Any]:
    """The database's size now, measured as the health analysis measured the baseline."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql_size(conn)
    if family(name) == "mysql":
        return mysql_size(conn)
    return sqlite_size(conn)


def summarizer(rules: Mapping[str, tuple[ReportRule, ...]]) -> RunFn:
    """The report's run, adding up each step by its tool's rule in `rules`."""

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return _report(params, ctx, rules)

    return run


def _report(
    params: Mapping[str, Any], ctx: ToolContext, rules: Mapping[str, tuple[ReportRule, ...]]
) -> dict[str, Any]:
    baseline = params.get("baseline") or {}
    report = summarize(
        params["maintenance_type"],
        list(params.get("tables") or []),
        params.get("actions") or [],
        baseline,
        rules,
    )
    after = database_size(ctx.connection)
    before = baseline.get("database_size_bytes")
    change = after["size_bytes"] - before if before is not None else None
    report.update(
        {
            "size_before": before,
            "size_after": after["size_bytes"],
            "size_method": after["method"],
            # The same measure before and after; a database that grew reclaimed nothing.
            "reclaimed_bytes": max(-change, 0) if change is not None else None,
            "freelist_before": baseline.get("freelist_count"),
            "freelist_after": after.get("freelist_count"),
        }
    )
    if change is not None and change > 0:
        report["size_note"] = (
            f"the database grew by {binary_size(change)} during the run ({after['method']}, "
            "measured the same way before and after): other sessions' writes, and on "
            "PostgreSQL the free space and visibility maps VACUUM writes; VACUUM makes dead "
            "rows' space reusable inside the files rather than returning it"
        )
    report["summary"] = _summary_line(params["maintenance_type"], report)
    return report


def _summary_line(kind: str, report: Mapping[str, Any]) -> str:
    parts = [
        f"{kind} maintenance of {len(report['tables_processed'])} table(s)",
        f"{report['statistics_updated']} statistics update(s)",
        f"{report['indexes_rebuilt']} index(es) rebuilt",
    ]
    if report["steps_not_run"]:
        parts.append(f"{report['steps_not_run']} step(s) not run")
    parts += _skipped_parts(report)
    if report["reclaimed_bytes"]:
        parts.append(f"{binary_size(report['reclaimed_bytes'])} reclaimed")
    kept = report.get("dead_rows_kept") or {}
    if kept:
        rows = sum(int(t.get("dead_rows_kept") or 0) for t in kept.values())
        first = next(iter(kept.values())).get("kept_by") or ["an older snapshot"]
        parts.append(
            f"{rows} dead row(s) in {len(kept)} table(s) VACUUM could not remove: an older "
            f"snapshot still sees them, held by {first[0]}"
        )
    if report["corruption_found"]:
        parts.append(
            f"corruption in {', '.join(report['corrupted_tables'])}; "
            f"repaired: {', '.join(report['repaired_tables']) or 'none'}"
        )
    elif report["corruption_found"] is False:
        parts.append(f"no corruption in {len(report['corruption_by_table'])} table(s) checked")
    elif report["corruption_not_checked"]:
        missing = report["corruption_not_checked"]
        parts.append(f"corruption not checked in {len(missing)} table(s): {missing[0]['reason']}")
    else:
        parts.append(f"corruption {report['corruption_check']}")
    return "; ".join(parts)


def _skipped_parts(report: Mapping[str, Any]) -> list[str]:
    """The steps' skipped tables by cause (the server refused; another session held the
    table past the lock wait: the next run does those first) and the tables gone."""
    parts = []
    for cause, how in (("refused", "skipped by the server"), ("locked", "skipped, held")):
        skipped = [s for s in report["skipped"] if s.get("cause", "refused") == cause]
        if not skipped:
            continue
        which = ", ".join(f"{s['tool']} {s['table']}" for s in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        parts.append(f"{len(skipped)} {how} ({which}{more}): {skipped[0]['reason']}")
    gone = report.get("tables_gone") or []
    if gone:
        parts.append(f"{len(gone)} table(s) dropped during the run: {', '.join(gone)}")
    return parts


# Outside a catalog (no rules) the report counts nothing but what was skipped or not run;
# the registry binds each catalog's rules (Handler.in_catalog).
generate_maintenance_report = Handler(
    sql_templates=("PRAGMA page_size", "PRAGMA page_count", "PRAGMA freelist_count"),
    run_fn=summarizer({}),
    summarize=summarizer,
)
# The same aggregation on the servers, measuring the database's size with their catalogs.
generate_maintenance_report_postgresql = Handler(
    sql_templates=("SELECT pg_catalog.pg_database_size(pg_catalog.current_database())",),
    run_fn=summarizer({}),
    summarize=summarizer,
)
generate_maintenance_report_mysql = Handler(
    sql_templates=(
        "SELECT TABLE_NAME, ENGINE, DATA_LENGTH, INDEX_LENGTH, DATA_FREE FROM "
        "information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
        "SELECT NAME, FILE_SIZE FROM information_schema.INNODB_SYS_TABLESPACES",
    ),
    run_fn=summarizer({}),
    summarize=summarizer,
)
