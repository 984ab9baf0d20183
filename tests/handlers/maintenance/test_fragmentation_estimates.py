"""Fragmentation on PostgreSQL is estimated first (pgstattuple_approx where installed, the
catalog's statistics otherwise) and read whole only where the estimate reaches the
threshold, a cost the preview shows; full maintenance analyzes each table once, with
its VACUUM (ANALYZE), and the report counts those statistics."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.handlers.postgresql import estimates
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, use_target
from tests.services import changes_counted, engine, stats_reported

ROWS = 20_000


def two_tables(url: str, *, pgstattuple: bool) -> None:
    """`bloated` with two thirds of its rows deleted, `tight` untouched; both vacuumed
    and analyzed (their pages all-visible) with autovacuum off, so nothing else moves
    them. Keys in order: the indexes are as dense as a B-tree gets."""
    with engine(url).connect() as conn:
        if pgstattuple:
            conn.execute(text("CREATE EXTENSION pgstattuple"))
        for name in ("bloated", "tight"):
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id int PRIMARY KEY, k int NOT NULL, pad text NOT NULL) "
                    "WITH (autovacuum_enabled = false)"
                )
            )
            conn.execute(text(f"CREATE INDEX {name}_k ON {name} (k)"))
            conn.execute(
                text(
                    f"INSERT INTO {name} SELECT g, g, repeat('x', 100) "
                    f"FROM generate_series(1, {ROWS}) g"
                )
            )
        conn.execute(text("DELETE FROM bloated WHERE id % 3 <> 0"))
        stats_reported(conn)  # before the VACUUM, whose count a late report would add to
        conn.execute(text("VACUUM (ANALYZE) bloated, tight"))


def statements(config: Config, run_id: str) -> list[dict[str, Any]]:
    return commands.run_statements(config, run_id)


def sent(config: Config, run_id: str, index: int, needle: str) -> int:
    """How many of step `index`'s statements contain `needle`."""
    return sum(
        1
        for s in statements(config, run_id)
        if s["step_index"] == index and needle in s["sql"] and s["error"] is None
    )


def analyze_counts(url: str) -> dict[str, int]:
    with engine(url).connect() as conn:
        rows = conn.execute(text("SELECT relname, analyze_count FROM pg_stat_user_tables")).all()
    return {r[0]: int(r[1]) for r in rows}


def test_with_pgstattuple_only_the_tables_the_estimate_selects_are_read_whole(home, pg_url):
    two_tables(pg_url, pgstattuple=True)
    config = use_target(home, pg_url)
    job = {"type": "full", "tables": ["bloated", "tight"]}

    # The preview shows each full scan, what it reads and why, before anything runs.
    # Both tables are small: one step measures them in turn.
    preview = commands.run_job(config, "maintenance", job, dry_run=True)
    frag = next(s for s in preview.steps if s.tool == "analyze_table_fragmentation")
    assert frag.params["tables"] == ["bloated", "tight"]
    shown = "\n".join(frag.sql)
    assert 'full scan of table "bloated"' in shown and "at or above the 30% threshold" in shown
    assert 'full scan of table "tight"' not in shown
    assert frag.estimate["bytes_to_scan"] > 0
    assert "bloated" in frag.estimate["full_scans"] and "tight" not in frag.estimate["full_scans"]

    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    steps = {s.tool: s for s in result.steps}

    measured_step = steps["analyze_table_fragmentation"]
    outputs = {o["table"]: o for o in measured_step.output["by_table"]}
    assert measured_step.output["tables_done"] == ["bloated", "tight"]
    out = outputs["bloated"]
    assert out["method"] == "pgstattuple" and out["full_scan"] is True
    assert out["estimate"]["method"] == "pgstattuple_approx"
    # Vacuumed pages are all-visible: the estimate read the free space map, not them.
    assert out["estimate"]["scanned_percent"] < 100
    assert out["fragmentation_percent"] > 50 and out["estimate"]["fragmentation_percent"] > 50
    assert {i["method"] for i in out["indexes"]} == {"pgstatindex"}
    # Only the bloated table and its two indexes were read whole.
    assert sent(config, result.run_id, measured_step.index, "FROM pgstattuple(") == 1
    assert sent(config, result.run_id, measured_step.index, "FROM pgstatindex(") == 2

    out = outputs["tight"]
    assert out["method"] == "pgstattuple_approx" and out["full_scan"] is False
    assert out["fragmentation_percent"] < 30
    for index in out["indexes"]:
        assert index["fragmentation_percent"] is None and index["free_space_percent"] is None
        assert index["estimated_free_percent"] < 15
        assert index["method"].endswith("under half the 30% threshold, not read")
    # The estimates of both tables were read in one query.
    assert sent(config, result.run_id, measured_step.index, "LATERAL pgstattuple_approx(") == 1

    # The rebuild step measures by the same rule: the dense indexes are not read, and it
    # chooses from what the fragmentation step just read of the bloated table's indexes,
    # without reading them again.
    rebuild = steps["rebuild_fragmented_indexes"]
    assert sent(config, result.run_id, rebuild.index, "FROM pgstatindex(") == 0
    rebuilt = {o["table"]: o for o in rebuild.output["by_table"]}
    assert all(s["reason"].endswith("not read") for s in rebuilt["tight"]["skipped"])
    assert {r["index"]: r["fragmentation_before"] for r in rebuilt["bloated"]["rebuilt"]} == {
        i["index"]: i["fragmentation_percent"] for i in outputs["bloated"]["indexes"]
    }


