"""Approvals bound to their facts.

- However the approval prompt of a step only a person may pass ends (an answer of no,
  Ctrl-C, Ctrl-D, the terminal closed, SIGTERM), the need for a named approval is in
  the store: a plain `aishell approve RUN` does not cover the step, nor does a resume
  with --yes; `aishell approve RUN --step N` does. A purge over max_share (SQLite and
  PostgreSQL) and a restore over data (SQLite).
- A step approved for one verdict is judged again on resume with the facts of then: a
  purge approved at about a third of its table, whose rows all grew old meanwhile,
  waits for approval again instead of deleting them all (SQLite, PostgreSQL, MariaDB).
- What state.db holds about a run is signed with the home's key: an edit of the plan,
  the plan hash, the tool fingerprints, an approval, or a step's status or output (what
  resume trusts) is refused on resume, approve and show with one line naming what
  changed (exit code 2). Runs stored before signing are signed at the upgrade.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import StateError, UsageError
from aishell.plan.model import Plan
from aishell.policy.approvers import NonInteractive, PreApproved
from aishell.state.store import StateStore
from tests.cli.test_cli import read_until
from tests.handlers.purge.test_log_cleanup import _database, fill, job, rows_of
from tests.helpers import digest, use_target

PURGE = 1  # the purge is the second step of a log cleanup plan
ROWS = 600


def _logs(dialect: str, home: Path) -> Iterator[tuple[Config, str]]:
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        yield use_target(home, url), url


@pytest.fixture(params=["sqlite", "postgresql"])
def purge_logs(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    yield from _logs(request.param, home)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def all_logs(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    yield from _logs(request.param, home)


def _take_terminal(ignore_hangup: bool) -> None:
    """In the child: the pty on stdin becomes its controlling terminal; with
    `ignore_hangup`, SIGHUP is ignored (as under nohup), so a closed terminal is an
    error of the read instead. Without it, SIGHUP ends the process as in a terminal
    session, whatever the tests themselves were started under (an ignored signal is
    inherited: the suite run under nohup would otherwise test the nohup case twice)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hangup else signal.SIG_DFL)


