"""The figures of one finished step, in one line: what a DBA reads after a step (rows
deleted and archived, a backup's file, size, tables and checksum, what a restore
compared, the space maintenance gave back), the same in a run's live step lines and in
`runs show`. Sizes are in binary units everywhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from aishell.render.base import cutoff_text, human_size
from aishell.terminal import printable
from aishell.units import exact


def step_figures(output: Any, with_summary: bool = True) -> str:
    """The step's figures; "" for a step that has none (or a plain value's text).
    with_summary=False: not a report's summary, which the run's end prints anyway."""
    if not isinstance(output, Mapping):
        return "" if output is None else printable(str(output))
    if "summary" in output and not with_summary:
        return ""
    for keys, figures in _FIGURES:
        if all(key in output for key in keys):
            return printable(figures(output))
    return printable(_maintenance(output))


def _purge(out: Mapping[str, Any]) -> str:
    rows, batches = out["rows_deleted"], out["batches"]
    # The cutoff as the purge compared its rows with it.
    older = f" (older than {cutoff_text(out)})" if out.get("cutoff") is not None else ""
    line = (
        f"{rows:,} row{'' if rows == 1 else 's'} deleted in "
        f"{batches:,} batch{'' if batches == 1 else 'es'}{older}"
    )
    where = out.get("archive_table") or out.get("archive_file")
    if where:
        line += f", each archived to {where}"
    line += (
        f", {out.get('rows_per_second') or 0:,} rows/s, longest batch "
        f"{exact(out.get('longest_batch_ms') or 0)} ms"
    )
    if out.get("stopped_by"):
        line += f"; stopped early: {out['stopped_by']}"
    return line


def _estimate(out: Mapping[str, Any]) -> str:
    about = "about " if out.get("estimated") else ""
    how = f" (estimated from {out['how']})" if out.get("how") else ""
    return (
        f"{about}{out['row_count']:,} rows, {about}{out['older_rows']:,} older than "
        f"{cutoff_text(out)}{how}"
    )


def _backup(out: Mapping[str, Any]) -> str:
    line = (
        f"{PurePath(out['backup_path']).name}, {human_size(out['size_bytes'])}, "
        f"{out['tables']:,} tables, {out.get('rows') or 0:,} rows, sha256 {out['sha256'][:12]}"
    )
    changed = out.get("changed_tables")
    if out.get("taken_whole"):
        line += f"; {out['taken_whole']}"
    elif changed is not None:
        line += f", {len(changed):,} tables changed since its parent"
    return line


def _restored(out: Mapping[str, Any]) -> str:
    return (
        f"{out['restored_tables']:,} tables, {out['rows']:,} rows restored from "
        f"{PurePath(out['backup_path']).name}; {out['checksums_compared']:,} checksums "
        "compared with the backup's"
    )


def _checked_file(out: Mapping[str, Any]) -> str:
    chain = len(out["chain"])
    links = f" (a chain of {chain})" if chain > 1 else ""
    return (
        f"{PurePath(out['path']).name}{links}, {human_size(out['size_bytes'])}, sha256 "
        f"{'matches' if out['sha256_ok'] else 'DIFFERS'}, {len(out['tables']):,} tables"
    )


def _validated(out: Mapping[str, Any]) -> str:
    if not out["ok"]:
        problems = out.get("problems") or []
        return f"NOT proven: {'; '.join(str(p) for p in problems) or 'see the error'}"
    if out.get("quick"):
        return f"decoded whole, {out['tables_compared']:,} tables read (not restored)"
    return (
        f"proven by restore: {out['tables_compared']:,} tables compared, "
        f"{out['checksums_compared']:,} checksums match"
    )


def _sized(out: Mapping[str, Any]) -> str:
    free = out.get("free_bytes")
    room = f", {human_size(free)} free" if free is not None else ""
    enough = "" if out.get("enough_space", True) else " (NOT enough)"
    return f"about {human_size(out['estimated_bytes'])} to write{room}{enough}"


def _retention(out: Mapping[str, Any]) -> str:
    deleted = out["deleted_backups"]
    return f"{len(deleted):,} backup(s) deleted, {len(out.get('kept') or []):,} kept"


def _space(out: Mapping[str, Any]) -> str:
    return (
        f"{len(out['backups_to_delete']):,} backup(s) to delete, "
        f"{human_size(out['bytes_to_free'])} to free"
    )


def _newest(out: Mapping[str, Any]) -> str:
    proven = f"proven restorable {out['verified_at']}" if out.get("verified_at") else "unproven"
    return f"newest backup: id {out['backup_id']} ({out['kind']}), {proven}"


_FIGURES: tuple[tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str]], ...] = (
    (("summary",), lambda out: str(out["summary"])),
    (("rows_deleted", "batches"), _purge),
    (("older_rows", "row_count", "cutoff"), _estimate),
    (("backup_path", "size_bytes", "tables", "sha256"), _backup),
    (("restored_tables", "rows", "checksums_compared", "backup_path"), _restored),
    (("path", "chain", "sha256_ok", "size_bytes", "tables"), _checked_file),
    (("tables_compared", "checksums_compared", "ok"), _validated),
    (("estimated_bytes", "enough_space"), _sized),
    (("deleted_backups",), _retention),
    (("backups_to_delete", "bytes_to_free"), _space),
    (("backup_id", "kind", "verified_at"), _newest),
)

# Figures of maintenance steps, in the order shown; sizes in binary units.
_MAINTENANCE: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("row_count", lambda n: f"{n:,} rows"),
    ("tables_analyzed", lambda n: f"{n if isinstance(n, int) else len(n):,} table(s) analyzed"),
    ("fragmentation_percent", lambda n: f"{n}% fragmented"),
    ("indexes_rebuilt", lambda n: f"{n if isinstance(n, int) else len(n):,} index(es) rebuilt"),
    ("vacuumed", lambda n: "vacuumed" if n is True else f"{len(n):,} table(s) vacuumed"),
    ("reclaimed_bytes", lambda n: f"{human_size(n)} reclaimed"),
    ("corrupted_tables", lambda n: f"corrupted: {', '.join(n) if n else 'none'}"),
    ("repaired_tables", lambda n: f"repaired: {', '.join(n) if n else 'none'}"),
    ("database_size_bytes", lambda n: f"database {human_size(n)}"),
    ("recommendation", str),
)


def _maintenance(out: Mapping[str, Any]) -> str:
    parts = []
    if isinstance(out.get("by_table"), list) and isinstance(out.get("tables"), list):
        # A step over many tables (handlers/shared.py): how many it did, then its sums.
        parts.append(
            f"{len(out.get('tables_done') or []):,} of {len(out['tables']):,} table(s) done"
        )
        measured = [
            o for o in out["by_table"] if isinstance(o.get("fragmentation_percent"), int | float)
        ]
        if measured:
            worst = max(measured, key=lambda o: o["fragmentation_percent"])
            if worst["fragmentation_percent"] > 0:
                parts.append(f"most fragmented {worst['table']}: {worst['fragmentation_percent']}%")
            else:
                parts.append("none fragmented")
    for key, shown in _MAINTENANCE:
        if key in out and out[key] is not None:
            try:
                parts.append(shown(out[key]))
            except (TypeError, ValueError):  # a figure of another shape: as it is
                parts.append(f"{key}={out[key]}")
    return ", ".join(parts)
