"""A table keyed by a uuid is purged like any other.

PostgreSQL has no min() or max() of a uuid, and the purge read its key's ends with
them: every run of such a table failed ("function min(uuid) does not exist"), and said
to resume once the server answered. The ends are now the first row of the key's order
each way, which every key type the purge takes has.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import use_target
from tests.services import engine, scratch_server

ROWS = 300

TABLES = {
    "postgresql": (
        "CREATE TABLE logs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
        "created_at timestamptz NOT NULL, payload text)",
        "INSERT INTO logs (created_at, payload) SELECT now() - (g % 100) * interval '1 day', "
        "'p' FROM generate_series(1, 300) g",
    ),
    "mysql": (
        "CREATE TABLE logs (id uuid PRIMARY KEY DEFAULT uuid(), created_at datetime NOT NULL, "
        "payload text)",
        "INSERT INTO logs (created_at, payload) SELECT now() - INTERVAL (seq % 100) DAY, 'p' "
        "FROM seq_1_to_300",
    ),
}


def _with_walk(home: Path, url: str, walk: str):
    use_target(home, url)
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"].setdefault("purge", {})["walk"] = walk
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


@pytest.mark.parametrize(
    ("dialect", "walk"), [("postgresql", "keys"), ("postgresql", "auto"), ("mysql", "auto")]
)
def test_a_table_keyed_by_a_uuid_is_purged(home: Path, dialect: str, walk: str) -> None:
    with scratch_server(dialect) as url:
        with engine(url).begin() as conn:
            for sql in TABLES[dialect]:
                conn.execute(text(sql))
        config = _with_walk(home, url, walk)
        job = {"table": "logs", "retention_days": 60, "batch_size": 25}
        result = commands.run_job(
            config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH)
        )
        assert result.status == "completed", result.error
        with engine(url).connect() as conn:
            old_sql = (
                "SELECT count(*) FROM logs WHERE created_at < now() - interval '60 days'"
                if dialect == "postgresql"
                else "SELECT count(*) FROM logs WHERE created_at < now() - INTERVAL 60 DAY"
            )
            old = conn.execute(text(old_sql)).scalar_one()
            left = conn.execute(text("SELECT count(*) FROM logs")).scalar_one()
        purge = next(s for s in result.steps if s.tool == "delete_old_records")
        assert old == 0 and left == ROWS - purge.output["rows_deleted"], (old, left, purge.output)
        assert purge.output["rows_deleted"] > 100, purge.output
