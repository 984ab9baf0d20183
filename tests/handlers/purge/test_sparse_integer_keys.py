"""An integer key walked in plain key ranges passes a stretch without old rows by one
read, which also finds the next key there is: the walk goes on from it. Before, it went
on at the stretch's end, a stretch at most max_batch_size keys wide, so keys 10^17 apart
(random or time-based 64-bit ids) took 10^11 reads: the purge ran out its run time with
the old rows at the far end never reached, every night. Keys at the ends of their type
(PostgreSQL's signed 64 bits, MariaDB's BIGINT UNSIGNED, SQLite's greatest) are deleted and
archived like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import scratch_target
from tests.services import engine

# Old rows at the ends of each type and far apart between them; young rows near 0.
OLD = {
    "postgresql": ("bigint", [-(2**63), -(10**17), 3 * 10**17, 2**63 - 2, 2**63 - 1]),
    "mysql": ("bigint unsigned", [0, 10**17, 2**63, 2**64 - 2, 2**64 - 1]),
    # SQLite's least integer less one, where the walk starts, is bound by no driver.
    "sqlite": ("INTEGER", [-(2**63) + 1, -(10**17), 3 * 10**17, 2**63 - 2, 2**63 - 1]),
}
YOUNG = range(100, 130)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_keys_far_apart_are_walked_to_their_end(home: Path, dialect: str) -> None:
    kind, old = OLD[dialect]
    with scratch_target(dialect, home) as (config, url):
        db = engine(url)
        try:
            with db.begin() as conn:
                conn.execute(text(f"CREATE TABLE logs (id {kind} PRIMARY KEY, at date NOT NULL)"))
                conn.execute(
                    text("INSERT INTO logs VALUES (:id, :at)"),
                    [{"id": k, "at": "2000-01-01"} for k in old]
                    + [{"id": k, "at": "2999-01-01"} for k in YOUNG],
                )
            archive = home / "archive" / "logs.jsonl"
            job = {
                "table": "logs",
                "date_column": "at",
                "retention_days": 30,
                "archive_to": f"file:{archive}",
                "walk": "keys",
                # Twenty times what the walk needs: a bound on a hang, not a timing.
                "run_time_seconds": 20,
            }
            result = commands.run_job(
                config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
            )
            purge = next(s for s in result.steps if s.tool == "delete_old_records")
            assert purge.status == "succeeded", purge.error
            assert purge.output["complete"], purge.output["stopped_by"]
            with db.connect() as conn:
                left = set(conn.execute(text("SELECT id FROM logs")).scalars())
        finally:
            db.dispose()
        assert left == set(YOUNG)
        archived = [json.loads(line)["id"] for line in archive.read_text().splitlines()]
        assert sorted(archived) == sorted(old)
        assert purge.output["rows_deleted"] == len(old)
