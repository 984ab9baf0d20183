"""A MariaDB repair asked about, approved, and resumed in a later second: the copy it
makes aside is named after its run, so the statements sent are the ones approved (named
after the second the step was shown, the resume's differed, and the approval no longer
covered them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from aishell import commands
from tests.helpers import one_step_plan, run_sql, use_target


def test_a_repair_approved_then_resumed_later_sends_what_was_approved(
    home: Path, mysql_url: str
) -> None:
    run_sql(
        mysql_url,
        "CREATE TABLE events (id int PRIMARY KEY, k int) ENGINE=InnoDB",
        "INSERT INTO events SELECT seq, seq % 7 FROM seq_1_to_50",
    )
    config = use_target(home, mysql_url)
    plan = one_step_plan(
        "maintenance", "db", "mysql", "repair_corrupted_tables", {"tables": ["events"]}
    )
    waiting = commands.apply_plan(config, plan)
    assert waiting.status == "waiting_approval", waiting.error
    asked: list[Any] = waiting.steps[0].sql
    commands.decide_steps(config, waiting.run_id, "approved", step=0)
    time.sleep(1.1)  # the resume is in a later second than the question
    result = commands.resume_run(config, waiting.run_id)
    step = result.steps[0]
    assert result.status == "completed", (result.error, step.error)
    assert step.sql == asked
    copy = f"events_aishell_bak_{waiting.run_id}"
    assert step.output["backup_tables"] == [copy]
    engine = create_engine(mysql_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM `{copy}`")).scalar_one() == 50
    engine.dispose()
