"""optimize_table on MySQL and MariaDB told to leave the statistics (update_stats:
false): every rebuild of a table recalculates them, so nothing is rebuilt."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.agents.test_update_stats_honoured import _innodb_rows
from tests.helpers import one_step_plan, run_sql, use_target


def test_mariadb_optimize_table_told_to_leave_statistics_rebuilds_nothing(
    home: Path, mysql_url: str
) -> None:
    run_sql(
        mysql_url,
        "CREATE TABLE events (id int PRIMARY KEY, body varchar(200)) "
        "ENGINE=InnoDB STATS_AUTO_RECALC=0",
        "INSERT INTO events SELECT seq, repeat('x', 200) FROM seq_1_to_4000",
        "ANALYZE TABLE events",
        "DELETE FROM events WHERE id % 4 <> 0",
    )
    config = use_target(home, mysql_url)
    counted = _innodb_rows(mysql_url, "events")
    params = {"tables": ["events"], "fragmentation_threshold": 0, "update_stats": False}
    plan = one_step_plan("maintenance", "db", "mysql", "optimize_table", params)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    [done] = result.steps[0].output["by_table"]
    assert done["vacuumed"] is False and "update_stats is false" in done["reason"]
    assert _innodb_rows(mysql_url, "events") == counted
