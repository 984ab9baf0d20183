"""A lock on one table of several, during every maintenance type, on PostgreSQL and
MariaDB: the run ends, the held table is reported skipped (or, by a corruption check,
not checked) with its holder named, every other table is done, and the next run plans
the held table first. A table dropped between the plan and its step, during standard
and full maintenance, is reported gone on every engine (SQLite too).

The locks are those a DBA meets: PostgreSQL's ACCESS EXCLUSIVE (an ALTER TABLE, a
LOCK TABLE) and SHARE UPDATE EXCLUSIVE (what an anti-wraparound autovacuum holds: it
keeps off ANALYZE, VACUUM and REINDEX but not reads); MariaDB's LOCK TABLES ... WRITE
and the metadata lock of an open transaction (it keeps off only a rebuild, OPTIMIZE
TABLE). Each is held by a session the test opens, on tables of a scratch database of
its own. Full maintenance runs with a fragmentation threshold of 0, so that every table
is rebuilt and compacted and the held one is met by each kind of work.

Time bound: the target's lock wait is 100 ms (MariaDB's one second: it counts whole
seconds), and every look at the held table waits it out; a step is tried twice 0.1 s
apart and a MariaDB CHECK TABLE three times 0.1 s apart (one and two seconds apart as
shipped: the test shortens only the idle pauses between), so a run takes seconds; a run
still going after BOUND_SECONDS is a hang and fails the test.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Hung
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved
from tests.executor.test_one_table_at_a_time import (
    TABLES,
    _DropAfterHealth,
    _make_tables,
    _mysql,
    _pg,
)

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

BOUND_SECONDS = 60
KINDS = ("quick", "standard", "full", "emergency")
OTHERS = ("alpha", "omega")

# The statements by which the holding session takes its lock, and its id's name.
LOCKS: dict[str, tuple[str, ...]] = {
    "access_exclusive": ("BEGIN", 'LOCK TABLE "held" IN ACCESS EXCLUSIVE MODE'),
    "share_update_exclusive": ("BEGIN", 'LOCK TABLE "held" IN SHARE UPDATE EXCLUSIVE MODE'),
    "lock_tables_write": ("LOCK TABLES `held` WRITE",),
    "metadata": ("BEGIN", "SELECT id FROM `held` LIMIT 1"),
}
ENGINE_OF = {
    "access_exclusive": "postgresql",
    "share_update_exclusive": "postgresql",
    "lock_tables_write": "mysql",
    "metadata": "mysql",
}
# The maintenance types whose work the lock keeps off the held table (the others do it
# as on any table: a transaction's metadata lock lets ANALYZE and CHECK TABLE through).
HOLDS_OFF = {
    "access_exclusive": set(KINDS),
    "share_update_exclusive": {"quick", "standard", "full"},
    "lock_tables_write": set(KINDS),
    "metadata": {"full"},
}


@pytest.fixture(autouse=True)
def _quick_check_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A held table's CHECK TABLE is still tried three times, each try waiting out the
    lock; only the pauses between the tries, idle seconds here, are shortened."""
    monkeypatch.setattr("aishell.handlers.mysql.corruption._RETRY_WAIT_SECONDS", 0.1)


def _configure(home: Path, url: str) -> Config:
    """The default target `db` at url with a short lock wait; steps tried twice; every
    table past the fragmentation threshold, so full maintenance rebuilds each."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", "lock_timeout_ms": 100}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    agent = home / "config" / "agents" / "maintenance.yaml"
    agents = yaml.safe_load(agent.read_text())
    agents["maintenance_agent"].setdefault("default_config", {}).update(
        {
            "max_retries": 1,
            "retry_backoff_seconds": 0.1,
            "fragmentation_threshold": 0,
            "min_index_pages": 1,
        }
    )
    agent.write_text(yaml.safe_dump(agents))
    return load_config(home=home)


@contextmanager
def _holding(url: str, lock: str) -> Iterator[int]:
    """A session of the test's own holding `held` with `lock` until the block ends; its
    id (backend pid, connection id)."""
    if ENGINE_OF[lock] == "postgresql":
        conn = _pg(url)
        try:
            for sql in LOCKS[lock]:
                conn.execute(sql)
            yield int(conn.info.backend_pid)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    my = _mysql(url)
    try:
        with my.cursor() as cur:
            for sql in LOCKS[lock]:
                cur.execute(sql)
                cur.fetchall()
        yield int(my.thread_id())
        with my.cursor() as cur:
            cur.execute("UNLOCK TABLES" if lock == "lock_tables_write" else "ROLLBACK")
    finally:
        my.close()


def _within_bound(work: Callable[[], Any]) -> Any:
    """`work`'s answer; a hang (no answer within BOUND_SECONDS) fails the test."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(work).result(timeout=BOUND_SECONDS)
    except Hung:
        pytest.fail(f"the run did not end within {BOUND_SECONDS} s with one table held")
    finally:
        pool.shutdown(wait=False)


