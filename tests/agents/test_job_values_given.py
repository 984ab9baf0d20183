"""A job's value given through the Python API, a schedule or a plan is taken as given or
refused in one line naming its flag: an empty date column, max_rows 0, "no" for a flag
are never read as absent and replaced by the default. Only a key left out (or None)
takes the default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved
from tests.helpers import digest, query, run_sql

PURGE = {"table": "app_logs", "retention_days": 30}


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"date_column": ""}, "--date-column: '' is not a non-empty text"),
        ({"date_column": 5}, "--date-column: 5 is not a non-empty text"),
        ({"max_rows": 0}, "--max-rows: 0 is not a whole number from 1"),
        ({"max_rows": 2.5}, "--max-rows: 2.5 is not a whole number"),
        ({"batch_size": 2.5}, "--batch-size: 2.5 is not a whole number"),
        ({"batch_size": 0}, "--batch-size: 0 is not a whole number from 1 to 1,000,000"),
        ({"retention_days": "30"}, "--retention-days: '30' is not a finite number from 0"),
        ({"sleep_ms": True}, "--sleep-ms: True is not a finite number from 0"),
        ({"walk": ""}, "--walk: '' is not one of: auto, pages, keys"),
        ({"archive_to": ""}, "--archive-to: '' is not file:PATH or table:NAME"),
        ({"table": ""}, "--table: '' is not a non-empty text"),
        ({"run_time_seconds": 0}, "--run-time: 0 is not a finite number from 1"),
    ],
)
def test_a_purge_value_given_but_invalid_is_refused_not_defaulted(
    demo_db: Path, config: Config, given: dict[str, Any], said: str
) -> None:
    before = digest(demo_db)
    for make in (commands.make_plan, commands.run_job):
        with pytest.raises(UsageError) as refused:
            make(config, "log_cleanup", {**PURGE, **given})
        assert str(refused.value).startswith(said) and "\n" not in str(refused.value)
    assert digest(demo_db) == before and commands.list_runs(config) == []


def test_max_rows_zero_is_not_a_purge_without_limit(demo_db: Path, config: Config) -> None:
    """Read as absent, max_rows 0 took the config's (no limit) and purged every old row."""
    before = query(demo_db, "SELECT count(*) FROM app_logs")[0][0]
    with pytest.raises(UsageError, match="^--max-rows: 0 "):
        commands.run_job(config, "log_cleanup", {**PURGE, "max_rows": 0}, approver=PreApproved())
    assert query(demo_db, "SELECT count(*) FROM app_logs")[0][0] == before


def test_a_key_left_out_or_none_takes_the_config(demo_db: Path, config: Config) -> None:
    for job in (PURGE, {**PURGE, "date_column": None, "max_rows": None}):
        step = commands.make_plan(config, "log_cleanup", job).steps[1]
        assert step.params["date_column"] == config.agent("log_cleanup").purge.date_column
        assert "max_rows" not in step.params


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"verify": "no"}, "--verify/--no-verify: 'no' is not true or false"),
        ({"quick": 0}, "--quick: 0 is not true or false"),
        ({"cleanup": "yes"}, "--cleanup: 'yes' is not true or false"),
        ({"cleanup": True, "keep_last": 0}, "--keep-last: 0 is not a whole number from 1"),
        ({"cleanup": True, "retention_days": -1}, "--retention-days: -1 is not a finite number"),
        ({"lock_wait_seconds": 0}, "--lock-wait: 0 is not a finite number from 1 to 86,400"),
        ({"type": ""}, "--type: '' is not one of: full, incremental, drill"),
    ],
)
def test_a_backup_value_given_but_invalid_is_refused(
    demo_db: Path, config: Config, given: dict[str, Any], said: str
) -> None:
    for make in (commands.make_plan, commands.run_job):
        with pytest.raises(UsageError) as refused:
            make(config, "backup", {"type": "full", **given})
        assert str(refused.value).startswith(said), refused.value
    assert commands.list_backups(config) == [] and commands.list_runs(config) == []


def test_a_backup_key_left_out_or_none_takes_the_default(demo_db: Path, config: Config) -> None:
    for job in ({}, {"type": None, "verify": None}):
        plan = commands.make_plan(config, "backup", job)
        assert [s.tool for s in plan.steps][-1] == "validate_backup"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"rebuild_indexes": "no"}, "--no-rebuild-indexes: 'no' is not true or false"),
        ({"rebuild_indexes": 0}, "--no-rebuild-indexes: 0 is not true or false"),
        ({"update_stats": "false"}, "--update-stats/--no-update-stats: 'false' is not true or"),
        ({"type": ""}, "--type: '' is not one of: quick, standard, full, emergency"),
        ({"type": "weekly"}, "--type: 'weekly' is not one of: quick, standard, full, emergency"),
        ({"tables": "orders"}, "--tables: 'orders' is not a list of table names"),
        ({"tables": ["orders", 3]}, "--tables: ['orders', 3] is not a list of table names"),
        ({"tables": [" "]}, "--tables was given but names no table"),
    ],
)
def test_a_maintenance_value_given_but_invalid_is_refused(
    demo_db: Path, config: Config, given: dict[str, Any], said: str
) -> None:
    """ "no" for --no-rebuild-indexes was read as true, and the run rebuilt the indexes."""
    before = digest(demo_db)
    for make in (commands.make_plan, commands.run_job):
        with pytest.raises(UsageError) as refused:
            make(config, "maintenance", {"type": "full", **given})
        assert str(refused.value).startswith(said), refused.value
        assert "\n" not in str(refused.value)
    assert digest(demo_db) == before and commands.list_runs(config) == []


def test_a_maintenance_key_left_out_or_none_takes_the_default(
    demo_db: Path, config: Config
) -> None:
    """`type: None` was refused as an unknown type, not read as left out."""
    given = {"type": None, "tables": None, "rebuild_indexes": None, "update_stats": None}
    for job in ({}, given):
        plan = commands.make_plan(config, "maintenance", job)
        assert plan.job == {
            "type": "standard",
            "tables": None,
            "rebuild_indexes": True,
            "update_stats": True,
        }
    full = commands.make_plan(config, "maintenance", {"type": "full", "rebuild_indexes": None})
    assert "rebuild_fragmented_indexes" in [s.tool for s in full.steps]


def test_a_maintenance_value_from_a_server_job_is_refused_before_it_runs(
    server_config: Config, server_url: str
) -> None:
    """On PostgreSQL and MariaDB too: "no" does not rebuild, and nothing runs."""
    run_sql(server_url, "CREATE TABLE kept (id int PRIMARY KEY)")
    job = {"type": "full", "tables": ["kept"], "rebuild_indexes": "no"}
    with pytest.raises(UsageError, match="^--no-rebuild-indexes: 'no' is not true or false$"):
        commands.run_job(server_config, "maintenance", job, approver=PreApproved())
    assert commands.list_runs(server_config) == []
