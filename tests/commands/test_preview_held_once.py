"""A preview waits on a held table once.

`plan` and `run --dry-run` report the moment they looked: a table another session held
past the lock wait is shown held by every step that names it, and no later step (nor a
second try of the same step) waits on it again. With 20 tables held, a full maintenance
plan waited on each of them five times over (64 s against 23 s now, each wait being the
target's lock wait). A real run still tries again: the holder may be done by then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from aishell.targets.lockholders import is_lock_timeout
from tests.policy.test_held_when_counted import _config, held
from tests.services import engine, scratch_postgresql

HELD = ["held_a", "held_b", "held_c"]
FREE = ["free_a", "free_b"]


@contextmanager
def lock_timeouts() -> Iterator[list[Any]]:
    """The parameters of each statement that ended in a lock timeout in this process
    while the block runs."""
    found: list[Any] = []

    def seen(context: ExceptionContext) -> None:
        error = context.sqlalchemy_exception
        if isinstance(error, DBAPIError) and is_lock_timeout(error):
            found.append(context.parameters)

    event.listen(Engine, "handle_error", seen)
    try:
        yield found
    finally:
        event.remove(Engine, "handle_error", seen)


def waits_alone(url: str, waits: list[Any]) -> Counter[str]:
    """By table, the waits of a statement about that table alone (a one-name list of
    tables, or its oid); a statement of many tables counts for none."""
    with engine(url).connect() as conn:
        rows = conn.execute(
            text("SELECT oid::int, relname::text FROM pg_class WHERE relname LIKE 'held%'")
        )
        names = {oid: name for oid, name in rows}
    found: Counter[str] = Counter()
    for params in waits:
        for value in (params or {}).values():
            if isinstance(value, list) and len(value) == 1:
                found[value[0]] += 1
            elif isinstance(value, int) and value in names:
                found[names[value]] += 1
    return found


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            for name in [*HELD, *FREE]:
                conn.execute(text(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)"))
                conn.execute(text(f"CREATE INDEX {name}_v ON {name} (v)"))
                conn.execute(
                    text(f"INSERT INTO {name} SELECT g, 'x' FROM generate_series(1, 50) g")
                )
        yield url


def _locks() -> list[str]:
    return [f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE" for name in HELD]


@pytest.mark.parametrize("maintenance", ["full", "standard", "quick"])
def test_a_plan_waits_on_each_held_table_once(home: Path, database: str, maintenance: str) -> None:
    config = _config(home, database)
    with held(database, *_locks()), lock_timeouts() as waits:
        preview = commands.plan_job(config, "maintenance", {"type": maintenance})
    assert preview.plan.steps
    alone = waits_alone(database, waits)
    assert all(alone[name] <= 1 for name in HELD), (alone, waits)
    # Besides, a query of many tables meets a held one once per aspect read together
    # (sizes, estimates), before any table is known held.
    assert len(waits) - sum(alone.values()) <= 3, waits


def test_every_step_of_a_plan_still_names_the_held_tables(home: Path, database: str) -> None:
    config = _config(home, database)
    with held(database, *_locks()):
        preview = commands.plan_job(config, "maintenance", {"type": "full"})
    measuring = [
        s for s in preview.steps if s.tool in ("rebuild_fragmented_indexes", "optimize_table")
    ]
    assert len(measuring) == 2, [s.tool for s in preview.steps]
    for step in measuring:
        for name in HELD:
            assert any(name in sql and "not measured" in sql for sql in step.sql), step.sql


def test_a_dry_run_waits_on_each_held_table_once(home: Path, database: str) -> None:
    config = _config(home, database)
    with held(database, *_locks()), lock_timeouts() as waits:
        result = commands.run_job(config, "maintenance", {"type": "full"}, dry_run=True)
    alone = waits_alone(database, waits)
    assert all(alone[name] <= 1 for name in HELD), (alone, waits)
    assert len(waits) - sum(alone.values()) <= 3, waits
    steps = {s.tool: s for s in result.steps}
    for tool in ("analyze_database_health", "analyze_table_fragmentation"):
        skipped = steps[tool].output["skipped_tables"]
        assert {s["table"] for s in skipped} == set(HELD), (tool, skipped)


def test_a_run_tries_a_held_table_again(home: Path, database: str) -> None:
    """Not a preview: a step tries each held table twice (the second time after the
    others), since the holder may have let go."""
    config = _config(home, database)
    with held(database, *_locks()), lock_timeouts() as waits:
        result = commands.run_job(
            config, "maintenance", {"type": "quick"}, approver=PreApproved(up_to=RiskLevel.LOW)
        )
    (statistics,) = [s for s in result.steps if s.tool == "update_table_statistics"]
    assert {s["table"] for s in statistics.output["skipped_tables"]} == set(HELD)
    assert set(statistics.output["tables_done"]) == set(FREE)
    alone = waits_alone(database, waits)
    assert all(alone[name] >= 2 for name in HELD), (alone, waits)


@pytest.mark.parametrize("maintenance", ["full", "standard", "quick"])
def test_a_preview_sees_the_held_tables_before_it_waits(
    home: Path, database: str, maintenance: str
) -> None:
    """PostgreSQL shows who holds a table ACCESS EXCLUSIVE: a plan and a dry run look
    once, and wait on no held table at all, each step still naming them held."""
    config = _config(home, database)
    with held(database, *_locks()), lock_timeouts() as waits:
        preview = commands.plan_job(config, "maintenance", {"type": maintenance})
        result = commands.run_job(config, "maintenance", {"type": maintenance}, dry_run=True)
    assert waits == [], waits
    assert result.status == "completed", result.error
    health = result.steps[0].output
    assert {s["table"] for s in health["skipped_tables"]} == set(HELD), health
    assert all("not waited for" in s["reason"] for s in health["skipped_tables"]), health
    if maintenance != "quick":  # quick measures nothing it would show held
        shown = [sql for step in preview.steps for sql in step.sql]
        for name in HELD:
            assert any(name in sql and "not measured" in sql for sql in shown), shown
