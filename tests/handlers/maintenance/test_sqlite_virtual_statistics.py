"""SQLite's ANALYZE gathers no statistics for a virtual table (FTS5): its module keeps
its data and sqlite_stat1 never gets a row for it. The statistics step skips it, saying
why, instead of counting it analyzed; the health step does not ask for statistics it
can never have."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import query, use_target


def _made(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE VIRTUAL TABLE notes_fts USING fts5(body)")
        rows = [(f"note {i} about maintenance",) for i in range(2000)]
        conn.executemany("INSERT INTO notes (body) VALUES (?)", rows)
        conn.executemany("INSERT INTO notes_fts (body) VALUES (?)", rows)
    conn.close()


def test_a_virtual_table_is_not_counted_analyzed(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "virtual.db"
    _made(path)
    config = use_target(home, f"sqlite:///{path}")
    result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert result.status == "completed", result.error
    health, stats = result.steps[0].output, result.steps[1].output

    # What the server did: statistics for notes, none for the virtual table.
    analyzed = {row[0] for row in query(path, "SELECT tbl FROM sqlite_stat1")}
    assert analyzed == {"notes"}
    assert stats["tables_done"] == ["notes"]
    assert stats["tables_analyzed"] == 1
    [skipped] = stats["skipped_tables"]
    assert skipped["table"] == "notes_fts"
    assert "virtual table" in skipped["reason"]
    assert result.report["statistics_updated"] == 1

    by_table = {t["table"]: t for t in health["tables"]}
    assert by_table["notes_fts"]["statistics"] != "missing"
    assert not any("notes_fts" in line for line in health["recommendations"])
