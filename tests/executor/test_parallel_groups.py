"""A parallel group's read-only steps run at the same time, each on a connection of its
own, never more at once than max_parallel_steps, each step's start and end committed on
its own; the run's time limit and SIGTERM cancel the steps running and start none of the
rest; a run killed (SIGKILL) inside a group resumes without running again the steps
that had ended. On SQLite, PostgreSQL and MariaDB, each step keeping its server busy
(pg_sleep, SLEEP(), a long recursive count on SQLite)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aishell import commands
from aishell.config.models import Config
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target

SLEEP_TOOL: dict[str, Any] = {
    "name": "sleep_read",
    "description": "Keep the server busy for a while, reading nothing; a test tool.",
    "category": "analysis",
    "risk_level": "safe",
    "required_capabilities": ["database_read"],
    "max_execution_time": 120,
    "idempotent": True,
    "params": {
        "type": "object",
        "additionalProperties": False,
        "required": ["label", "seconds"],
        "properties": {
            "label": {"type": "string", "description": "What the step returns."},
            "seconds": {"type": "number", "minimum": 0, "description": "How long."},
        },
    },
    "returns": {"type": "object"},
    "examples": [{"params": {"label": "a", "seconds": 0.1}}],
    "locks": {"sqlite": [], "postgresql": [], "mysql": []},
    "implementations": {
        "postgresql": {
            "sql": "SELECT CAST(:label AS text) AS label "
            "FROM pg_sleep(CAST(:seconds AS double precision))",
            "result": "one",
        },
        "mysql": {"sql": "SELECT :label AS label, SLEEP(:seconds) AS slept", "result": "one"},
        # No sleep in SQLite: counting keeps it busy about as long.
        "sqlite": {
            "sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < CAST(:seconds * 3000000 AS INTEGER)) "
            "SELECT :label AS label, max(i) AS counted FROM n",
            "result": "one",
        },
    },
}


def with_sleep_tool(home: Path, url: str) -> Config:
    """The home's config: target `db` at url, the tool sleep_read, and three steps of a
    group at once."""
    folder = home / "site_tools"
    folder.mkdir()
    (folder / "sleep_read.yaml").write_text(yaml.safe_dump(SLEEP_TOOL))
    agent = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(agent.read_text())
    data["maintenance_agent"]["default_config"]["max_parallel_steps"] = 3
    agent.write_text(yaml.safe_dump(data))
    path = home / "config" / "aishell.yaml"
    main = yaml.safe_load(path.read_text())
    main["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(main))
    return use_target(home, url)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def site(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    """A home whose target `db` is a scratch database of each engine (with_sleep_tool)."""
    if request.param == "sqlite":
        sqlite3.connect(home / "target.db").close()
        yield with_sleep_tool(home, f"sqlite:///{home / 'target.db'}"), "sqlite"
        return
    from tests.services import scratch_mysql, scratch_postgresql

    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        yield with_sleep_tool(home, url), request.param


def sleepy_plan(dialect: str, seconds: list[float]) -> Plan:
    """One step before the group, the group (a step per entry of `seconds`), one after."""
    steps = [Step("step_0", "sleep_read", {"label": "before", "seconds": 0})]
    steps += [
        Step(
            f"step_{i + 1}",
            "sleep_read",
            {"label": f"s{i + 1}", "seconds": s},
            parallel_group="analysis",
        )
        for i, s in enumerate(seconds)
    ]
    last = len(steps)
    steps.append(
        Step(f"step_{last}", "sleep_read", {"label": "${step_1.output.label}", "seconds": 0})
    )
    return Plan("maintenance", "db", dialect, {"type": "sleepy"}, tuple(steps))


def stored_steps(home: Path, run_id: str) -> list[tuple[Any, ...]]:
    """(idx, status, attempts, started_at, finished_at) of each step, as committed."""
    conn = sqlite3.connect(home / "state.db", timeout=30)
    try:
        return conn.execute(
            "SELECT idx, status, attempts, started_at, finished_at FROM steps "
            "WHERE run_id = ? ORDER BY idx",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()


def most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The most intervals open at one moment; one ending as another starts is not open
    beside it (times to the millisecond)."""
    moments = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    now = most = 0
    for _at, change in sorted(moments):  # at a tie, -1 sorts first
        now += change
        most = max(most, now)
    return most


def test_a_group_runs_at_once_within_its_bound(site: tuple[Config, str], home: Path) -> None:
    config, dialect = site
    plan = sleepy_plan(dialect, [0.25] * 6)
    run = commands.apply_plan(config, plan, approver=PreApproved())
    assert run.status == "completed", run.error
    rows = stored_steps(home, run.run_id)
    assert [r[1] for r in rows] == ["succeeded"] * 8
    assert all(r[2] == 1 and r[3] and r[4] for r in rows)
    group = [(r[3], r[4]) for r in rows[1:7]]
    # Steps of the group overlap, never more than the three slots; the steps around
    # the group run alone, the one after it on the group's output.
    assert 2 <= most_at_once(group) <= 3
    assert rows[0][4] <= min(start for start, _ in group)
    assert rows[7][3] >= max(end for _, end in group)
    assert run.steps[7].output["label"] == "s1"
    # Each step's start and end is an event of its own.
    conn = sqlite3.connect(home / "state.db")
    try:
        kinds = conn.execute(
            "SELECT step_idx, kind FROM events WHERE run_id = ?", (run.run_id,)
        ).fetchall()
    finally:
        conn.close()
    for index in range(1, 7):
        assert (index, "step_started") in kinds and (index, "step_succeeded") in kinds


