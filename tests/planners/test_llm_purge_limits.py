"""A model's draft of a log cleanup is held to the job, as the rule-based plan is: its
purge gives the job's table, date column and retention, its max_rows and its archive,
and leaves out what the job does not give (no limit raised, no archive dropped or
added); no step changes any other table. A draft that breaks one is rejected with the
reason, sent back to the model, and, every draft rejected, the rules plan runs instead:
nothing of it deletes a row the job keeps. Against a local server speaking the Ollama
API, on the demo database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.fake_ollama import Script
from tests.helpers import query
from tests.planners.test_llm_job_limits import _answer, _drafted, _step

JOB = {"table": "app_logs", "retention_days": 90}
# The job's purge as a draft gives it, the retention as a float as a model may write it.
PURGE = {"table": "app_logs", "date_column": "created_at", "retention_days": 90.0}
OLDER = "SELECT count(*) FROM app_logs WHERE created_at < datetime('now', :days)"


def _rows(demo_db: Path, days: int) -> int:
    return int(query(demo_db, OLDER.replace(":days", "?"), f"-{days} days")[0][0])


@pytest.mark.parametrize(
    ("purge", "said"),
    [
        ({**PURGE, "retention_days": 8}, "the job says retention_days 90"),
        ({**PURGE, "date_column": "id"}, "the job says date_column created_at"),
        ({**PURGE, "max_rows": 10**8}, "the job gives no max_rows: a drafted purge may not"),
        ({**PURGE, "archive_table": "users"}, "the job gives no archive_table"),
    ],
    ids=["retention", "date column", "a limit raised", "an archive added"],
)
def test_a_drafted_purge_not_the_job_s_is_rejected_and_the_rules_plan_runs(
    llm_config: Config, demo_db: Path, script: Script, purge: dict[str, Any], said: str
) -> None:
    script.answers = [_answer(_step("delete_old_records", purge))]
    kept = _rows(demo_db, 0) - _rows(demo_db, 90)
    assert kept and _rows(demo_db, 90)  # rows on both sides of the retention
    result = commands.run_job(llm_config, "log_cleanup", JOB, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    drafted = _drafted(llm_config, result)
    assert drafted["planner"] == "rules" and drafted["fallback_from"] == "llm", drafted
    assert said in " ".join(map(str, drafted["rejected"])), drafted["rejected"]
    # The rules plan purged what the job says, and kept every younger row.
    assert _rows(demo_db, 90) == 0
    assert _rows(demo_db, 0) == kept


def test_a_drafted_purge_of_another_table_is_rejected(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    users = query(demo_db, "SELECT count(*) FROM users")
    script.answers = [_answer(_step("delete_old_records", {**PURGE, "table": "users"}))]
    result = commands.run_job(llm_config, "log_cleanup", JOB, planner="llm", approver=PreApproved())
    assert _drafted(llm_config, result)["planner"] == "rules"
    assert query(demo_db, "SELECT count(*) FROM users") == users


def test_a_drafted_purge_as_the_job_says_runs(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    script.answers = [_answer(_step("delete_old_records", PURGE))]
    kept = _rows(demo_db, 0) - _rows(demo_db, 90)
    assert kept and _rows(demo_db, 90)  # rows on both sides of the retention
    result = commands.run_job(llm_config, "log_cleanup", JOB, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    assert _drafted(llm_config, result)["planner"] == "llm"
    assert [s.tool for s in result.steps] == ["delete_old_records"]
    assert _rows(demo_db, 90) == 0 and _rows(demo_db, 0) == kept


def test_a_drafted_log_cleanup_without_a_purge_is_rejected(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    """Counts alone would complete, and read as the purge done: the rules plan runs."""
    count = {"table": "app_logs", "date_column": "created_at", "retention_days": 90}
    script.answers = [_answer(_step("count_table_rows", count))]
    result = commands.run_job(llm_config, "log_cleanup", JOB, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    drafted = _drafted(llm_config, result)
    assert drafted["planner"] == "rules" and drafted["fallback_from"] == "llm", drafted
    said = " ".join(map(str, drafted["rejected"]))
    assert "the plan leaves out delete_old_records" in said, said
    assert _rows(demo_db, 90) == 0