@contextmanager
def at_terminal(
    *args: str, ignore_hangup: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    """`aishell ARGS` in a pseudo-terminal that is its controlling terminal (so Ctrl-C
    is SIGINT and closing it is SIGHUP, as in a real session): (process, {"fd": the
    leader's fd}, removed once the test closed it)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aishell", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
        start_new_session=True,
        preexec_fn=lambda: _take_terminal(ignore_hangup),
    )
    os.close(follower)
    terminal = {"fd": leader}
    try:
        yield proc, terminal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if "fd" in terminal:
            os.close(terminal.pop("fd"))


def _end_prompt(proc: subprocess.Popen[bytes], terminal: dict[str, int], means: str) -> int:
    """End the question at the prompt by `means`; the process's exit status."""
    leader = terminal["fd"]
    if means == "no":
        os.write(leader, b"no\n")
    elif means == "ctrl-c":
        os.write(leader, b"\x03")
    elif means == "ctrl-d":
        os.write(leader, b"\x04")
    elif means == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif means in ("hangup", "hangup-ignored"):
        # The terminal goes away: the kernel sends SIGHUP to the session's leader.
        os.close(terminal.pop("fd"))
    if "fd" in terminal:
        read_until(leader, "aishell resume" if means != "no" else "denied")
    return proc.wait(timeout=60)


def _only_run(config: Config) -> str:
    [run] = commands.list_runs(config)
    return str(run["run_id"])


MEANS = ["no", "ctrl-c", "ctrl-d", "hangup", "sigterm"]


def test_a_terminal_closed_under_a_process_that_ignores_sighup(home: Path) -> None:
    """Under nohup the read at the prompt fails (EIO): the end of input. (What the run
    prints afterwards has nowhere to go either, and may end it as failed; the store
    keeps the step waiting for its own approval all the same.)"""
    config, url = next(_logs("sqlite", home))
    args = ("run", "log-cleanup", "--table", "events", "--retention-days", "10")
    with at_terminal(*args, ignore_hangup=True) as (proc, terminal):
        read_until(terminal["fd"], "Run this step?")
        _end_prompt(proc, terminal, "hangup-ignored")
    run = commands.show_run(config, _only_run(config))
    assert run["steps"][PURGE]["status"] == "waiting_approval"
    assert run["steps"][PURGE]["error"] == "not answered: end of input"
    with pytest.raises(UsageError, match="needs its own approval"):
        commands.decide_steps(config, run["run_id"], "approved")
    assert len(rows_of(url)) == ROWS


@pytest.mark.parametrize("means", MEANS)
def test_a_purge_over_its_limits_needs_its_own_approval_however_the_prompt_ends(
    purge_logs: tuple[Config, str], means: str
) -> None:
    config, url = purge_logs
    before = rows_of(url)
    args = ("run", "log-cleanup", "--table", "events", "--retention-days", "10")
    with at_terminal(*args) as (proc, terminal):
        shown = read_until(terminal["fd"], "Run this step?")
        assert "delete_old_records" in shown and "over max_share" in shown
        status = _end_prompt(proc, terminal, means)
    if means == "hangup":
        assert status == -signal.SIGHUP  # the closed terminal ended it at the prompt
    run_id = _only_run(config)
    purge = commands.show_run(config, run_id)["steps"][PURGE]
    assert purge["status"] == ("denied" if means == "no" else "waiting_approval"), purge
    # A plain `aishell approve RUN` does not cover it.
    expected = "has no step waiting" if means == "no" else "needs its own approval"
    with pytest.raises(UsageError, match=expected):
        commands.decide_steps(config, run_id, "approved")
    result = CliRunner().invoke(cli, ["approve", run_id])
    assert result.exit_code == 2, result.output
    if means == "no":
        assert rows_of(url) == before
        return  # a denied run is not resumed
    # Nor does a resume with --yes: the purge waits, nothing was deleted.
    resumed = commands.resume_run(config, run_id, approver=PreApproved())
    assert rows_of(url) == before
    assert resumed.status == "waiting_approval" and resumed.steps[PURGE].personal
    # Its own approval, by number, does.
    commands.decide_steps(config, run_id, "approved", step=PURGE)
    done = commands.resume_run(config, run_id, approver=PreApproved())
    assert done.status == "completed", done.error
    assert done.steps[PURGE].output["rows_deleted"] > 0


@pytest.mark.parametrize("means", ["ctrl-d", "hangup"])
def test_a_restore_over_data_needs_its_own_approval_however_the_prompt_ends(
    config: Config, demo_db: Path, means: str
) -> None:
    from tests.handlers.backup.test_restore_prechecks import sqlite_backup

    backup = sqlite_backup(config)
    before = digest(demo_db)
    restore = ("restore", str(backup["id"]), "--to", "demo", "--replace")
    with at_terminal(*restore) as (proc, terminal):
        shown = read_until(terminal["fd"], "Run this step?")
        assert "holding data in 'demo'" in shown
        _end_prompt(proc, terminal, means)
    restored = commands.list_runs(config)[0]  # the newest: the backup's run came first
    assert restored["job"]["type"] == "restore", restored
    run_id = restored["run_id"]
    with pytest.raises(UsageError, match="needs its own approval"):
        commands.decide_steps(config, run_id, "approved")
    resumed = commands.resume_run(config, run_id, approver=PreApproved())
    assert resumed.status == "waiting_approval"
    assert digest(demo_db) == before


# --- resume judges again ----------------------------------------------------------------


def _age_every_row(url: str, days: int) -> None:
    """Every row `days` older; the statistics read again where the engine keeps them."""
    engine = create_engine(url)
    dialect = engine.dialect.name
    older = {
        "sqlite": f"UPDATE events SET created_at = datetime(created_at, '-{days} days')",
        "postgresql": f"UPDATE events SET created_at = created_at - interval '{days} days'",
        "mysql": f"UPDATE events SET created_at = created_at - INTERVAL {days} DAY",
    }[dialect]
    with engine.begin() as conn:
        conn.execute(text(older))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE TABLE events" if dialect == "mysql" else "ANALYZE events"))
    engine.dispose()


def test_a_purge_approved_at_a_third_waits_when_its_share_grew(
    all_logs: tuple[Config, str],
) -> None:
    config, url = all_logs
    waiting = commands.run_job(
        config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
    )
    assert waiting.status == "waiting_approval", waiting.error
    share = waiting.steps[PURGE].estimate
    assert share is not None and share["rows_this_run"] < share["table_rows"] * 0.5
    commands.decide_steps(config, waiting.run_id, "approved")  # plain: no named need yet
    _age_every_row(url, 60)
    before = rows_of(url)
    resumed = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
    assert rows_of(url) == before  # nothing deleted
    purge = resumed.steps[PURGE]
    assert resumed.status == "waiting_approval" and purge.status == "waiting_approval"
    assert "its earlier approval no longer covers it" in str(purge.error)
    assert "-> 100%" in str(purge.error), purge.error
    # The plain approval does not cover it now: only by its number.
    with pytest.raises(UsageError, match="needs its own approval"):
        commands.decide_steps(config, waiting.run_id, "approved")


def test_resume_in_batch_mode_exits_3_naming_what_grew(home: Path) -> None:
    config, url = next(_logs("sqlite", home))
    waiting = commands.run_job(
        config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
    )
    commands.decide_steps(config, waiting.run_id, "approved")
    _age_every_row(url, 60)
    result = CliRunner().invoke(cli, ["resume", waiting.run_id, "--non-interactive"])
    assert result.exit_code == 3, result.output
    assert "share" in result.output and "-> 100%" in result.output
    assert len(rows_of(url)) == ROWS


def test_a_resume_with_the_same_facts_needs_no_second_approval(home: Path) -> None:
    config, _url = next(_logs("sqlite", home))
    waiting = commands.run_job(
        config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
    )
    commands.decide_steps(config, waiting.run_id, "approved")
    done = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
    assert done.status == "completed", done.error
    assert done.steps[PURGE].output["rows_deleted"] > 0


# --- an edited store is refused ---------------------------------------------------------


def _edit(home: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(home / "state.db")
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def _changed_plan(home: Path, run_id: str) -> None:
    """The finding: the plan changed, with its plain sha256 written beside it."""
    conn = sqlite3.connect(home / "state.db")
    try:
        (stored,) = conn.execute("SELECT plan FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        plan = json.loads(stored)
        plan["steps"][PURGE]["params"]["retention_days"] = 0
        changed = Plan.from_dict(plan)
        conn.execute(
            "UPDATE runs SET plan = ?, plan_hash = ? WHERE run_id = ?",
            (json.dumps(changed.to_dict(), sort_keys=True), changed.hash, run_id),
        )
        conn.commit()
    finally:
        conn.close()


def _changed_fingerprint(home: Path, run_id: str) -> None:
    conn = sqlite3.connect(home / "state.db")
    try:
        (stored,) = conn.execute(
            "SELECT tool_fingerprints FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        prints = {name: "0" * 64 for name in json.loads(stored)}
        conn.execute(
            "UPDATE runs SET tool_fingerprints = ? WHERE run_id = ?",
            (json.dumps(prints, sort_keys=True), run_id),
        )
        conn.commit()
    finally:
        conn.close()


EDITS = {
    "plan": (_changed_plan, "run {run}'s plan does not match its signature"),
    "plan hash": (
        lambda home, run: _edit(
            home, "UPDATE runs SET plan_hash = ? WHERE run_id = ?", "0" * 64, run
        ),
        "run {run}'s plan hash does not match its signature",
    ),
    "fingerprint": (_changed_fingerprint, "run {run}'s tool fingerprints does not match"),
    "step status": (
        lambda home, run: _edit(
            home,
            "UPDATE steps SET status = 'succeeded', output = '{}' WHERE run_id = ? AND idx = ?",
            run,
            PURGE,
        ),
        f"run {{run}}'s step {PURGE} (status) does not match its signature",
    ),
    "step output": (
        lambda home, run: _edit(
            home,
            'UPDATE steps SET output = \'{"cutoff": "2999-01-01"}\' WHERE run_id = ? AND idx = 0',
            run,
        ),
        "run {run}'s step 0 (output) does not match its signature",
    ),
    "approval": (
        lambda home, run: _edit(
            home,
            "UPDATE approvals SET named = 1, how = 'aishell approve --step' WHERE run_id = ?",
            run,
        ),
        f"run {{run}}'s approval of step {PURGE} (how) does not match its signature",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_store_is_refused_with_one_line(home: Path, edit: str) -> None:
    config, url = next(_logs("sqlite", home))
    waiting = commands.run_job(
        config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
    )
    run_id = waiting.run_id
    commands.decide_steps(config, run_id, "approved")
    change, message = EDITS[edit]
    change(home, run_id)
    line = "state.db: " + message.format(run=run_id)
    for attempt in (
        lambda: commands.resume_run(config, run_id, approver=PreApproved()),
        lambda: commands.decide_steps(config, run_id, "approved", step=PURGE),
        lambda: commands.show_run(config, run_id),
    ):
        with pytest.raises(StateError) as refused:
            attempt()
        assert str(refused.value).startswith(line), str(refused.value)
        assert "\n" not in str(refused.value)
    result = CliRunner().invoke(cli, ["resume", run_id])
    assert result.exit_code == 2
    assert line in result.output and "Traceback" not in result.output
    assert len(rows_of(url)) == ROWS


def test_runs_stored_before_signing_are_signed_when_the_store_is_upgraded(home: Path) -> None:
    """Revision 0002 signs the runs it finds with the home's key; one it could not sign
    (no key at hand) is refused."""
    config, _url = next(_logs("sqlite", home))
    waiting = commands.run_job(
        config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
    )
    state = home / "state.db"
    conn = sqlite3.connect(state)
    conn.execute("UPDATE runs SET seal = NULL")
    conn.execute("UPDATE alembic_version SET version_num = '0001_baseline'")
    for statement in (
        "ALTER TABLE runs DROP COLUMN seal",
        "ALTER TABLE steps DROP COLUMN status_seal",
        "ALTER TABLE steps DROP COLUMN output_seal",
        "ALTER TABLE approvals DROP COLUMN seal",
        "ALTER TABLE approvals DROP COLUMN named",
        "ALTER TABLE approvals DROP COLUMN given_for",
        "DROP TABLE approval_requests",
        "ALTER TABLE runs DROP COLUMN pid_started",  # revision 0003's
        "DROP TABLE alerts",  # revision 0005's
        "DROP TABLE fleet_jobs",  # revision 0006's
        "DROP TABLE fleet_runs",
    ):
        conn.execute(statement)
    conn.commit()
    conn.close()
    shown = commands.show_run(config, waiting.run_id)  # upgraded with the key: signed
    assert shown["steps"][PURGE]["status"] == "waiting_approval"
    _edit(home, "UPDATE runs SET seal = NULL WHERE run_id = ?", waiting.run_id)
    with pytest.raises(StateError, match="carries no signature"):
        commands.show_run(config, waiting.run_id)
    with StateStore(config.state_url) as store:  # no key: lists, checks nothing
        assert store.list_runs()[0]["run_id"] == waiting.run_id
