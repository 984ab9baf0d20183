"""A log cleanup's count makes the cutoff and reads it in its session's time zone (on
MariaDB a TIMESTAMP column is compared with the cutoff as that zone reads it); its
purge, run later from a session in another zone (a run resumed after its approval
waited, with the target's time_zone set otherwise meanwhile), would read the same text
as another moment: other rows than counted would go. The purge is refused before any
batch, in one line naming both zones, whichever way the zone moved; in the count's zone
it goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved
from tests.handlers.purge.test_cutoff_time_zone import JOB, _logs, _rows, _zoned


def _production(home: Path, url: str, zone: str) -> Config:
    """The target `db` in production (its purge waits for a person's approval), every
    session's time_zone set to `zone`."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": _zoned(url, zone), "environment": "production"}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def _counted_then_waiting(home: Path, url: str, zone: str) -> str:
    _logs(url)
    first = commands.run_job(_production(home, url, zone), "log_cleanup", JOB)
    assert first.status == "waiting_approval", first.error
    count = first.steps[0].output
    assert count is not None and count["cutoff_zone"] == zone
    return first.run_id


@pytest.mark.parametrize(("counted", "purged"), [("+00:00", "+05:00"), ("+05:00", "-03:00")])
def test_a_purge_in_another_zone_than_its_count_is_refused(
    home: Path, mysql_url: str, counted: str, purged: str
) -> None:
    run_id = _counted_then_waiting(home, mysql_url, counted)
    config = _production(home, mysql_url, purged)
    result = commands.resume_run(config, run_id, approver=PreApproved())
    assert result.status != "completed"
    error = result.steps[1].error or ""
    assert f"time zone {counted} (the count that made it)" in error, error
    assert f"this session reads it in time zone {purged}" in error, error
    assert "\n" not in error
    assert _rows(mysql_url) == 50


def test_a_purge_in_its_count_s_zone_goes_on(home: Path, mysql_url: str) -> None:
    run_id = _counted_then_waiting(home, mysql_url, "+05:00")
    config = _production(home, mysql_url, "+05:00")
    result = commands.resume_run(config, run_id, approver=PreApproved())
    assert result.status == "completed", result.error
    assert result.steps[1].output is not None
    assert result.steps[1].output["cutoff_zone"] == "+05:00"
    assert _rows(mysql_url) == 30
