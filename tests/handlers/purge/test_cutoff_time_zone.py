"""On MariaDB a TIMESTAMP column is compared with a cutoff read in the session's
time_zone: the preview, the estimate and the step's figures name that zone beside the
cutoff, and a DELETE whose session compares in another zone than the one shown is
refused before it deletes anything."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.render.figures import step_figures
from aishell.risk import RiskLevel
from tests.helpers import run_sql, use_target


def _zoned(url: str, zone: str) -> str:
    """The target's URL with every session's time_zone set to `zone`."""
    command = quote(f"SET time_zone = '{zone}'")
    return f"{url}?init_command={command}"


def _logs(url: str) -> None:
    run_sql(url, "CREATE TABLE logs (id integer PRIMARY KEY, at timestamp(6) NULL)")
    # 20 old rows, 30 of late 2037 that stay (TIMESTAMP ends in 2038).
    values = ", ".join(
        f"({i}, '{'2001-01-01 00:00:00' if i <= 20 else '2037-01-01 00:00:00'}')"
        for i in range(1, 51)
    )
    run_sql(url, f"INSERT INTO logs VALUES {values}")


def _rows(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT count(*) FROM logs")).scalar_one())
    engine.dispose()
    return count


JOB = {"table": "logs", "date_column": "at", "retention_days": 30}


def test_the_zone_is_shown_beside_the_cutoff(home: Path, mysql_url: str) -> None:
    _logs(mysql_url)
    config = use_target(home, _zoned(mysql_url, "+05:00"))
    preview = commands.plan_job(config, "log_cleanup", JOB)
    count, purge = preview.steps[0], preview.steps[1]
    assert purge.estimate is not None and purge.estimate["cutoff_zone"] == "+05:00"
    result = commands.run_job(config, "log_cleanup", JOB, approver=PreApproved())
    assert result.status == "completed", result.error
    outputs = [s.output for s in result.steps]
    assert outputs[0]["cutoff_zone"] == "+05:00"
    assert outputs[1]["cutoff_zone"] == "+05:00"
    assert f"{outputs[1]['cutoff']} in time zone +05:00" in step_figures(outputs[1])
    assert f"{outputs[0]['cutoff']} in time zone +05:00" in step_figures(outputs[0])
    assert count is not None and _rows(mysql_url) == 30


def test_a_plan_previewed_in_another_zone_is_refused(home: Path, mysql_url: str) -> None:
    """A plan previewed where sessions read times at +00:00, applied where they read
    them at +05:00: the same cutoff text is five hours later there, so the purge is
    refused before its first batch (the database itself reads the same from either)."""
    _logs(mysql_url)
    previewed = use_target(home, _zoned(mysql_url, "+00:00"))
    out = home / "plan.json"
    commands.plan_job(previewed, "log_cleanup", JOB, out=out)
    plan = commands.load_plan_file(out).plan
    assert plan.reviewed["estimates"]["step_1"]["cutoff_zone"] == "+00:00"
    applied = use_target(home, _zoned(mysql_url, "+05:00"))
    result = commands.apply_plan(applied, out, approver=PreApproved())
    assert result.status != "completed"
    error = result.steps[1].error or ""
    assert "time zone +00:00 (the saved plan's preview)" in error, error
    assert "reads it in time zone +05:00" in error, error
    assert _rows(mysql_url) == 50


def test_code_that_moves_the_session_zone_rolls_the_batch_back(home: Path, mysql_url: str) -> None:
    """A DELETE trigger that sets the session's time_zone: the rest of the purge would
    read its cutoff in another zone than shown; the batch is rolled back."""
    _logs(mysql_url)
    run_sql(
        mysql_url,
        "CREATE TRIGGER logs_zone BEFORE DELETE ON logs FOR EACH ROW SET time_zone = '+09:00'",
    )
    config = use_target(home, _zoned(mysql_url, "+05:00"))
    result = commands.run_job(
        config, "log_cleanup", JOB, approver=PreApproved(up_to=RiskLevel.HIGH)
    )
    assert result.status != "completed"
    purge = result.steps[1]
    assert "time zone became +09:00" in (purge.error or ""), purge
    assert _rows(mysql_url) == 50
