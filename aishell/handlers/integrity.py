"""The corruption check's output, the same on every engine: per table checked and sound,
corrupted, or not checked and why; and what the health analysis says of it.

`corruption_found` is true or false only when every table was checked (null otherwise):
a table that could not be checked is never reported sound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed, StepSkipped
from aishell.handlers import step_tables
from aishell.tool.context import ToolContext


def corruption_summary(
    method: str, results: Sequence[Mapping[str, Any]], **extra: Any
) -> dict[str, Any]:
    """One check's findings from its per-table results, each
    {table, status: ok | corrupted | not checked | gone, issues?, reason?, cause?}. A
    table dropped since the plan (gone) is listed in tables_gone, neither checked nor
    left unchecked: there is nothing left of it to be damaged."""
    gone = [r["table"] for r in results if r["status"] == "gone"]
    results = [r for r in results if r["status"] != "gone"]
    checked = [r["table"] for r in results if r["status"] != "not checked"]
    corrupted = sorted(r["table"] for r in results if r["status"] == "corrupted")
    # cause locked: another session held the table past the lock wait (its holder
    # named in the reason); the next run checks it first (commands/skipped.py).
    unchecked = [
        {
            "table": r["table"],
            "reason": r["reason"],
            **({"cause": r["cause"]} if r.get("cause") else {}),
        }
        for r in results
        if r["status"] == "not checked"
    ]
    reasons = list(dict.fromkeys(u["reason"] for u in unchecked))
    found = True if corrupted else (None if unchecked else False)
    return {
        "method": method,
        "checked_tables": checked,
        "corrupted_tables": corrupted,
        "unchecked_tables": unchecked,
        "status_by_table": {r["table"]: r["status"] for r in results},
        "issues": [
            {"table": r["table"], "message": m} for r in results for m in r.get("issues") or []
        ][:200],
        "corruption_found": found,
        # ok means checked and sound; a table that could not be checked is not ok.
        "ok": found is False,
        "not_checked": "; ".join(reasons[:3]) if reasons else None,
        **({"tables_gone": gone} if gone else {}),
        **extra,
    }


def checked_or_skipped(summary: dict[str, Any]) -> dict[str, Any]:
    """check_table_corruption's outcome: skipped when no table could be checked at all."""
    if summary["checked_tables"] or summary["corrupted_tables"]:
        return summary
    reason = f"No table could be checked for corruption: {summary['not_checked']}"
    raise StepSkipped(reason, summary)


Check = Callable[[Connection, ToolContext, list[str]], dict[str, Any]]
Repair = Callable[[list[str], Mapping[str, Any], ToolContext], dict[str, Any]]


def checking(check: Check) -> Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]:
    """check_table_corruption's run: `check(conn, ctx, tables)` of the step's tables,
    skipped when none could be checked at all."""

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return checked_or_skipped(check(ctx.connection, ctx, step_tables(params, ctx)))

    return run


def repairing(repair: Repair) -> Callable[[Mapping[str, Any], ToolContext], dict[str, Any]]:
    """repair_corrupted_tables' run: `repair(tables, params, ctx)` with the tables given;
    none given (the check found none) is nothing to do."""

    def run(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        tables = list(params.get("tables") or [])
        if not tables:
            return {"repaired_tables": [], "backup_path": None, "note": "no corrupted tables given"}
        return repair(tables, params, ctx)

    return run


def repair_each(
    tables: Sequence[str],
    repair: Callable[[str], Mapping[str, Any]],
    failed: str,
    why: str = "",
) -> list[str]:
    """Repair the tables one by one; `repair` repairs one and checks it again, returning
    the check's result for it ({status, issues?, reason?}). The tables repaired; or
    StepFailed ("{failed} TABLES{why}: ...") naming each table still damaged with its
    first issue, and each whose check afterwards could not run, with why: a repair is
    reported done only when a check found the table sound."""
    repaired, still, unverified = [], {}, {}
    for table in tables:
        after = repair(table)
        if after["status"] == "ok":
            repaired.append(table)
        elif after["status"] == "corrupted":
            still[table] = list(after.get("issues") or ["the check still finds damage"])
        else:
            unverified[table] = str(after.get("reason") or "the check could not run")
    problems = []
    if still:
        detail = "; ".join(f"{t}: {m[0]}" for t, m in still.items())
        problems.append(f"{failed} {', '.join(still)}{why}: {detail}")
    if unverified:
        detail = "; ".join(f"{t}: {m}" for t, m in unverified.items())
        problems.append(
            f"{', '.join(unverified)} rebuilt, but the check after the repair could not "
            f"run, so the repair is not verified ({detail}); check "
            f"{'it' if len(unverified) == 1 else 'them'} again"
        )
    if problems:
        done = f" ({', '.join(repaired)} repaired and checked sound)" if repaired else ""
        raise StepFailed("; ".join(problems) + done)
    return repaired


def health_integrity(
    tables: list[dict[str, Any]],
    check: Mapping[str, Any] | None,
    recommendations: list[str],
    checker: str,
) -> dict[str, Any]:
    """The keys every engine's health analysis ends with: its tables, the corruption
    check (None: not asked for) and its one-line verdict, and the recommendations, what
    `checker` found last."""
    return {
        "tables": tables,
        "integrity": integrity_line(check),
        "corruption_check": check,
        "recommendations": [*recommendations, *corruption_advice(check, checker)],
    }


def corruption_advice(summary: Mapping[str, Any] | None, checker: str) -> list[str]:
    """What the health analysis recommends after a corruption check (none: not asked for)."""
    if summary is None:
        return []
    if summary["corrupted_tables"]:
        return [
            f"{checker} found damage in {', '.join(summary['corrupted_tables'])}; run the "
            "emergency maintenance plan"
        ]
    if summary["unchecked_tables"]:
        return [f"Corruption was not checked: {summary['not_checked']}"]
    return []


def integrity_line(summary: Mapping[str, Any] | None) -> str | None:
    """The health analysis's one-line integrity verdict (None: not asked for)."""
    if summary is None:
        return None
    if summary["corrupted_tables"]:
        return f"corrupted: {', '.join(summary['corrupted_tables'])}"
    if summary["unchecked_tables"]:
        checked = len(summary["checked_tables"])
        return (
            f"not checked: {summary['not_checked']}"
            if not checked
            else f"ok in {checked} table(s); not checked in "
            f"{len(summary['unchecked_tables'])}: {summary['not_checked']}"
        )
    return "ok"
