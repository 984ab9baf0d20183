"""--no-update-stats on every engine: no step of the run refreshes the planner
statistics, and the plan shows the statements that run. PostgreSQL compacts with a
plain VACUUM; SQLite's VACUUM and REINDEX leave sqlite_stat1 as it was; on MariaDB,
where every rebuild of a table recalculates its statistics, full maintenance without
them is refused in one line."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target
from tests.services import engine


def _pg_counts(url: str, table: str) -> tuple[int, int]:
    """The table's (vacuum_count, analyze_count), as the server counts them now."""
    with engine(url).connect() as conn:
        row = conn.execute(
            text("SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": table},
        ).one()
    return int(row[0]), int(row[1])


def _pg_events(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE events (id int PRIMARY KEY, body text)",
        "INSERT INTO events SELECT g, repeat('x', 80) FROM generate_series(1, 3000) g",
        "ANALYZE events",
        "DELETE FROM events WHERE id % 2 = 0",
    )


def _statements(preview: Any, tool: str) -> list[str]:
    return [sql for s in preview.steps if s.tool == tool for sql in s.sql]


def test_postgresql_full_maintenance_vacuums_without_analyze(home: Path, pg_url: str) -> None:
    _pg_events(pg_url)
    config = use_target(home, pg_url)
    job = {"type": "full", "tables": ["events"], "update_stats": False}
    preview = commands.plan_job(config, "maintenance", job)
    assert _statements(preview, "optimize_table") == ['VACUUM "events"']
    [step] = [s for s in preview.steps if s.tool == "optimize_table"]
    assert "statistics" not in step.rationale
    before = _pg_counts(pg_url, "events")
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    vacuums, analyzes = _pg_counts(pg_url, "events")
    assert (vacuums, analyzes) == (before[0] + 1, before[1])
    [done] = [s for s in result.steps if s.tool == "optimize_table"]
    assert done.output["vacuumed"] is True
    assert done.output["statistics_updated"] is False
    assert result.steps[-1].output.get("statistics_updated", 0) == 0


def test_postgresql_full_maintenance_with_statistics_still_analyzes(
    home: Path, pg_url: str
) -> None:
    _pg_events(pg_url)
    config = use_target(home, pg_url)
    job = {"type": "full", "tables": ["events"]}
    preview = commands.plan_job(config, "maintenance", job)
    assert _statements(preview, "optimize_table") == ['VACUUM (ANALYZE) "events"']
    before = _pg_counts(pg_url, "events")
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    assert _pg_counts(pg_url, "events") == (before[0] + 1, before[1] + 1)


def test_the_dry_run_shows_the_plain_vacuum(home: Path, pg_url: str) -> None:
    _pg_events(pg_url)
    use_target(home, pg_url)
    args = ["run", "maintenance", "--type", "full", "--tables", "events", "--dry-run"]
    shown = CliRunner().invoke(cli, [*args, "--no-update-stats"])
    assert shown.exit_code == 0, shown.output
    assert 'VACUUM "events"' in shown.output
    assert "VACUUM (ANALYZE)" not in shown.output


def _sqlite_stats(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT tbl, idx, stat FROM sqlite_stat1").fetchall())
    finally:
        conn.close()


def test_sqlite_full_maintenance_leaves_its_statistics(config: Any, demo_db: Path) -> None:
    conn = sqlite3.connect(demo_db)
    conn.execute("ANALYZE")
    # Rows the statistics do not count yet, and free pages for VACUUM to return.
    conn.execute("INSERT INTO orders SELECT * FROM orders WHERE 0")
    conn.execute("DELETE FROM orders WHERE rowid % 3 = 0")
    conn.commit()
    conn.close()
    stats = _sqlite_stats(demo_db)
    assert stats
    job = {"type": "full", "update_stats": False}
    preview = commands.plan_job(config, "maintenance", job)
    assert not [sql for s in preview.steps for sql in s.sql if "ANALYZE" in sql.upper()]
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    assert _sqlite_stats(demo_db) == stats


def _innodb_rows(url: str, table: str) -> int:
    with engine(url).connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT n_rows FROM mysql.innodb_table_stats "
                    "WHERE database_name = DATABASE() AND table_name = :t"
                ),
                {"t": table},
            ).scalar_one()
        )


def test_mariadb_full_maintenance_without_statistics_is_refused(home: Path, mysql_url: str) -> None:
    run_sql(mysql_url, "CREATE TABLE events (id int PRIMARY KEY) ENGINE=InnoDB")
    config = use_target(home, mysql_url)
    with pytest.raises(UsageError) as refused:
        commands.plan_job(config, "maintenance", {"type": "full", "update_stats": False})
    assert str(refused.value) == (
        "On MySQL and MariaDB a table's rebuild (OPTIMIZE TABLE, ALTER TABLE ... FORCE) "
        "recalculates its statistics, so full maintenance cannot leave them as they are; "
        "use --type standard, or drop --no-update-stats"
    )
    shown = CliRunner().invoke(cli, ["run", "maintenance", "--type", "full", "--no-update-stats"])
    assert shown.exit_code == 2
    assert shown.output.strip().splitlines() == [f"Error: {refused.value}"]


def test_mariadb_standard_maintenance_leaves_its_statistics(home: Path, mysql_url: str) -> None:
    run_sql(
        mysql_url,
        "CREATE TABLE events (id int PRIMARY KEY, body varchar(80)) "
        "ENGINE=InnoDB STATS_AUTO_RECALC=0",
        "INSERT INTO events SELECT seq, repeat('x', 80) FROM seq_1_to_2000",
        "ANALYZE TABLE events",
        "DELETE FROM events WHERE id % 2 = 0",
    )
    config = use_target(home, mysql_url)
    counted = _innodb_rows(mysql_url, "events")
    job = {"type": "standard", "update_stats": False}
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    assert _innodb_rows(mysql_url, "events") == counted
