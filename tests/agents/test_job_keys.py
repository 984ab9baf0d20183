"""A job given through the Python API is taken whole or refused whole: a key no agent
knows (a misspelt archive, a flag of another agent) is an error before anything runs,
never a job run without it."""

from __future__ import annotations

import pytest

from aishell import commands
from aishell.config.options import BACKUP_RETENTION_DAYS, KEEP_LAST
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved
from tests.helpers import digest, query

PURGE = {"table": "app_logs", "retention_days": 30}


@pytest.mark.parametrize(
    ("agent", "job", "unknown"),
    [
        # The purge would delete the rows without keeping them anywhere.
        ("log_cleanup", {**PURGE, "archive_table": "app_logs_old"}, "'archive_table'"),
        ("log_cleanup", {**PURGE, "archive_file": "/tmp/kept.jsonl"}, "'archive_file'"),
        ("log_cleanup", {**PURGE, "retention": 3650}, "'retention'"),
        ("log_cleanup", {**PURGE, "dry_run": True}, "'dry_run'"),
        # Maintenance of every table instead of the one named.
        ("maintenance", {"type": "quick", "table": "app_logs"}, "'table'"),
        ("maintenance", {"type": "quick", "rebuild_index": False}, "'rebuild_index'"),
        # A backup that would go unverified, or keep what it was told to delete.
        ("backup", {"type": "full", "verified": False}, "'verified'"),
        ("backup", {"type": "full", "cleanup": True, "keep": 5}, "'keep'"),
    ],
)
def test_an_unknown_job_key_is_refused_before_a_run(demo_db, config, agent, job, unknown):
    before = digest(demo_db)
    with pytest.raises(UsageError, match=f"has no key {unknown}; it takes: "):
        commands.run_job(config, agent, job)
    assert digest(demo_db) == before and commands.list_runs(config) == []


def test_every_unknown_key_is_named_at_once(demo_db, config):
    with pytest.raises(UsageError, match="has no keys 'archive_table', 'batch'; "):
        commands.run_job(config, "log_cleanup", {**PURGE, "batch": 10, "archive_table": "x"})


def test_a_schedule_with_an_unknown_key_is_refused_when_added(demo_db, config):
    with pytest.raises(UsageError, match="has no key 'archive_table'"):
        commands.add_schedule(
            config,
            "purge-nightly",
            "0 3 * * *",
            "UTC",
            ["log-cleanup"],
            "log_cleanup",
            {**PURGE, "archive_table": "kept"},
            None,
            {},
        )
    assert commands.list_schedules(config) == []


@pytest.mark.parametrize("tables", ["app_logs", ["app_logs", 3]])
def test_maintenance_tables_must_be_a_list_of_names(demo_db, config, tables):
    with pytest.raises(UsageError, match="^--tables: .* is not a list of table names$"):
        commands.run_job(config, "maintenance", {"type": "quick", "tables": tables})


def test_the_keys_the_command_line_gives_are_taken(demo_db, config, tmp_path):
    """Every key each agent lists runs: the refusal names no key a real job uses."""
    archive = tmp_path / "archive" / "kept.jsonl"
    job = {
        **PURGE,
        "date_column": "created_at",
        "max_rows": 10,
        "archive_to": f"file:{archive}",
        "batch_size": 5,
        "max_batch_size": 10,
        "max_batch_ms": 100,
        "sleep_ms": 0,
        "run_time_seconds": 60,
        "statistics_after_rows": 1000,
    }
    before = query(demo_db, "SELECT count(*) FROM app_logs")[0][0]
    result = commands.run_job(config, "log_cleanup", job, approver=PreApproved())
    assert result.status == "completed", result.error
    kept = archive.read_text().splitlines()
    assert len(kept) == 10
    assert query(demo_db, "SELECT count(*) FROM app_logs")[0][0] == before - 10
    assert (
        commands.run_job(
            config,
            "maintenance",
            {"type": "quick", "tables": ["app_logs"], "rebuild_indexes": False},
        ).status
        == "completed"
    )


def test_a_backup_cleanup_given_no_keep_last_keeps_what_the_command_line_keeps(demo_db, config):
    """A job from the API, a schedule or a plan that leaves keep_last out keeps as many
    newest backups as `run backup --cleanup` does by default, never fewer."""
    plan = commands.make_plan(config, "backup", {"type": "full", "cleanup": True})
    cleanup = next(s for s in plan.steps if s.tool == "cleanup_old_backups")
    assert cleanup.params["keep_last"] == KEEP_LAST.default == 3
    assert cleanup.params["retention_days"] == BACKUP_RETENTION_DAYS.default
