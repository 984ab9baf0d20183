"""A PostgreSQL row dated -infinity, which no Python date holds, in a purge that
archives to a file: it is older than any cutoff, so it is deleted and archived as the
server writes it. Before, reading it back from the DELETE stopped every batch that
reached it, and every resume, with "timestamp too small (before year 1)"."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import use_target
from tests.services import engine, scratch_postgresql


def test_a_row_dated_minus_infinity_is_archived_as_written(home: Path) -> None:
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            conn.execute(text("CREATE TABLE logs (id int PRIMARY KEY, at timestamptz, d date)"))
            conn.execute(
                text(
                    "INSERT INTO logs SELECT g, now() - (g - 0.5) * interval '1 day', current_date "
                    "FROM generate_series(1, 100) g"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO logs VALUES (1000, '-infinity', '-infinity'), "
                    "(1001, 'infinity', 'infinity'), (1002, NULL, NULL)"
                )
            )
        config = use_target(home, url)
        archive = home / "archive" / "logs.jsonl"
        job = {
            "table": "logs",
            "date_column": "at",
            "retention_days": 60,
            "archive_to": f"file:{archive}",
        }
        result = commands.run_job(
            config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
        )
        assert result.status == "completed", result.error
        with engine(url).connect() as conn:
            left = set(conn.execute(text("SELECT id FROM logs")).scalars())
        assert left == set(range(1, 61)) | {1001, 1002}, sorted(left)[-10:]
        rows = {row["id"]: row for row in map(json.loads, archive.read_text().splitlines())}
        assert set(rows) == set(range(61, 101)) | {1000}
        assert rows[1000]["at"] == "-infinity" and rows[1000]["d"] == "-infinity", rows[1000]
