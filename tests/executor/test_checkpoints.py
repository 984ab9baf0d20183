"""What a step costs the state store: one durable transaction before each write it
sends that is not repeatable, or goes to a large table (the write's audit row, with the
step's start), and one for its end (with the audit rows of its reads), and nothing else
that commits. A quick step that a resume may simply run again (it read, or made quick
repeatable writes) commits nothing of its own: its start and end ride with the next
commit, within steps.RIDE_SECONDS; a step that may take long commits its start first.
How long that takes, bench/checkpoint.py measures; here only how many commits, and
what another process finds in the store meanwhile."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.config.models import Config
from aishell.errors import StateError
from aishell.executor import attempts
from aishell.plan.model import Plan, Step
from aishell.state import steps as state_steps
from aishell.state.core import EVENT, Hot
from aishell.state.runs import _STOP_REQUESTED
from aishell.state.steps import (
    _PROGRESS_FIRST,
    _PROGRESS_SAVED,
    _STATEMENT_FINISHED,
    _STATEMENT_STARTED,
    _STEP_FINISHED,
    _STEP_STARTED,
)
from aishell.state.store import StateStore
from aishell.state.values import new_run_id


@contextmanager
def store_commits(config: Config) -> Iterator[list[str]]:
    """Every COMMIT the state store's connections send while it lasts, as sqlite sees
    them (whether SQLAlchemy sent it or not)."""
    state_file = config.state_url.removeprefix("sqlite:///")
    seen: list[str] = []

    def on_connect(dbapi: Any, _record: Any) -> None:
        if not isinstance(dbapi, sqlite3.Connection):
            return
        if dbapi.execute("PRAGMA database_list").fetchall()[0][2] == state_file:
            dbapi.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)

    event.listen(Engine, "connect", on_connect)
    try:
        yield seen
    finally:
        event.remove(Engine, "connect", on_connect)


def counting_plan(steps: int, tool: str = "count_table_rows") -> Plan:
    return Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "checkpoints"},
        tuple(Step(f"step_{i}", tool, {"table": "users"}) for i in range(steps)),
    )


def commits_per_step(config: Config, plan_of: Callable[[int], Plan]) -> float:
    """The store's commits for each step more: a run of 12 steps against one of 2 (what
    a run costs besides its steps is the same for both)."""
    commands.apply_plan(config, plan_of(1))  # the store exists, its schema is current
    with store_commits(config) as few:
        assert commands.apply_plan(config, plan_of(2)).status == "completed"
    with store_commits(config) as many:
        assert commands.apply_plan(config, plan_of(12)).status == "completed"
    return (len(many) - len(few)) / 10


def analyzing(steps: int) -> Plan:
    return counting_plan(steps, "update_table_statistics")


@pytest.fixture
def riding(monkeypatch: pytest.MonkeyPatch) -> None:
    """However slow the machine, a step's end may wait for the next commit."""
    monkeypatch.setattr(state_steps, "RIDE_SECONDS", 3600.0)


def test_a_quick_read_steps_end_rides_with_the_next_commit(
    config: Config, demo_db: Path, riding: None
) -> None:
    # Its start, its read's audit row and its end commit with whatever commits next:
    # here the run's end.
    assert commits_per_step(config, counting_plan) == 0


def test_a_step_commits_its_end_once_the_last_commit_is_older_than_the_ride(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_steps, "RIDE_SECONDS", 0.0)
    assert commits_per_step(config, counting_plan) == 1


def test_a_step_of_a_repeatable_write_commits_nothing_of_its_own(
    config: Config, demo_db: Path, riding: None
) -> None:
    # ANALYZE changes no row, and sending it again is all a crash needs: a step that
    # only did that on a small table is as replayable as a read.
    assert commits_per_step(config, analyzing) == 0
    audit = commands.run_statements(config, commands.apply_plan(config, analyzing(3)).run_id)
    words = [row["sql"].split()[0].upper() for row in audit]
    assert words.count("ANALYZE") == 3, words
    # Reads and writes alike are in the audit, in the order they were sent, completed.
    started = [row["started_at"] for row in audit]
    assert started == sorted(started)
    assert all(row["finished_at"] for row in audit)