def test_without_pgstattuple_the_estimate_comes_from_statistics_and_nothing_is_scanned(
    home, pg_url
):
    two_tables(pg_url, pgstattuple=False)
    config = use_target(home, pg_url)
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "analyze_table_fragmentation", {"table": "bloated"}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    out = result.steps[0].output
    assert out["method"] == "statistics estimate (pgstattuple is not installed)"
    assert out["full_scan"] is False and out["scanned_percent"] == 0
    assert out["fragmentation_percent"] > 50
    assert all(i["method"].startswith("not measured (pgstattuple") for i in out["indexes"])
    assert all(i["estimated_free_percent"] > 50 for i in out["indexes"])
    sql = [s["sql"] for s in statements(config, result.run_id)]
    assert sql and not any(re.search(r"pgstat(tuple|tuple_approx|index)\(", s) for s in sql)


def test_full_maintenance_analyzes_each_table_once_and_counts_it(home, pg_url):
    two_tables(pg_url, pgstattuple=True)
    config = use_target(home, pg_url)
    before = analyze_counts(pg_url)

    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())

    assert result.status == "completed", result.error
    assert [s.tool for s in result.steps if "tight" in s.params.get("tables", [])][1:-1] == [
        "analyze_table_fragmentation",
        "rebuild_fragmented_indexes",
        "optimize_table",
    ]
    sql = [s["sql"] for s in statements(config, result.run_id)]
    assert sum(s.startswith("VACUUM (ANALYZE)") for s in sql) == 2
    assert not any(s.startswith("ANALYZE") for s in sql)
    # The server analyzed each table exactly once more, and the report says so.
    after = analyze_counts(pg_url)
    assert {t: after[t] - before[t] for t in before} == {"bloated": 1, "tight": 1}
    report = result.report
    assert report["statistics_updated"] == 2 and report["tables_optimized"] == 2
    assert "2 statistics update(s)" in report["summary"]
    optimized = [
        o for s in result.steps if s.tool == "optimize_table" for o in s.output["by_table"]
    ]
    assert len(optimized) == 2 and all(o["statistics_updated"] is True for o in optimized)


def measured_sizes(url: str, table: str) -> dict[str, int]:
    """pg_relation_size of the table and each of its indexes, by name."""
    with engine(url).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
                "WHERE c.oid = CAST(:t AS regclass) OR c.oid IN "
                "(SELECT indexrelid FROM pg_index WHERE indrelid = CAST(:t AS regclass))"
            ),
            {"t": table},
        ).all()
    return {r[0]: int(r[1]) for r in rows}


