"""A table filled many times over since its statistics were counted (autovacuum off, or
not yet there) is as compact as before: its estimate is not the old row count against
today's file. PostgreSQL reads reltuples as the planner does (rows per page, times the
pages there are now); MariaDB measures DATA_FREE against the tablespace file, not the
persistent statistics' DATA_LENGTH, which stay as the last ANALYZE left them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, use_target
from tests.services import changes_counted, engine, scratch_mysql


def _fragmentation(home: Any, url: str, dialect: str, tables: list[str]) -> dict[str, Any]:
    plan = one_step_plan(
        "maintenance", "db", dialect, "analyze_table_fragmentation", {"tables": tables}
    )
    result = commands.apply_plan(use_target(home, url), plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return {t["table"]: t for t in result.steps[0].output["by_table"]}


@pytest.mark.parametrize("together", [True, False], ids=["with others", "alone"])
def test_a_postgresql_table_grown_since_analyze_is_not_called_free(home, pg_url, together):
    with engine(pg_url).connect() as conn:
        for name in ("grown", "other"):
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id int PRIMARY KEY, pad text NOT NULL) "
                    "WITH (autovacuum_enabled = false)"
                )
            )
            conn.execute(
                text(
                    f"INSERT INTO {name} SELECT g, repeat('x', 60) FROM generate_series(1, 1000) g"
                )
            )
            conn.execute(text(f"VACUUM (ANALYZE) {name}"))
        conn.execute(
            text("INSERT INTO grown SELECT g, repeat('x', 60) FROM generate_series(1001, 100000) g")
        )
        conn.commit()
    changes_counted(pg_url, "grown")
    found = _fragmentation(
        home, pg_url, "postgresql", ["grown", "other"] if together else ["grown"]
    )["grown"]
    assert found["fragmentation_percent"] < 30, found
    (pkey,) = found["indexes"]
    assert pkey["estimated_free_percent"] is not None and pkey["estimated_free_percent"] < 30, found
    assert "VACUUM FULL" not in str(found.get("recommendation")), found


def test_a_mariadb_table_grown_since_its_statistics_is_not_rebuilt(home):
    with scratch_mysql() as url:
        with engine(url).connect() as conn:
            conn.execute(
                text(
                    "CREATE TABLE grown (id int PRIMARY KEY AUTO_INCREMENT, pad char(200)) "
                    "STATS_PERSISTENT=1 STATS_AUTO_RECALC=0"
                )
            )
            conn.execute(text("INSERT INTO grown (pad) SELECT 'x' FROM seq_1_to_100"))
            conn.execute(text("ANALYZE TABLE grown"))
            conn.execute(text("INSERT INTO grown (pad) SELECT 'y' FROM seq_1_to_200000"))
            conn.commit()
            data_length = conn.execute(
                text(
                    "SELECT DATA_LENGTH FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'grown'"
                )
            ).scalar_one()
        assert data_length < 2**20  # the statistics still say the table is tiny
        found = _fragmentation(home, url, "mysql", ["grown"])["grown"]
        assert found["fragmentation_percent"] < 30, found
        assert found["size_bytes"] > 20 * 2**20, found
        assert found["recommendation"] == "No optimization needed", found

        config = use_target(home, url)
        run = commands.run_job(
            config,
            "maintenance",
            {"type": "full", "tables": ["grown"]},
            approver=PreApproved(),
        )
        assert run.status == "completed", run.error
        by_tool = {s.tool: s for s in run.steps}
        optimized = by_tool["optimize_table"].output
        assert optimized["vacuumed"] is False, optimized
        assert optimized["reason"].endswith("% free: under the threshold"), optimized
        rebuilt = by_tool["rebuild_fragmented_indexes"].output
        assert rebuilt["rebuilt"] == [], rebuilt
