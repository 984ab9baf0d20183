"""Every step says its figures, live and in `runs show`: rows deleted and where they
were archived, a backup's file, size, tables, rows and checksum, what its validation
proved, the space it needs; sizes in binary units, backup ids named as ids."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def last_run_id() -> str:
    listed = json.loads(invoke("runs", "list", "--json"))
    runs = listed["runs"] if isinstance(listed, dict) else listed
    return str(runs[0]["run_id"])


def test_a_backup_run_says_what_it_wrote_and_what_was_proven(home: Path, demo_db: Path) -> None:
    live = invoke("run", "backup", "--non-interactive")
    shown = invoke("runs", "show", last_run_id())
    for out in (live, shown):
        assert "about " in out and " MiB to write" in out
        backup_line = next(line for line in out.splitlines() if ".sqlite, " in line)
        assert " MiB, 4 tables, " in backup_line and " rows, sha256 " in backup_line
        assert "proven by restore: 4 tables compared, " in out
    listed = invoke("backups", "list")
    assert "newest backup proven restorable is id 1, " in listed


def test_a_purge_says_rows_deleted_and_where_they_were_archived(home: Path, demo_db: Path) -> None:
    archive = home / "archive" / "logs.jsonl"
    archive.parent.mkdir()
    live = invoke(
        "run", "log-cleanup", "--table", "app_logs", "--date-column", "created_at",
        "--retention-days", "30", "--archive-to", f"file:{archive}", "--max-rows", "700",
        "--batch-size", "100", "--approve-up-to", "high", "--non-interactive",
    )  # fmt: skip
    shown = invoke("runs", "show", last_run_id())
    archived = sum(1 for _ in archive.open())
    for out in (live, shown):
        assert f"{archived:,} rows deleted in " in out, out
        assert f"each archived to {archive}" in out
        assert " older than " in out
    assert archived == 700


def test_one_batch_and_one_row_are_said_in_the_singular():
    from aishell.render.figures import step_figures as figures

    one = figures({"rows_deleted": 1, "batches": 1, "rows_per_second": 1, "longest_batch_ms": 2})
    assert one.startswith("1 row deleted in 1 batch, "), one
    many = figures({"rows_deleted": 0, "batches": 0, "rows_per_second": 0, "longest_batch_ms": 0})
    assert many.startswith("0 rows deleted in 0 batches, "), many
