"""A purge's preview says where each row goes before it is deleted, or that nothing
keeps it: the one fact a DBA checks before saying yes to a purge."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli

PURGE = ["run", "log-cleanup", "--table", "app_logs", "--retention-days", "80", "--dry-run"]


@pytest.mark.parametrize(
    ("archive", "said"),
    [
        (
            "file:{home}/kept/app_logs.jsonl",
            "each row archived first to the file {home}/kept/app_logs.jsonl",
        ),
        ("table:app_logs_kept", "each row archived first to the table app_logs_kept"),
        (None, "not archived: deleted rows cannot be brought back"),
    ],
    ids=["file", "table", "none"],
)
def test_the_preview_names_where_the_purged_rows_go(
    home: Path, demo_db: Path, archive: str | None, said: str
) -> None:
    with sqlite3.connect(demo_db) as db:
        db.execute("CREATE TABLE app_logs_kept AS SELECT * FROM app_logs WHERE 0")
    given = ["--archive-to", archive.format(home=home)] if archive else []
    out = CliRunner().invoke(cli, ["--home", str(home), *PURGE, *given])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    preview = lines.index(next(line for line in lines if "would delete" in line))
    assert lines[preview + 1].strip() == said.format(home=home), out.output
