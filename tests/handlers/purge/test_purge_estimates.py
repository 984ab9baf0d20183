"""A log cleanup's counts on PostgreSQL and MariaDB are estimates that read no range of
the table: statistics, a block sample or a few key ranges before the purge, and after it
the estimate less the purge's own exact count. They say so, and come close."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from tests.handlers.purge.test_log_cleanup import fill, job, rows_of
from tests.helpers import run_sql, scratch_target

ROWS = 20_000
RETENTION = 30


def _analyze(url: str, table: str) -> None:
    if not url.startswith("postgresql"):
        run_sql(url, f"ANALYZE TABLE {table}")
        return
    # The filling session's row counts reach the statistics when its backend flushes
    # them (at its exit, which its client does not wait for): until its inserts are
    # counted before the ANALYZE, they would count as changed since it.
    deadline = time.monotonic() + 30
    server = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        while True:
            with server.connect() as conn:
                conn.execute(text(f"ANALYZE {table}"))
                changed = conn.execute(
                    text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = :t"),
                    {"t": table},
                ).scalar()
            if not changed or time.monotonic() > deadline:
                return
            time.sleep(0.2)
    finally:
        server.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_counts_around_a_purge_read_no_range_of_the_table(dialect, home):
    with scratch_target(dialect, home) as (config, url):
        fill(url)
        _analyze(url, "events")
        before = set(rows_of(url))
        result = commands.run_job(config, "log_cleanup", job(batch_size=50))
        assert result.status == "completed", result.error
        count, purge, recount = result.steps[:3]
        gone = purge.output["rows_deleted"]
        assert purge.output["complete"] and len(before) - len(rows_of(url)) == gone

        sent = commands.run_statements(config, result.run_id)
        table = '"events"' if dialect == "postgresql" else "`events`"
        # The batches' statements, the first old row's lookup and the DELETE, walk from
        # the key :after.
        # (PostgreSQL 14+ walks pages: its first batch is the DELETE of its first pages.)
        first_batch = next(
            i for i, s in enumerate(sent) if {"after", "low"} & set(s["parameters"] or {})
        )
        assert sent[first_batch]["sql"].startswith(("SELECT", "DELETE"))
        reads = [s["sql"] for s in sent[:first_batch] if f"FROM {table}" in s["sql"]]
        # What reads rows before the purge: the key's two ends (an index lookup each),
        # and a block sample (PostgreSQL without fresh statistics) or a few key ranges
        # (MySQL); then the purge's one count of the table's rows, which its max_share
        # is held against. No other count, no sum over the table.
        counts = [sql for sql in reads if sql == f"SELECT count(*) FROM {table}"]
        assert len(counts) == 1, reads
        assert reads, "the estimate's statements were not recorded"
        for sql in reads:
            if sql in counts:
                continue
            bounds = sql.startswith("SELECT (SELECT ") and sql.count("LIMIT 1") == 2
            assert bounds or "TABLESAMPLE SYSTEM" in sql or " BETWEEN " in sql, sql
            assert "sum(CASE" not in sql or "TABLESAMPLE" in sql, sql
        # After the purge: the estimate less the purge's exact count, with no statement.
        assert not [s for s in sent if s["step_index"] == recount.index]
        assert count.output["estimated"] and recount.output["estimated"]
        assert recount.output["row_count"] == count.output["row_count"] - gone
        assert recount.output["older_rows"] == 0
        how = recount.output["how"]
        assert "less the" in how and ("whole key range" in how or "table's pages" in how)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_purge_reads_again_nothing_the_count_before_it_read(dialect, home):
    # The table's indexes and date column (and PostgreSQL's statistics) are read once
    # for both steps: no step between them writes to the table.
    with scratch_target(dialect, home) as (config, url):
        fill(url)
        _analyze(url, "events")
        result = commands.run_job(config, "log_cleanup", job(batch_size=50))
        assert result.status == "completed", result.error
        count, purge = result.steps[:2]
        sent = commands.run_statements(config, result.run_id)
        before = {s["sql"] for s in sent if s["step_index"] == count.index}
        again = {s["sql"] for s in sent if s["step_index"] == purge.index} & before
        # Only the server's clock (each step's own cutoff) and, on MySQL, the key ranges
        # sampled below that cutoff are sent again.
        for sql in again:
            assert "localtimestamp" in sql or "NOW(" in sql or " BETWEEN " in sql, sql
        reads = " ".join(before)
        assert "indisprimary" in reads or "STATISTICS" in reads
        if dialect == "postgresql":
            assert "reltuples" in reads and "histogram_bounds" in reads


def _time_ordered(url: str, rows: int) -> None:
    """logs: ids in time order, the older half past the retention (as bench/purge.py)."""
    half, gap = rows // 2, (RETENTION + 1) * 86_400
    step = 29 * 86_400 / half
    if url.startswith("postgresql"):
        run_sql(
            url,
            "CREATE TABLE logs (id bigint PRIMARY KEY, created_at timestamp NOT NULL) "
            # Analyzed when the test says, not when autovacuum comes by.
            "WITH (autovacuum_enabled = false)",
            f"INSERT INTO logs SELECT g, localtimestamp - make_interval(secs => CASE WHEN "
            f"g <= {half} THEN {gap} + ({half} - g) * {step} ELSE ({rows} - g) * {step} + 60 "
            f"END) FROM generate_series(1, {rows}) g",
        )
    else:
        run_sql(
            url,
            "CREATE TABLE logs (id bigint PRIMARY KEY, created_at datetime(6) NOT NULL)",
            "SET SESSION max_recursive_iterations = 1000000",
            f"INSERT INTO logs WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s "
            f"WHERE g < {rows}) SELECT g, NOW(6) - INTERVAL (CASE WHEN g <= {half} THEN "
            f"{gap} + ({half} - g) * {step} ELSE ({rows} - g) * {step} + 60 END) SECOND FROM s",
        )


def _estimate(config: Config) -> dict[str, Any]:
    step = {"table": "logs", "date_column": "created_at", "retention_days": RETENTION}
    result = commands.run_job(config, "log_cleanup", step, dry_run=True)
    assert result.status == "completed", result.error
    return result.steps[0].output


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_estimates_come_close_with_statistics_and_without(dialect, home):
    with scratch_target(dialect, home) as (config, url):
        _time_ordered(url, ROWS)
        ways = []
        for analyzed in (False, True):
            if analyzed:
                _analyze(url, "logs")
            found = _estimate(config)
            ways.append(found["how"])
            assert found["estimated"]
            assert abs(found["row_count"] - ROWS) <= 0.05 * ROWS, found
            assert abs(found["older_rows"] - ROWS // 2) <= 0.05 * ROWS, found
        if dialect == "postgresql":
            # Never analyzed: a block sample; analyzed since: the statistics themselves.
            assert ways[0].startswith("a block sample") and "statistics: none" in ways[0]
            assert ways[1].startswith("PostgreSQL's statistics (ANALYZE of ")
        else:
            assert all("key ranges spread along id" in how for how in ways)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_key_with_gaps_is_not_mistaken_for_a_dense_one(dialect, home):
    """Old rows packed at ids 1..n, new rows far above: a block sample weighs the table
    by its pages; key ranges of equal width cannot, and MySQL counts instead."""
    with scratch_target(dialect, home) as (config, url):
        _time_ordered(url, ROWS)
        # Move the newer half far up the key: ids n/2+1.. become 10^9+...
        run_sql(url, f"UPDATE logs SET id = id + 1000000000 WHERE id > {ROWS // 2}")
        found = _estimate(config)
        if dialect == "postgresql":
            assert found["estimated"] and found["how"].startswith("a block sample")
        else:
            # Ranges of equal width along the key cannot weigh it: the engine's own row
            # estimate disagrees with theirs, and the table is counted instead.
            assert not found["estimated"]
        assert abs(found["older_rows"] - ROWS // 2) <= 0.1 * ROWS, found
        assert abs(found["row_count"] - ROWS) <= 0.1 * ROWS, found


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize(("unit", "kind"), [(1, "epoch"), (1000, "epoch_ms")])
def test_unix_time_in_seconds_or_milliseconds_is_told_apart(dialect, unit, kind, home):
    """Told from a sample of the column's values, not a scan of it."""
    with scratch_target(dialect, home) as (config, url):
        now = time.time()
        ages = {i: (i % 60) + 0.5 for i in range(1, 2001)}  # days, never on the cutoff
        run_sql(url, "CREATE TABLE stamps (id bigint PRIMARY KEY, at bigint NOT NULL)")
        values = ", ".join(f"({i}, {int((now - age * 86_400) * unit)})" for i, age in ages.items())
        run_sql(url, f"INSERT INTO stamps VALUES {values}")
        step = {"table": "stamps", "date_column": "at", "retention_days": RETENTION}
        result = commands.run_job(config, "log_cleanup", {**step, "batch_size": 100})
        assert result.status == "completed", result.error
        assert result.steps[0].output["date_kind"] == kind
        engine = create_engine(url)
        with engine.connect() as conn:
            kept = {r[0] for r in conn.execute(text("SELECT id FROM stamps"))}
        engine.dispose()
        assert kept == {i for i, age in ages.items() if age < RETENTION}
        sent = [s["sql"] for s in commands.run_statements(config, result.run_id)]
        assert not [sql for sql in sent if sql.startswith("SELECT max(") and "LIMIT" not in sql]
