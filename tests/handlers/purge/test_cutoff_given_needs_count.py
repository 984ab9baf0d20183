"""A purge given a cutoff on a MariaDB TIMESTAMP column (read in the session's time
zone) without the count that read it (`counted`) cannot be held to that count's zone: a
plan that leaves it out (drafted by a model, or written by hand) is refused before any
batch, in one line saying what to give. A cutoff on a column no zone reads (DATETIME)
needs none, and a purge that reads its own cutoff runs as before.

Before, such a purge was held only to the zone of its own estimate: approved and run
from a session of another zone than the count's, it deleted by another moment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from aishell import commands
from aishell.plan.model import Plan
from aishell.policy.approvers import PreApproved
from tests.handlers.purge.test_cutoff_time_zone import JOB, _logs, _rows, _zoned
from tests.helpers import run_sql, use_target


def _without_counted(plan: Plan) -> Plan:
    """The log cleanup's plan, its purge given the count's cutoff but not the count."""
    count, purge, *rest = plan.steps
    params = {k: v for k, v in purge.params.items() if k != "counted"}
    assert params["cutoff"] == "${step_0.output.cutoff}"
    return replace(plan, steps=(count, replace(purge, params=params), *rest))


@pytest.mark.parametrize("zone", ["+00:00", "+05:00"])
def test_a_timestamp_cutoff_given_without_its_count_is_refused(
    home: Path, mysql_url: str, zone: str
) -> None:
    _logs(mysql_url)
    config = use_target(home, _zoned(mysql_url, zone))
    plan = _without_counted(commands.make_plan(config, "log_cleanup", JOB))
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "failed", result.status
    error = result.steps[1].error or ""
    assert "is given without the count that read it" in error, error
    assert "give `counted` with the cutoff" in error and "\n" not in error
    assert _rows(mysql_url) == 50  # nothing deleted


@pytest.mark.parametrize("drop", ["datetime", "nothing"])
def test_a_cutoff_no_zone_reads_or_a_count_given_runs(
    home: Path, mysql_url: str, drop: str
) -> None:
    _logs(mysql_url)
    if drop == "datetime":
        run_sql(mysql_url, "ALTER TABLE logs MODIFY at datetime(6) NULL")
    config = use_target(home, _zoned(mysql_url, "+05:00"))
    plan = commands.make_plan(config, "log_cleanup", JOB)
    if drop == "datetime":
        plan = _without_counted(plan)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    assert _rows(mysql_url) == 30
