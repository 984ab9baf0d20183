"""Full maintenance of a partitioned table: each partition is vacuumed once, by its own
step. The parent has no storage of its own and its VACUUM would vacuum every partition
again, so it gets none: only the ANALYZE that gathers its statistics as a whole (none
with --no-update-stats), and its output and the report say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target
from tests.services import engine

PARTITIONS = ("ev_1", "ev_2", "ev_3")


def _partitioned(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE ev (id int, body text) PARTITION BY RANGE (id)",
        *(
            f"CREATE TABLE {p} PARTITION OF ev FOR VALUES FROM ({i * 1000}) TO ({i * 1000 + 1000})"
            for i, p in enumerate(PARTITIONS)
        ),
        "INSERT INTO ev SELECT g, repeat('x', 60) FROM generate_series(0, 2999) g",
        "DELETE FROM ev WHERE id % 3 = 0",
    )


def _counts(url: str) -> dict[str, tuple[int, int]]:
    """Each table's (vacuum_count, analyze_count), as the server counts them now."""
    with engine(url).connect() as conn:
        rows = conn.execute(
            text("SELECT relname, vacuum_count, analyze_count FROM pg_stat_user_tables")
        ).all()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def _outputs(result: Any, tool: str) -> dict[str, dict[str, Any]]:
    """Each table's output of the tool's steps, by table."""
    found: dict[str, dict[str, Any]] = {}
    for step in result.steps:
        if step.tool == tool:
            for each in step.output.get("by_table") or [step.output]:
                found[each["table"]] = each
    return found


def _run(home: Path, url: str, job: dict[str, Any]) -> tuple[Any, dict[str, tuple[int, int]]]:
    config = use_target(home, url)
    before = _counts(url)
    preview = commands.plan_job(config, "maintenance", job)
    sql = [s for step in preview.steps if step.tool == "optimize_table" for s in step.sql]
    assert 'VACUUM (ANALYZE) "ev"' not in sql and 'VACUUM "ev"' not in sql
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    after = _counts(url)
    done = {t: (after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in before}
    return result, done


def test_each_partition_is_vacuumed_once_and_the_parent_only_analyzed(
    home: Path, pg_url: str
) -> None:
    _partitioned(pg_url)
    result, done = _run(home, pg_url, {"type": "full"})
    for p in PARTITIONS:
        assert done[p][0] == 1, (p, done)
    parent = _outputs(result, "optimize_table")["ev"]
    assert parent["vacuumed"] is False and parent["partitioned"] is True
    assert parent["partitions"] == list(PARTITIONS)
    assert parent["statistics_updated"] is True
    assert "no VACUUM of it" in parent["reason"] and "ANALYZE" in parent["reason"]
    with engine(pg_url).connect() as conn:
        stats = conn.execute(
            text("SELECT count(*) FROM pg_stats WHERE tablename = 'ev' AND inherited")
        ).scalar_one()
    assert stats > 0  # the parent's statistics as a whole
    report = result.steps[-1].output
    assert report["tables_optimized"] == len(PARTITIONS)


def test_without_statistics_the_parent_is_left_alone(home: Path, pg_url: str) -> None:
    _partitioned(pg_url)
    result, done = _run(home, pg_url, {"type": "full", "update_stats": False})
    for p in PARTITIONS:
        assert done[p] == (1, 0), (p, done)
    assert done["ev"] == (0, 0)
    parent = _outputs(result, "optimize_table")["ev"]
    assert parent["vacuumed"] is False and parent["statistics_updated"] is False
    assert "no ANALYZE" in parent["reason"]


def test_standard_maintenance_analyzes_each_partition_once(home: Path, pg_url: str) -> None:
    _partitioned(pg_url)
    config = use_target(home, pg_url)
    job = {"type": "standard"}
    preview = commands.plan_job(config, "maintenance", job)
    sql = [s for step in preview.steps if step.tool == "update_table_statistics" for s in step.sql]
    # The partitioned table's ANALYZE analyzes its partitions: they are not named again.
    assert sql == ['ANALYZE "ev"']
    before = _counts(pg_url)
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    after = _counts(pg_url)
    for t in ("ev", *PARTITIONS):
        assert after[t][1] - before[t][1] == 1, (t, before, after)
    [stats] = [s.output for s in result.steps if s.tool == "update_table_statistics"]
    assert sorted(stats["tables_done"]) == ["ev", *PARTITIONS]