def measured_together(config: Config) -> tuple[str, dict[str, dict[str, Any]]]:
    """One fragmentation step over both tables (read together, as a plan's are): its
    run, and each table's output."""
    plan = one_step_plan(
        "maintenance",
        "db",
        "postgresql",
        "analyze_table_fragmentation",
        {"tables": ["bloated", "tight"]},
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return result.run_id, {t["table"]: t for t in result.steps[0].output["by_table"]}


def test_a_table_changed_since_its_analyze_is_measured_as_it_is_now(home, pg_url):
    """The estimate's sizes are the catalog's page counts only where nothing changed the
    table since ANALYZE counted them; a table that grew since is measured, so neither its
    size nor its indexes' is the stale count."""
    two_tables(pg_url, pgstattuple=False)
    with engine(pg_url).connect() as conn:
        conn.execute(
            text(
                "INSERT INTO tight SELECT g, g, repeat('y', 100) "
                f"FROM generate_series({ROWS + 1}, {3 * ROWS}) g"
            )
        )
        conn.commit()
        stale = conn.execute(
            text("SELECT relpages FROM pg_class WHERE relname = 'tight'")
        ).scalar_one()
    changes_counted(pg_url, "tight")
    _, outputs = measured_together(use_target(home, pg_url))
    for table in ("bloated", "tight"):  # bloated is as its ANALYZE left it
        sizes = measured_sizes(pg_url, table)
        assert outputs[table]["size_bytes"] == sizes[table], table
        assert {i["index"]: i["bytes"] for i in outputs[table]["indexes"]} == {
            name: size for name, size in sizes.items() if name != table
        }, table
    assert outputs["tight"]["size_bytes"] > stale * 8192


def test_a_plans_statistics_estimates_come_with_its_indexes_and_match_one_table_read_alone(
    home, pg_url
):
    """Without pgstattuple, the query of every planned table's indexes also gives each
    table's statistics estimate (pg_stats is read once), and it is the estimate one
    table's own query gives."""
    two_tables(pg_url, pgstattuple=False)
    config = use_target(home, pg_url)
    run_id, outputs = measured_together(config)
    sql = [s["sql"] for s in statements(config, run_id)]
    assert sum("pg_stats" in s for s in sql) == 1, sql
    with engine(pg_url).connect() as conn:
        for table in ("bloated", "tight"):
            oid = conn.execute(text("SELECT CAST(:t AS regclass)::oid"), {"t": table}).scalar()
            alone = estimates.table_estimate(conn, int(oid), estimates.Scanners(False, False))
            got = {k: outputs[table][k] for k in alone if k in outputs[table]}
            assert got == {k: alone[k] for k in got}, table
            assert alone["fragmentation_percent"] == outputs[table]["fragmentation_percent"]


def _no_statistics(url: str, truncated: bool) -> None:
    """`fresh`: filled and never analyzed (no widths), or analyzed, then truncated and
    filled again (reltuples -1, the old widths kept). Either way no estimate."""
    with engine(url).connect() as conn:
        conn.execute(
            text(
                "CREATE TABLE fresh (id int PRIMARY KEY, pad text NOT NULL) "
                "WITH (autovacuum_enabled = false)"
            )
        )
        fill = "INSERT INTO fresh SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g"
        conn.execute(text(fill))
        if truncated:
            conn.execute(text("ANALYZE fresh"))
            conn.execute(text("TRUNCATE fresh"))
            conn.execute(text(fill))


@pytest.mark.parametrize("truncated", [False, True], ids=["never analyzed", "truncated since"])
@pytest.mark.parametrize("pgstattuple", [False, True], ids=["statistics", "pgstattuple"])
def test_a_table_without_statistics_is_not_called_empty_or_full(
    home, pg_url, truncated, pgstattuple
):
    """No row count or no widths: not 0% (nothing to do), not 100% (a rebuild); without
    pgstattuple it is not measured, saying why; with it, it is read whole."""
    if pgstattuple:
        with engine(pg_url).connect() as conn:
            conn.execute(text("CREATE EXTENSION pgstattuple"))
    _no_statistics(pg_url, truncated)
    config = use_target(home, pg_url)
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "analyze_table_fragmentation", {"table": "fresh"}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    out = result.steps[0].output
    if pgstattuple and out["full_scan"]:
        assert out["fragmentation_percent"] < 30, out
        return
    if pgstattuple:
        # pgstattuple_approx measured it: a figure, whatever the statistics say.
        assert out["fragmentation_percent"] is not None and out["fragmentation_percent"] < 30
        return
    assert out["fragmentation_percent"] is None, out
    assert out["method"].startswith("not measured: the table has no statistics"), out
    assert out["recommendation"].startswith("not measured: ANALYZE the table"), out