def _run(config: Config, kind: str, **extra: Any) -> Any:
    return commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved(), **extra)


def _left_out(result: Any) -> dict[str, list[str]]:
    """Every table a step skipped because it was held, or a corruption check could not
    check for the same cause: table -> the reasons given."""
    found: dict[str, list[str]] = {}
    for step in result.steps[:-1]:
        output = step.output or {}
        entries = [
            *(output.get("skipped_tables") or []),
            *(_corruption(step).get("unchecked_tables") or []),
        ]
        for entry in entries:
            if entry.get("cause") == "locked":
                found.setdefault(entry["table"], []).append(entry["reason"])
    return found


def _done(result: Any, kind: str) -> set[str]:
    """The tables the type's work was done on, by what the steps say they did."""
    steps = result.steps
    if kind in ("quick", "standard"):
        return {
            t
            for s in steps
            if s.tool == "update_table_statistics" and s.status == "succeeded"
            for t in s.output["tables_done"]
        }
    checked = {
        t
        for s in steps
        for t, state in _corruption(s).get("status_by_table", {}).items()
        if state == "ok"
    }
    if kind == "emergency":
        return checked
    # Small tables share the step: each one's outcome is in by_table.
    compacted = {
        o["table"]
        for s in steps
        if s.tool == "optimize_table" and s.status == "succeeded"
        for o in s.output.get("by_table") or [s.output]
        if o.get("vacuumed")
    }
    # MariaDB's statistics follow in one step of the group (PostgreSQL's VACUUM (ANALYZE)
    # refreshed them): its other tables are reported done, not a failed step.
    grouped = [s for s in steps if s.tool == "update_table_statistics"]
    if grouped:
        assert all(s.status == "succeeded" for s in grouped), [s.error for s in grouped]
        compacted &= {t for s in grouped for t in s.output["tables_done"]}
    return checked & compacted


def _corruption(step: Any) -> dict[str, Any]:
    output = step.output or {}
    if step.tool == "check_table_corruption":
        return dict(output)
    if step.tool == "analyze_database_health":
        return dict(output.get("corruption_check") or {})
    return {}


@contextmanager
def _three_tables(dialect: str) -> Iterator[str]:
    """A scratch database of three tables (amcheck installed on PostgreSQL, so that
    the corruption check checks); its URL."""
    from tests.services import scratch_server

    with scratch_server(dialect) as url:
        _make_tables(url, dialect)
        if dialect == "postgresql":
            with _pg(url) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        yield url


