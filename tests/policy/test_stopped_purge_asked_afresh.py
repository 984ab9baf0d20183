"""A purge stopped at max_share, as it is shown and asked about again: the count of the
old rows left that its stop sends is among the statements its preview showed, and a
resume's question says how many old rows are left now (not the count its stop made
before rows grew old meanwhile), so that one yes there covers what it says. The line a
run waiting for it ends with names the step's number, which a plain `aishell approve
RUN` refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import NonInteractive, PreApproved
from tests.handlers.purge.test_purge_share_property import (
    PURGE,
    _job,
    _share_config,
    _skewed_for_32_samples,
    build,
    ids_in,
)
from tests.handlers.purge.test_purge_shows_what_it_reads import _shape
from tests.helpers import run_sql
from tests.policy.test_approval_after_a_stop import (
    _old_rows,
    _stopped_at_the_limit,
    resumed_with_yes,
)


def test_the_count_of_what_is_left_at_a_stop_was_shown(home: Path, pg_url: str) -> None:
    config, run = _stopped_at_the_limit(home, pg_url, "shown_left")
    shown = {_shape(sql) for sql in commands.show_run(config, run.run_id)["steps"][PURGE]["sql"]}
    sent = [
        s["sql"]
        for s in commands.run_statements(config, run.run_id)
        if s["step_index"] == PURGE and s["attempt"] >= 1 and "shown_left" in s["sql"]
    ]
    assert any("aishell_left" in sql for sql in sent), sent  # the stop counted what is left
    unshown = [sql for sql in sent if _shape(sql) not in shown]
    assert not unshown, (unshown, sorted(shown))


def test_a_stopped_purge_asked_again_says_the_old_rows_left_now(home: Path, pg_url: str) -> None:
    config, run = _stopped_at_the_limit(home, pg_url, "left_now")
    # 400 old rows left at the stop; 90 young rows grow old before anyone answers.
    run_sql(
        pg_url,
        "UPDATE left_now SET created_at = localtimestamp - interval '60 days' WHERE id <= 990",
    )
    done, asked = resumed_with_yes(config, run.run_id)
    assert len(asked) == 1, asked  # one question, whose yes covers what it said
    assert any("490 rows older than the cutoff are left" in r for r in asked[0]), asked
    assert not any("400 rows older" in r for r in asked[0]), asked
    assert done.status == "completed", done.error
    assert _old_rows(pg_url, "left_now") == 0
    assert len(ids_in(pg_url, "left_now")) == 10


def test_the_line_a_stopped_purge_waits_with_names_its_step(home: Path, pg_url: str) -> None:
    _config, run = _stopped_at_the_limit(home, pg_url, "hinted")
    runner = CliRunner()
    resumed = runner.invoke(cli, ["resume", run.run_id, "--non-interactive"])
    assert resumed.exit_code == 3, resumed.output
    assert f"`aishell approve {run.run_id} --step {PURGE}`" in resumed.output, resumed.output
    assert f"`aishell approve {run.run_id}`," not in resumed.output, resumed.output
    # What it names does what is needed; the plain command does not.
    plain = runner.invoke(cli, ["approve", run.run_id])
    assert plain.exit_code == 2 and f"--step {PURGE}" in plain.stderr, plain.output
    named = runner.invoke(cli, ["approve", run.run_id, "--step", str(PURGE)])
    assert named.exit_code == 0, named.output


def test_mariadb_a_stopped_purge_asked_again_says_the_old_rows_left_now(
    home: Path, mysql_url: str
) -> None:
    """MariaDB: the sample missed the old rows, so the purge started unasked and stopped
    at half the table (368 old rows left); 160 young rows grow old before the resume."""
    data = _skewed_for_32_samples()
    build(mysql_url, "skewed", data)
    run_sql(mysql_url, "ANALYZE TABLE skewed")
    config = _share_config(home, mysql_url, data["max_share"])
    run = commands.run_job(config, "log_cleanup", _job("skewed"), approver=PreApproved())
    assert run.steps[PURGE].status == "waiting_approval", run.steps[PURGE].error
    assert "368 rows older than the cutoff are left" in str(run.steps[PURGE].error)
    run_sql(
        mysql_url,
        "UPDATE skewed SET created_at = NOW() - INTERVAL 60 DAY WHERE MOD(id - 1, 10000) < 5",
    )
    done, asked = resumed_with_yes(config, run.run_id)
    assert len(asked) == 1, asked
    assert any("528 rows older than the cutoff are left" in r for r in asked[0]), asked
    assert done.status == "completed", done.error
    # The rows that never grew old are all kept; the purge goes on from its checkpoint,
    # so of those grown old it deletes the ones ahead of it.
    kept = ids_in(mysql_url, "skewed")
    young = {k for k, age in zip(data["keys"], data["ages"], strict=True) if age == 2}
    assert {k for k in young if (k - 1) % 10_000 >= 5} <= kept
    assert not kept - young


def test_a_plain_approve_names_the_step_that_still_waits_for_its_own(
    home: Path, demo_db: Any
) -> None:
    """SQLite: a purge over max_share waits for its own approval beside a step any
    approval covers; `aishell approve RUN` approves that one and names the command the
    purge still needs."""
    purge = {"table": "app_logs", "date_column": "created_at", "retention_days": 1}
    steps = (
        Step("step_0", "delete_old_records", purge),
        Step("step_1", "optimize_table", {"table": "orders", "fragmentation_threshold": 0}),
    )
    plan = Plan("maintenance", "demo", "sqlite", {}, steps)
    config = load_config(home=home)
    waiting = commands.apply_plan(config, plan, approver=NonInteractive(), safety_level="strict")
    assert [s.status for s in waiting.steps] == ["waiting_approval"] * 2, waiting.steps
    approved = CliRunner().invoke(cli, ["approve", waiting.run_id])
    assert approved.exit_code == 0, approved.output
    assert "step(s) 1 optimize_table" in approved.output, approved.output
    assert (
        f"step 0 delete_old_records still waits for its own approval: "
        f"`aishell approve {waiting.run_id} --step 0`"
    ) in approved.output, approved.output