def test_a_repeatable_write_on_a_large_table_is_durable_before_it_is_sent(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every table counts as large: the step may take long, and another process must see
    # it running, so its start commits first, then its ANALYZE's audit row before the
    # ANALYZE is sent, then its end.
    monkeypatch.setattr(attempts, "QUICK_STEP_BYTES", 0)
    assert commits_per_step(config, analyzing) == 3


def test_a_read_on_a_large_table_commits_its_start_first(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch, riding: None
) -> None:
    monkeypatch.setattr(attempts, "QUICK_STEP_BYTES", 0)
    assert commits_per_step(config, counting_plan) == 2


def rebuilding(target: str, dialect: str, table: str) -> Callable[[int], Plan]:
    """Plans of n steps, each rebuilding the indexes of `table` however little they are
    fragmented."""

    def plan(steps: int) -> Plan:
        params = {"table": table, "fragmentation_threshold": 0, "min_pages": 1}
        return Plan(
            "maintenance",
            target,
            dialect,
            {"type": "checkpoints"},
            tuple(Step(f"step_{i}", "rebuild_fragmented_indexes", params) for i in range(steps)),
        )

    return plan


def test_a_write_that_is_not_repeatable_is_durable_before_it_is_sent(
    config: Config, demo_db: Path, riding: None
) -> None:
    reindexing = rebuilding("demo", "sqlite", "users")
    # Each REINDEX's audit row commits before it is sent (a server may finish it after
    # aishell died; the row says it was sent), then the step's end: per step, its two
    # indexes and its end.
    assert commits_per_step(config, reindexing) == 2 + 1
    run = commands.apply_plan(config, reindexing(3))
    assert all(s.output["indexes_rebuilt"] == 2 for s in run.steps)


def stored_steps(config: Config, run_id: str | None = None) -> list[tuple[int, str]]:
    """The steps of a run (by default the newest) as another process finds them."""
    with sqlite3.connect(config.state_url.removeprefix("sqlite:///")) as db:
        if run_id is None:
            (run_id,) = db.execute(
                "SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
        return db.execute(
            "SELECT idx, status FROM steps WHERE run_id = ? ORDER BY idx", (run_id,)
        ).fetchall()


def test_every_step_is_in_the_store_when_its_run_ends(
    config: Config, demo_db: Path, riding: None
) -> None:
    commands.apply_plan(config, counting_plan(1))
    run = commands.apply_plan(config, counting_plan(3))
    with sqlite3.connect(config.state_url.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT idx, status, started_at IS NOT NULL, finished_at IS NOT NULL "
            "FROM steps WHERE run_id = ? ORDER BY idx",
            (run.run_id,),
        ).fetchall()
        audited = db.execute(
            "SELECT count(*) FROM statements WHERE run_id = ? AND finished_at IS NOT NULL",
            (run.run_id,),
        ).fetchone()[0]
    assert rows == [(i, "succeeded", 1, 1) for i in range(3)]
    assert audited == 3


def stored_when_sent(
    config: Config, plan: Plan, sending: Callable[[str], bool]
) -> list[tuple[int, str]] | None:
    """Run `plan` (it completes); the steps another process finds in the store when the
    first statement that `sending` matches reaches the database."""
    seen: list[list[tuple[int, str]]] = []

    def on_execute(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if not seen and sending(statement):
            seen.append(stored_steps(config))

    commands.apply_plan(config, counting_plan(1))  # the store exists, its schema is current
    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        run = commands.apply_plan(config, plan)
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
    assert run.status == "completed", run.error
    return seen[0] if seen else None


def test_steps_that_rode_are_committed_before_a_write_that_follows_them_is_sent(
    config: Config, demo_db: Path, riding: None
) -> None:
    # Two quick reads, then a REINDEX, which is not repeatable: when it reaches the
    # database, another process finds both reads succeeded and the REINDEX's step
    # running. What the store holds is always the run's beginning, never a later step
    # without an earlier one.
    reads = [Step(f"step_{i}", "count_table_rows", {"table": "users"}) for i in range(2)]
    rebuild = Step(
        "step_2",
        "rebuild_fragmented_indexes",
        {"table": "users", "fragmentation_threshold": 0, "min_pages": 1},
    )
    plan = Plan("maintenance", "demo", "sqlite", {"type": "ride"}, (*reads, rebuild))
    seen = stored_when_sent(config, plan, lambda sql: sql.upper().startswith("REINDEX"))
    assert seen == [(0, "succeeded"), (1, "succeeded"), (2, "running")]


def test_a_step_that_may_take_long_is_seen_running_with_all_before_it(
    config: Config, demo_db: Path, monkeypatch: pytest.MonkeyPatch, riding: None
) -> None:
    # Quick reads ride; then a step on a table counted as large: when its statement
    # reaches the database, another process sees it running and the reads succeeded.
    quick = attempts._quick

    def large_last(run: Any, step: Any) -> bool:
        return quick(run, step) and step.params["table"] != "orders"

    monkeypatch.setattr(attempts, "_quick", large_last)
    steps = (
        Step("step_0", "count_table_rows", {"table": "users"}),
        Step("step_1", "count_table_rows", {"table": "users"}),
        Step("step_2", "count_table_rows", {"table": "orders"}),
    )
    plan = Plan("maintenance", "demo", "sqlite", {"type": "long"}, steps)
    seen = stored_when_sent(config, plan, lambda sql: '"orders"' in sql)
    assert seen == [(0, "succeeded"), (1, "succeeded"), (2, "running")]


rebuilding_on_mariadb = rebuilding("db", "mysql", "t")


@pytest.fixture
def mariadb_table(home: Path, mysql_url: str) -> Config:
    from sqlalchemy import text

    from tests.helpers import use_target
    from tests.services import engine

    with engine(mysql_url).begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
        conn.execute(text("INSERT INTO t VALUES (1, 'a'), (2, 'b')"))
    return use_target(home, mysql_url)


def test_a_rebuild_on_mariadb_is_a_repeatable_write(mariadb_table: Config, riding: None) -> None:
    # ALTER TABLE ... FORCE rebuilds the table as OPTIMIZE TABLE does, changing no row
    # and no definition: on a small table its step commits nothing of its own.
    assert commits_per_step(mariadb_table, rebuilding_on_mariadb) == 0
    run = commands.apply_plan(mariadb_table, rebuilding_on_mariadb(1))
    sent = [s["sql"] for s in commands.run_statements(mariadb_table, run.run_id)]
    assert any(sql.startswith("ALTER TABLE `t` FORCE") for sql in sent), sent


def test_a_rebuild_on_a_large_mariadb_table_is_durable_before_it_is_sent(
    mariadb_table: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempts, "QUICK_STEP_BYTES", 0)
    assert commits_per_step(mariadb_table, rebuilding_on_mariadb) == 3


HOT: list[tuple[Hot, dict[str, Any]]] = [
    (
        _STEP_STARTED,
        {
            "b_run": "r",
            "b_idx": 1,
            "status_seal": "s",
            "resolved_params": "{}",
            "sql": "[]",
            "attempts": 2,
            "started_at": "t",
            "risk_level": "high",
        },
    ),
    (
        _STEP_FINISHED,
        {
            "b_run": "r",
            "b_idx": 1,
            "status": "succeeded",
            "status_seal": "s",
            "output": "{}",
            "output_seal": "o",
            "error": None,
            "finished_at": "t",
            "sql": None,
            "resolved_params": "{}",
        },
    ),
    (
        _STATEMENT_STARTED,
        {
            "run_id": "r",
            "step_idx": 1,
            "attempt": 1,
            "sql": "SELECT 1",
            "parameters": None,
            "started_at": "t",
        },
    ),
    (_STATEMENT_FINISHED, {"b_id": 7, "finished_at": "t", "rows": 1, "error": None}),
    (_PROGRESS_SAVED, {"b_run": "r", "b_idx": 1, "progress": "{}", "updated_at": "t"}),
    (_PROGRESS_FIRST, {"run_id": "r", "step_idx": 1, "progress": "{}", "updated_at": "t"}),
    (EVENT, {"run_id": "r", "step_idx": None, "at": "t", "kind": "k", "data": "{}"}),
    (_STOP_REQUESTED, {"b_run": "r"}),
]


@pytest.mark.parametrize(("hot", "params"), HOT)
def test_a_hot_statement_sends_what_sqlalchemy_would(hot: Hot, params: dict[str, Any]) -> None:
    """On a SQLite store the step's writes go to the driver as compiled once; their
    parameters are in the order, and with the values, SQLAlchemy itself would send."""
    columns = list(params) if hot in (EVENT, _STATEMENT_STARTED, _PROGRESS_FIRST) else None
    compiled = hot.statement.compile(dialect=sqlite3_dialect(), column_keys=columns)
    expected = compiled.construct_params(params)
    assert hot.sqlite == compiled.string
    assert hot.values(params) == tuple(expected[name] for name in compiled.positiontup or ())


def sqlite3_dialect() -> Any:
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


def test_a_failure_of_a_hot_write_is_a_state_error(config: Config, demo_db: Path) -> None:
    """As the engine's error hook makes of any other statement's failure."""
    with StateStore(config.state_url) as store:
        store._conn.connection.driver_connection.execute("DROP TABLE events")  # type: ignore[union-attr]
        with pytest.raises(StateError, match=r"cannot be used \(no such table: events\)"):
            store.record_event(new_run_id(), None, "x", {})
