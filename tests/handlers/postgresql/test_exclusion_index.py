"""An exclusion constraint's index is one PostgreSQL will not rebuild concurrently
(REINDEX INDEX CONCURRENTLY fails with "concurrent index creation for exclusion
constraints is not supported"), and a plain REINDEX would block the table's writes. The
rebuild leaves it as it is, saying why, and rebuilds the table's other indexes; the
fragmentation step does not advise a REINDEX CONCURRENTLY of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target

# booking: its primary key and a B-tree exclusion constraint, both left mostly empty by
# deleting nine rows in ten; slot: a GiST one (not a B-tree: never measured, never
# rebuilt), beside a plain index.
SETUP = (
    "CREATE EXTENSION pgstattuple",
    "CREATE EXTENSION btree_gist",
    "CREATE TABLE booking (id int PRIMARY KEY, room int, EXCLUDE USING btree (room WITH =))",
    "INSERT INTO booking SELECT g, g FROM generate_series(1, 20000) g",
    "DELETE FROM booking WHERE id % 10 <> 0",
    "CREATE TABLE slot (id int PRIMARY KEY, room int, EXCLUDE USING gist (room WITH =))",
    "INSERT INTO slot SELECT g, g FROM generate_series(1, 20000) g",
    "DELETE FROM slot WHERE id % 10 <> 0",
    "VACUUM ANALYZE booking",
    "VACUUM ANALYZE slot",
)
REBUILD = {"fragmentation_threshold": 30, "min_pages": 1}


def _index_oid(url: str, name: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT CAST(:n AS regclass)::oid"), {"n": name}).scalar())
    finally:
        engine.dispose()


def _run(home: Path, url: str, tool: str, params: dict[str, Any]) -> Any:
    config = use_target(home, url)
    plan = one_step_plan("maintenance", "db", "postgresql", tool, params)
    return commands.apply_plan(config, plan, approver=PreApproved())


def test_the_rebuild_leaves_an_exclusion_index_and_rebuilds_the_others(
    home: Path, pg_url: str
) -> None:
    run_sql(pg_url, *SETUP)
    before = _index_oid(pg_url, "booking_room_excl")
    result = _run(home, pg_url, "rebuild_fragmented_indexes", {"table": "booking", **REBUILD})
    assert result.status == "completed", result.error
    out = result.steps[0].output
    assert [r["index"] for r in out["rebuilt"]] == ["booking_pkey"], out
    said = {s["index"]: s["reason"] for s in out["skipped"]}
    assert "exclusion constraint" in said["booking_room_excl"]
    assert "CONCURRENTLY" in said["booking_room_excl"]
    # Not rebuilt in any way: the same index.
    assert _index_oid(pg_url, "booking_room_excl") == before


def test_the_preview_shows_no_rebuild_of_an_exclusion_index(home: Path, pg_url: str) -> None:
    run_sql(pg_url, *SETUP)
    config = use_target(home, pg_url)
    preview = commands.plan_job(config, "maintenance", {"type": "full", "tables": ["booking"]})
    sql = [line for step in preview.steps for line in step.sql]
    assert 'REINDEX INDEX CONCURRENTLY "booking_pkey"' in sql, sql
    sent = [line for line in sql if not line.startswith("--")]
    assert not any("booking_room_excl" in line and "REINDEX" in line for line in sent), sql
    assert any(
        line.startswith('-- "booking_room_excl": the index of an exclusion constraint')
        for line in sql
    ), sql


def test_the_fragmentation_step_advises_no_concurrent_rebuild_of_it(
    home: Path, pg_url: str
) -> None:
    run_sql(pg_url, *SETUP)
    params = {"table": "booking", "fragmentation_threshold": 30}
    result = _run(home, pg_url, "analyze_table_fragmentation", params)
    assert result.status == "completed", result.error
    out = result.steps[0].output
    advice = out["recommendation"]
    assert "REINDEX CONCURRENTLY booking_pkey" in advice, advice
    assert "CONCURRENTLY booking_room_excl" not in advice, advice
    assert "REINDEX INDEX booking_room_excl" in advice, advice
    by_index = {i["index"]: i for i in out["indexes"]}
    assert by_index["booking_room_excl"].get("exclusion") is True


def test_full_maintenance_of_tables_with_exclusion_constraints_completes(
    home: Path, pg_url: str
) -> None:
    run_sql(pg_url, *SETUP)
    kept = {n: _index_oid(pg_url, n) for n in ("booking_room_excl", "slot_room_excl")}
    config = use_target(home, pg_url)
    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert all(s.status in ("succeeded", "skipped") for s in result.steps), [
        (s.tool, s.status, s.error) for s in result.steps
    ]
    assert {n: _index_oid(pg_url, n) for n in kept} == kept