@pytest.fixture(params=sorted(LOCKS))
def held_lock(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """Three tables, and the lock the test holds on one of them."""
    with _three_tables(ENGINE_OF[request.param]) as url:
        yield url, request.param


@pytest.mark.parametrize("kind", KINDS)
def test_one_held_table_is_left_out_named_and_the_others_are_done(home, held_lock, kind):
    url, lock = held_lock
    config = _configure(home, url)

    with _holding(url, lock) as holder:
        result = _within_bound(lambda: _run(config, kind))

    assert result.status == "completed", (result.error, [(s.tool, s.error) for s in result.steps])
    assert not [s for s in result.steps if s.status == "failed"]
    left_out = _left_out(result)
    done = _done(result, kind)
    assert set(OTHERS) <= done, [(s.tool, s.status, s.error) for s in result.steps]
    if kind not in HOLDS_OFF[lock]:
        assert left_out == {} and "held" in done  # the lock does not keep this work off
        return
    assert set(left_out) == {"held"}, left_out
    named = f"pid {holder} " if ENGINE_OF[lock] == "postgresql" else f"connection {holder} "
    assert all(named in reason for reason in left_out["held"]), left_out
    assert "held" not in done
    # Only the held table's steps were skipped; none failed.
    for step in result.steps:
        if step.status == "skipped" and step.output:
            assert set(step.output.get("tables") or [step.output.get("table")]) <= {"held"}
    report = result.steps[-1].output
    in_report = {s["table"] for s in report["skipped"] if s.get("cause") == "locked"}
    in_report |= {s["table"] for s in report["corruption_not_checked"] if "held by" in s["reason"]}
    assert in_report == {"held"}, report

    plan = commands.plan_job(config, "maintenance", {"type": kind}).plan
    assert plan.steps[0].params["tables"][0] == "held", plan.steps[0].params
    first = plan.steps[1].params
    assert (first.get("tables") or [first.get("table")])[0] == "held", first


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def droppable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Three tables on each engine; their URL and the engine."""
    dialect = request.param
    if dialect != "sqlite":
        with _three_tables(dialect) as url:
            yield url, dialect
        return
    path = tmp_path / "three.db"
    with sqlite3.connect(path) as conn:
        for t in TABLES:
            conn.execute(f'CREATE TABLE "{t}" (id integer PRIMARY KEY, v text)')
            conn.executemany(f'INSERT INTO "{t}" (v) VALUES (?)', [("x",)] * 200)
    yield f"sqlite:///{path}", dialect


@pytest.mark.parametrize("kind", ["standard", "full", "emergency"])
def test_a_table_dropped_before_its_steps_is_reported_gone(home, droppable, kind):
    url, dialect = droppable
    config = _configure(home, url)

    result = _within_bound(lambda: _run(config, kind, observer=_DropAfterHealth(url, dialect)))

    assert result.status == "completed", (result.error, [(s.tool, s.error) for s in result.steps])
    assert not [s for s in result.steps if s.status == "failed"]
    on_omega = [s for s in result.steps[1:-1] if "omega" in (s.params.get("tables") or [])]
    on_omega += [s for s in result.steps[1:-1] if s.params.get("table") == "omega"]
    assert on_omega
    for step in on_omega:
        assert "omega" in (step.output or {}).get("tables_gone", []), (step.tool, step.error)
        assert "omega" not in (step.output.get("tables_done") or [])
    checked = {
        t
        for s in result.steps
        for t, state in _corruption(s).get("status_by_table", {}).items()
        if state == "ok"
    }
    worked = checked if kind == "emergency" else set()
    worked |= {
        s.params.get("table")
        for s in result.steps
        if s.tool in ("update_table_statistics", "optimize_table") and s.status == "succeeded"
    } | {
        t
        for s in result.steps
        if s.tool in ("update_table_statistics", "optimize_table") and s.status == "succeeded"
        for t in s.output.get("tables_done") or []
    }
    assert {"alpha", "held"} <= worked, [(s.tool, s.status, s.error) for s in result.steps]
    report = result.steps[-1].output
    assert report["tables_gone"] == ["omega"]
    assert "dropped during the run: omega" in report["summary"]


@pytest.mark.parametrize("lock", ["access_exclusive", "lock_tables_write"])
def test_runs_show_and_json_name_the_held_table_and_its_holder(home, lock):
    """Through the CLI: `run maintenance --json` and `runs show` say which table was
    skipped and who held it."""
    runner = CliRunner()
    with _three_tables(ENGINE_OF[lock]) as url:
        _configure(home, url)
        with _holding(url, lock) as holder:
            ran = _within_bound(
                lambda: runner.invoke(
                    cli, ["run", "maintenance", "--type", "standard", "--yes", "--json"]
                )
            )

    assert ran.exit_code == 0, ran.output
    data = json.loads(ran.stdout)
    assert data["status"] == "completed"
    # The three small tables share each step: the held one is named in the steps'
    # skipped tables with its holder, the others done.
    work = data["steps"][1:-1]
    assert all(s["status"] == "succeeded" for s in work)
    held = [e for s in work for e in s["output"].get("skipped_tables") or []]
    assert held and all(e["table"] == "held" and e["cause"] == "locked" for e in held)
    assert all(str(holder) in e["reason"] for e in held)
    shown = runner.invoke(cli, ["runs", "show", data["run_id"]])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())
    assert "skipped, held" in flat and str(holder) in flat, shown.output


def test_an_emergency_dry_run_does_not_wait_again_on_a_table_found_held(home):
    """The corruption check of a dry run leaves out a table the preview already found
    held, naming its holder, instead of waiting on it once more (the health step found
    it held first)."""
    with _three_tables("postgresql") as url:
        config = _configure(home, url)
        with _holding(url, "access_exclusive") as holder:
            result = _within_bound(lambda: _run(config, "emergency", dry_run=True))
        checks = [
            entry
            for step in result.steps
            if step.tool == "check_table_corruption" and step.output
            for entry in step.output.get("unchecked_tables") or []
            if entry.get("table") == "held"
        ]
    assert checks, [(s.tool, s.status, s.error) for s in result.steps]
    for entry in checks:
        assert entry.get("cause") == "locked", entry
        assert "held when the preview looked" in entry["reason"], entry
        assert f"pid {holder} " in entry["reason"], entry


@pytest.mark.parametrize("kind", ["full", "emergency"])
def test_a_mariadb_dry_run_checks_a_held_table_once_and_then_knows_it_held(home, kind):
    """A dry run's CHECK TABLE of a table another session holds waits out the lock once,
    not three times with pauses between (a preview reports the moment it looked), names
    the holder, and its later steps do not wait on it again."""
    with _three_tables("mysql") as url:
        config = _configure(home, url)
        with _holding(url, "lock_tables_write") as holder:
            result = _within_bound(lambda: _run(config, kind, dry_run=True))
        checks = [
            entry
            for step in result.steps
            for entry in _corruption(step).get("unchecked_tables") or []
            if entry.get("table") == "held"
        ]
    assert checks, [(s.tool, s.status, s.error) for s in result.steps]
    for entry in checks:
        assert entry.get("cause") == "locked", entry
        assert "tried" not in entry["reason"], entry
        assert f"connection {holder} " in entry["reason"], entry
    if kind == "full":  # the rebuild's preview, after it, does not measure it again
        rebuild = next(s for s in result.steps if s.tool == "rebuild_fragmented_indexes")
        assert any("`held`: not measured" in sql for sql in rebuild.sql), rebuild.sql


def test_a_table_dropped_while_the_run_waited_is_reported_gone_on_resume(home, droppable):
    """The run waits for a yes (strict, nobody to ask); `omega` is dropped; the resumed
    run (another process, whose catalog never held it) reports it gone, as one dropped
    while the run went on, and does the other tables: not "not found" failing the run."""
    from aishell.policy.approvers import NonInteractive

    url, dialect = droppable
    _configure(home, url)
    agent = home / "config" / "agents" / "maintenance.yaml"
    agents = yaml.safe_load(agent.read_text())
    # Every table past the limit: each step that writes waits for a yes.
    limit = {"type": "max_table_size", "max_rows": 10}
    agents["maintenance_agent"].setdefault("safety_constraints", []).append(limit)
    agent.write_text(yaml.safe_dump(agents))
    config = load_config(home=home)
    job = {"type": "full"}
    waiting = commands.run_job(config, "maintenance", job, approver=NonInteractive())
    assert waiting.status == "waiting_approval", waiting.error
    _DropAfterHealth(url, dialect).step_finished(waiting.steps[0], len(waiting.steps))
    commands.decide_steps(config, waiting.run_id, "approved")
    resumed = _within_bound(lambda: commands.resume_run(config, waiting.run_id))
    while resumed.status == "waiting_approval":
        commands.decide_steps(config, waiting.run_id, "approved")
        resumed = commands.resume_run(config, waiting.run_id)
    assert resumed.status == "completed", (
        resumed.error,
        [(s.tool, s.status, s.error) for s in resumed.steps],
    )
    assert resumed.steps[-1].output["tables_gone"] == ["omega"]
