"""A step approved that then failed (a lock timeout, a lost connection: nothing of what
it acts on changed), or was held for the maintenance window, keeps its approval when
its run is resumed, as one stopped midway does: it is asked about again only when the
facts it was approved on changed (its risk, reasons, rows, or reach: triggers and
cascades), and then always. Without a terminal such a step waits (exit 3)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.policy.approvers import Approver, NonInteractive, PreApproved, Prompting
from tests.handlers.purge.test_log_cleanup import _database, fill, job, rows_of
from tests.helpers import run_sql, use_target
from tests.policy.test_approval_facts import _age_every_row
from tests.policy.test_approval_outlives import CODE_CHANGES, ROWS, _resumed_waits
from tests.policy.test_approval_reach import _full_rebuild, events_to_rebuild

PURGE = 1  # the purge is the second step of a log cleanup plan


@contextmanager
def _rows_locked(url: str) -> Iterator[None]:
    """Another session holds every row of `events` for as long as the block: a purge's
    DELETE waits for it, past the target's lock timeout."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                db.execute("ROLLBACK")
        return
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT id FROM events FOR UPDATE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def _quick_to_fail(home: Path, url: str) -> Config:
    """The target's lock waits short (a server's lock timeout, a SQLite file's busy
    timeout), and a purge not tried again: a held lock fails it."""
    config = use_target(home, url)
    main = home / "config" / "aishell.yaml"
    data = yaml.safe_load(main.read_text())
    wait = "busy_timeout_ms" if url.startswith("sqlite") else "lock_timeout_ms"
    data["targets"]["db"][wait] = 1000
    main.write_text(yaml.safe_dump(data))
    agent = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(agent.read_text())
    data["log_cleanup_agent"]["default_config"]["max_retries"] = 0
    agent.write_text(yaml.safe_dump(data))
    return load_config(home=config.home)


def _failed_purge(home: Path, url: str, approver: Approver | None = None) -> tuple[str, Config]:
    """A strict log cleanup whose purge was approved (with `approver`, else by `aishell
    approve` after it waited), then failed on a lock held by another session."""
    config = _quick_to_fail(home, url)
    if approver is None:
        waiting = commands.run_job(
            config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
        )
        assert waiting.status == "waiting_approval", waiting.error
        commands.decide_steps(config, waiting.run_id, "approved")
        with _rows_locked(url):
            failed = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
    else:
        with _rows_locked(url):
            failed = commands.run_job(
                config, "log_cleanup", job(), approver=approver, safety_level="strict"
            )
    purge = failed.steps[PURGE]
    assert failed.status == "failed" and purge.status == "failed", (failed.status, purge.error)
    assert len(rows_of(url)) == ROWS
    return failed.run_id, config


def _questions(config: Config, run_id: str) -> int:
    events = commands.show_run(config, run_id)["events"]
    return len(
        [e for e in events if e["kind"] == "approval_requested" and e["step_index"] == PURGE]
    )


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_failed_purge_whose_facts_held_is_not_asked_about_again(dialect: str, home: Path) -> None:
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_id, config = _failed_purge(home, url)
        asked = _questions(config, run_id)
        done = commands.resume_run(config, run_id, approver=NonInteractive())
        assert done.status == "completed", (done.error, done.steps[PURGE].error)
        assert _questions(config, run_id) == asked
        assert len(rows_of(url)) < ROWS


def _trigger_added(dialect: str, url: str) -> str:
    """A DELETE trigger added: the purge reaches code it did not when it was approved."""
    run_sql(url, *CODE_CHANGES[dialect][0])
    return "events_gone"


def _rows_aged(dialect: str, url: str) -> str:
    """Every row grown old: more rows, a larger share than approved."""
    _age_every_row(url, 60)
    return "share "


CHANGES: dict[str, Callable[[str, str], str]] = {"trigger": _trigger_added, "rows": _rows_aged}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_failed_purge_whose_facts_changed_is_asked_about_again(
    dialect: str, change: str, home: Path
) -> None:
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_id, config = _failed_purge(home, url)
        expected = CHANGES[change](dialect, url)
        _resumed_waits(config, run_id, expected)
        assert len(rows_of(url)) == ROWS


def _prompt(answer: str) -> Prompting:
    return Prompting(ask=lambda request: answer)


GIVEN: dict[str, Callable[[], Approver]] = {
    "--yes": PreApproved,
    "yes at the prompt": lambda: _prompt("yes"),
    "all at the prompt": lambda: _prompt("all"),
}


@pytest.mark.parametrize("changed", [False, True], ids=["held", "changed"])
@pytest.mark.parametrize("given", sorted(GIVEN))
def test_an_approval_however_given_holds_after_a_failure(
    given: str, changed: bool, home: Path
) -> None:
    """Approved with --yes, a yes or an "all" at the prompt, the purge fails; resumed
    with nobody to ask, it runs if nothing changed and waits if its reach did."""
    with _database("sqlite", home) as url:
        fill(url, rows=ROWS)
        run_id, config = _failed_purge(home, url, GIVEN[given]())
        if changed:
            run_sql(url, *CODE_CHANGES["sqlite"][0])
            _resumed_waits(config, run_id, "events_gone")
            assert len(rows_of(url)) == ROWS
            return
        done = commands.resume_run(config, run_id, approver=NonInteractive())
        assert done.status == "completed", (done.error, done.steps[PURGE].error)
        assert len(rows_of(url)) < ROWS