def test_a_run_killed_inside_a_group_resumes_the_rest(site: tuple[Config, str], home: Path) -> None:
    config, dialect = site
    # Two short steps end while the long one still runs: then the run is killed.
    plan = sleepy_plan(dialect, [0.05, 0.05, 1.5])
    child = apply_in_a_child(config, plan, home)
    try:
        run_id, ended = _wait_for_short_steps(home, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    killed = stored_steps(home, run_id)
    # Killed inside the group: its long step's start was committed, nothing after it.
    assert [r[1] for r in killed[3:]] == ["running", "pending"]
    before = _statements_by_step(home, run_id)
    resumed = commands.resume_run(config, run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error
    rows = stored_steps(home, run_id)
    assert [r[1] for r in rows] == ["succeeded"] * 5
    after = _statements_by_step(home, run_id)
    for index in ended:
        # Final in the store before the kill: not run again.
        assert rows[index][2] == 1
        assert after[index] == before[index]
    assert after[4] >= 1 and resumed.steps[4].output["label"] == "s1"


def test_the_time_limit_ends_a_group_and_starts_none_of_the_rest(
    site: tuple[Config, str], home: Path
) -> None:
    config, dialect = site
    plan = sleepy_plan(dialect, [5.0] * 5)
    run = commands.apply_plan(config, plan, approver=PreApproved(), max_run_seconds=0.5)
    assert run.status == "interrupted", run.error
    group = stored_steps(home, run.run_id)[1:6]
    # The steps running at the limit were cancelled and ended interrupted; the others
    # never started. None could have ended: each takes far longer than the limit.
    assert {r[1] for r in group} <= {"interrupted", "pending"}
    assert sum(r[1] == "interrupted" for r in group) <= 3
    assert all(r[2] == 0 for r in group if r[1] == "pending")
    assert stored_steps(home, run.run_id)[6][1] == "pending"


def test_sigterm_cancels_the_group_s_statements_and_starts_none_of_the_rest(
    home: Path, pg_url: str
) -> None:
    config = with_sleep_tool(home, pg_url)
    child = apply_in_a_child(config, sleepy_plan("postgresql", [30.0] * 5), home)
    try:
        run_id = _wait_for(home, child, lambda rows: sum(s == "running" for _, s in rows) == 3)
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 4  # interrupted
    statuses = [r[1] for r in stored_steps(home, run_id)]
    assert statuses == ["succeeded"] + ["interrupted"] * 3 + ["pending"] * 3


def apply_in_a_child(config: Config, plan: Plan, home: Path) -> subprocess.Popen[bytes]:
    """`aishell apply` of the plan, saved and signed, in a process of its own."""
    out = commands.save_plan(config, plan, home / "plan.json")
    env = {k: v for k, v in os.environ.items() if k != "AISHELL_CONFIG"}
    env["AISHELL_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "aishell", "apply", str(out), "--yes", "--json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(
    home: Path, child: subprocess.Popen[bytes], ready: Callable[[list[tuple[int, str]]], bool]
) -> str:
    """The run's id once its group's steps (idx, status), as committed, are `ready`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert child.poll() is None, "the run ended before it could be stopped"
        if (home / "state.db").exists():
            try:
                conn = sqlite3.connect(home / "state.db", timeout=30)
                try:
                    rows = conn.execute("SELECT run_id, idx, status FROM steps").fetchall()
                finally:
                    conn.close()
            except sqlite3.OperationalError:
                rows = []  # the store is being made
            if rows and ready([(idx, status) for _, idx, status in rows]):
                return str(rows[0][0])
        time.sleep(0.02)
    raise AssertionError("the group never got there")


def _wait_for_short_steps(home: Path, child: subprocess.Popen[bytes]) -> tuple[str, list[int]]:
    """The run's id once both short steps of the group are committed succeeded."""

    def ended(rows: list[tuple[int, str]]) -> bool:
        return sum(idx in (1, 2) and status == "succeeded" for idx, status in rows) == 2

    return _wait_for(home, child, ended), [1, 2]


def _statements_by_step(home: Path, run_id: str) -> dict[int, int]:
    """How many statements each step sent, by the statement audit."""
    conn = sqlite3.connect(home / "state.db", timeout=30)
    try:
        rows = conn.execute(
            "SELECT step_idx, count(*) FROM statements WHERE run_id = ? GROUP BY step_idx",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)
