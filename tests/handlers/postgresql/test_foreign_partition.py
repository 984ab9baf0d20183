"""A partitioned table with a foreign partition: its ANALYZE samples that partition
through the foreign data wrapper, on another server the plan never names, and fails
when that server does (here: the remote table is not there). No ANALYZE is sent to it,
saying why; its partitions here are analyzed by their own steps, so their statistics
are refreshed all the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target

SETUP = (
    "CREATE EXTENSION postgres_fdw",
    "CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw "
    "OPTIONS (host '127.0.0.1', dbname 'no_such_database_here')",
    "CREATE USER MAPPING FOR CURRENT_USER SERVER elsewhere OPTIONS (user 'postgres')",
    "CREATE TABLE ev (id int, d date) PARTITION BY RANGE (d)",
    "CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE FOREIGN TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') "
    "TO ('2025-01-01') SERVER elsewhere OPTIONS (table_name 'ev_2024')",
    "INSERT INTO ev_2025 SELECT g, '2025-03-01' FROM generate_series(1, 1000) g",
)


@pytest.mark.parametrize("kind", ["quick", "standard", "full"])
def test_no_analyze_reaches_a_foreign_partition(home: Path, pg_url: str, kind: str) -> None:
    run_sql(pg_url, *SETUP)
    config = use_target(home, pg_url)
    preview = commands.plan_job(config, "maintenance", {"type": kind})
    sql = [line for step in preview.steps for line in step.sql]
    assert 'ANALYZE "ev"' not in sql, sql
    assert any("ANALYZE of ev not sent" in line and "ev_2024" in line for line in sql), sql

    result = commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved())
    assert result.status == "completed", result.error
    skipped = {(s["tool"], s["table"]): s["reason"] for s in result.report["skipped"]}
    [(tool, table)] = skipped
    assert table == "ev" and "foreign" in skipped[(tool, table)]
    # The local partition's statistics were refreshed by a step of its own.
    done = [
        out
        for step in result.steps
        if step.tool in ("update_table_statistics", "optimize_table") and step.output
        for out in step.output.get("by_table") or [step.output]
        if out.get("table") == "ev_2025" or "ev_2025" in (out.get("tables_done") or [])
    ]
    assert any(
        out.get("statistics_updated") or "ev_2025" in (out.get("tables_done") or []) for out in done
    ), done
