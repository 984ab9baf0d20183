"""A model's draft of a log cleanup gives its purge a cutoff only as an earlier count's,
with that same count's whole output (`counted`: the time zone the cutoff was read in),
or gives neither and the purge reads its own cutoff. A draft that gives one without the
other, a cutoff of its own making, or the two from different steps is rejected when it
is vetted, with the reason, and the rules plan runs instead.

Before, such a draft passed the vetting: on a MariaDB TIMESTAMP column its purge was
refused only when its step began, and the run failed where the rules plan would have
done the job. Against a local server speaking the Ollama API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.fake_ollama import Script
from tests.handlers.purge.test_cutoff_time_zone import JOB as ZONED_JOB
from tests.handlers.purge.test_cutoff_time_zone import _logs, _rows, _zoned
from tests.helpers import use_target
from tests.planners.conftest import one_try
from tests.planners.test_llm_job_limits import _answer, _drafted, _step
from tests.planners.test_llm_purge_limits import JOB, PURGE
from tests.planners.test_llm_purge_limits import _rows as _older_rows

COUNT = {"table": "app_logs", "date_column": "created_at", "retention_days": 90, "estimate": True}
CUTOFF = "${step_0.output.cutoff}"
COUNTED = "${step_0.output}"


def _counts_then(purge: dict[str, Any], counts: int = 1) -> dict[str, Any]:
    return _answer(*[_step("count_table_rows", COUNT)] * counts, _step("delete_old_records", purge))


@pytest.mark.parametrize(
    ("purge", "counts"),
    [
        ({**PURGE, "cutoff": CUTOFF}, 1),
        ({**PURGE, "counted": COUNTED}, 1),
        ({**PURGE, "cutoff": "2001-01-01 00:00:00", "counted": COUNTED}, 1),
        ({**PURGE, "cutoff": CUTOFF, "counted": "${step_1.output}"}, 2),
        ({**PURGE, "cutoff": CUTOFF, "counted": "${step_0.output.cutoff_zone}"}, 1),
        ({**PURGE, "cutoff": CUTOFF, "counted": f"{COUNTED} "}, 1),
        ({**PURGE, "cutoff": "${step_0.output.older_rows}", "counted": COUNTED}, 1),
    ],
    ids=[
        "cutoff without counted",
        "counted without cutoff",
        "a cutoff of its own",
        "from two counts",
        "a key for the whole output",
        "not one whole reference",
        "another key for the cutoff",
    ],
)
def test_a_cutoff_not_with_its_own_count_is_rejected_and_the_rules_plan_runs(
    llm_config: Config, demo_db: Path, script: Script, purge: dict[str, Any], counts: int
) -> None:
    script.answers = [_counts_then(purge, counts)]
    kept = _older_rows(demo_db, 0) - _older_rows(demo_db, 90)
    result = commands.run_job(llm_config, "log_cleanup", JOB, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    drafted = _drafted(llm_config, result)
    assert drafted["planner"] == "rules" and drafted["fallback_from"] == "llm", drafted
    said = " ".join(map(str, drafted["rejected"]))
    assert "gives a cutoff only as an earlier count_table_rows step's" in said, said
    assert _older_rows(demo_db, 90) == 0 and _older_rows(demo_db, 0) == kept


def test_a_cutoff_with_its_own_count_runs_as_drafted(
    llm_config: Config, demo_db: Path, script: Script
) -> None:
    script.answers = [_counts_then({**PURGE, "cutoff": CUTOFF, "counted": COUNTED})]
    kept = _older_rows(demo_db, 0) - _older_rows(demo_db, 90)
    result = commands.run_job(llm_config, "log_cleanup", JOB, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    assert _drafted(llm_config, result)["planner"] == "llm"
    assert [s.tool for s in result.steps] == ["count_table_rows", "delete_old_records"]
    assert _older_rows(demo_db, 90) == 0 and _older_rows(demo_db, 0) == kept


def test_a_timestamp_purge_drafted_without_its_count_is_rejected_before_it_runs(
    home: Path, mysql_url: str, edit_config: Any, ollama_host: str, script: Script
) -> None:
    """The case the purge's own refusal catches when its step begins: here the draft is
    rejected first, and the rules plan purges in the count's zone."""
    _logs(mysql_url)
    use_target(home, _zoned(mysql_url, "+05:00"))
    config = edit_config(one_try(ollama_host))
    count = {**ZONED_JOB, "estimate": True}
    purge = {**ZONED_JOB, "retention_days": 30.0, "cutoff": CUTOFF}
    script.answers = [_answer(_step("count_table_rows", count), _step("delete_old_records", purge))]
    result = commands.run_job(
        config, "log_cleanup", ZONED_JOB, planner="llm", approver=PreApproved()
    )
    assert result.status == "completed", result.error
    assert _drafted(config, result)["planner"] == "rules"
    assert _rows(mysql_url) == 30