@pytest.mark.parametrize("changed", [False, True], ids=["held", "changed"])
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_without_a_terminal_a_failed_step_waits_only_when_it_changed(
    dialect: str, changed: bool, home: Path
) -> None:
    """`aishell resume RUN` with no terminal on stdin: the step whose reach changed
    since its approval fails closed (exit 3, nothing deleted); one whose facts held
    runs, nobody asked (exit 0)."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_id, _config = _failed_purge(home, url)
        if changed:
            run_sql(url, *CODE_CHANGES[dialect][0])
        resumed = CliRunner().invoke(cli, ["resume", run_id])
        if changed:
            assert resumed.exit_code == 3, resumed.output
            assert "no longer covers it" in resumed.output, resumed.output
            assert "events_gone" in resumed.output, resumed.output
            assert len(rows_of(url)) == ROWS
        else:
            assert resumed.exit_code == 0, resumed.output
            assert len(rows_of(url)) < ROWS


WINDOW = {"type": "maintenance_window", "allowed_hours": [3], "timezone": "UTC"}


def _at(hour: int) -> Callable[[], datetime]:
    return lambda: datetime(2026, 11, 23, hour, 10, tzinfo=UTC)


def test_an_approved_step_held_for_the_window_is_not_asked_about_again(
    home: Path, edit_config: Callable[..., Config]
) -> None:
    """Approved, then resumed outside its maintenance window (held: deferred), then
    resumed inside it: the approval still covers it."""
    with _database("sqlite", home) as url:
        fill(url, rows=ROWS)
        use_target(home, url)
        config = edit_config(log_cleanup={"safety_constraints": [{"type": "purge_limits"}, WINDOW]})
        how: dict[str, Any] = {"approver": NonInteractive(), "clock": _at(3)}
        waiting = commands.run_job(config, "log_cleanup", job(), safety_level="strict", **how)
        assert waiting.status == "waiting_approval", waiting.error
        commands.decide_steps(config, waiting.run_id, "approved")
        held = commands.resume_run(config, waiting.run_id, **{**how, "clock": _at(12)})
        assert held.steps[PURGE].status == "deferred", held.steps[PURGE].error
        asked = _questions(config, waiting.run_id)
        done = commands.resume_run(config, waiting.run_id, **how)
        assert done.status == "completed", (done.error, done.steps[PURGE].error)
        assert _questions(config, waiting.run_id) == asked
        assert len(rows_of(url)) < ROWS


def _rebuild_failed(home: Path, url: str) -> tuple[str, Config, int]:
    """Full maintenance of `events` approved, its index rebuild then cut off: its
    session ended by the server while it waited for the table's lock (nothing rebuilt)."""
    config = _full_rebuild(home, url)
    agent = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(agent.read_text())
    data["maintenance_agent"]["default_config"]["max_retries"] = 0
    agent.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    whole = {"type": "full", "tables": ["events"]}
    waiting = commands.run_job(
        config, "maintenance", whole, approver=NonInteractive(), safety_level="strict"
    )
    commands.decide_steps(config, waiting.run_id, "approved")
    outcome: dict[str, Any] = {}
    engine = create_engine(url)
    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE"))
        worker = threading.Thread(
            target=lambda: outcome.update(
                run=commands.resume_run(config, waiting.run_id, approver=NonInteractive())
            )
        )
        worker.start()
        _end_the_waiting(engine, "REINDEX%")
        holder.rollback()
        worker.join(120)
    engine.dispose()
    failed = outcome["run"]
    rebuild = next(s for s in failed.steps if s.tool == "rebuild_fragmented_indexes")
    assert rebuild.status == "failed", (rebuild.status, rebuild.error)
    return waiting.run_id, config, rebuild.index


def _end_the_waiting(engine: Engine, statement: str) -> None:
    """Ends the session of this database whose `statement` waits for a lock, once it does."""
    with engine.connect() as watch:
        for _ in range(1200):
            pids = watch.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE :statement AND wait_event_type = 'Lock'"
                ),
                {"statement": statement},
            ).scalars()
            found = list(pids)
            watch.rollback()
            if found:
                watch.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": found[0]})
                watch.rollback()
                return
            time.sleep(0.05)
    raise AssertionError(f"no {statement} waited for a lock")


@pytest.mark.parametrize("changed", [False, True], ids=["held", "changed"])
def test_a_failed_index_rebuild_is_asked_about_again_only_when_it_changed(
    changed: bool, home: Path
) -> None:
    """PostgreSQL: the rebuild whose statements are those approved runs on resume, nobody
    asked; one that would now rebuild an index added since waits, naming it."""
    with _database("postgresql", home) as url:
        events_to_rebuild(url)
        run_id, config, index = _rebuild_failed(home, url)
        if changed:
            run_sql(url, "CREATE INDEX events_late ON events (created_at, payload)")
        resumed = commands.resume_run(config, run_id, approver=NonInteractive())
        (rebuild,) = [s for s in resumed.steps if s.index == index]
        if changed:
            assert rebuild.status == "waiting_approval", (rebuild.status, rebuild.error)
            assert "no longer covers it" in str(rebuild.error), rebuild.error
            assert "events_late" in str(rebuild.error), rebuild.error
        else:
            assert resumed.status == "completed", (resumed.error, rebuild.error)
            assert rebuild.status == "succeeded", rebuild.error
