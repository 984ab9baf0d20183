"""The runs list reads the index of the runs newest first (ix_runs_newest, revision
0012_runs_newest) on SQLite and PostgreSQL: a page is its rows alone, never a sort of
every run, and the next page (after=) starts where the last one ended. A store an older
aishell left (at 0011_backup_seal, without the index) is upgraded when opened, and its
runs are listed as before, page after page.

Before, no index held that order: each page sorted every run (EXPLAIN QUERY PLAN: SCAN
runs, USE TEMP B-TREE FOR ORDER BY; 41 ms a page of a store of 10,000 runs)."""

from __future__ import annotations

import sqlite3
from contextlib import nullcontext
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from aishell.state import history
from aishell.state.runlist import LISTED
from aishell.state.store import StateStore
from tests.helpers import stored_run
from tests.services import scratch_postgresql

RUNS = 9
OLDER = "0011_backup_seal"
# The list's order and where a page after a run starts, as runlist.read_runs says them.
NEWEST = "runs.created_at DESC, runs.run_id"
AFTER = "runs.created_at <= ? AND (runs.created_at < ? OR runs.run_id > ?)"


def _runs(url: str) -> list[str]:
    """RUNS runs, some begun at one same time; their ids newest first, ties by id."""
    with StateStore(url) as store:
        for index in range(RUNS):
            stored_run(store, f"r{index}", "demo", [])
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for index in range(RUNS):
                conn.execute(
                    text("UPDATE runs SET created_at = :at WHERE run_id = :run"),
                    {"at": f"2026-11-0{1 + index // 3}T02:00:00.000+00:00", "run": f"r{index}"},
                )
    finally:
        engine.dispose()
    return [f"r{i}" for day in (2, 1, 0) for i in range(3 * day, 3 * day + 3)]


def _as_older_aishell_left_it(url: str) -> None:
    """The store at the revision before, as it was: without the index."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX IF EXISTS ix_runs_newest"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": OLDER})
    finally:
        engine.dispose()


def _paged(url: str, limit: int) -> list[str]:
    with StateStore(url) as store:
        seen: list[str] = []
        while page := store.list_runs(limit=limit, after=seen[-1] if seen else None):
            seen += [r["run_id"] for r in page]
            assert len(seen) <= RUNS
        return seen


def _index_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {str(i["name"]) for i in inspect(engine).get_indexes("runs")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_older_store_is_upgraded_with_the_index_and_lists_page_after_page(
    dialect: str, tmp_path: Path
) -> None:
    sqlite = nullcontext(f"sqlite:///{tmp_path / 'state.db'}")
    with scratch_postgresql() if dialect == "postgresql" else sqlite as url:
        newest_first = _runs(url)
        _as_older_aishell_left_it(url)
        assert "ix_runs_newest" not in _index_names(url)
        for limit in (1, 2, 4, RUNS + 1):
            assert _paged(url, limit) == newest_first  # upgraded at the first open
        with StateStore(url) as store:
            assert store.schema_revision == history.HEAD_REVISION
        assert "ix_runs_newest" in _index_names(url)


def test_a_sqlite_page_of_the_list_reads_the_index_and_sorts_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    _runs(url)
    columns = ", ".join(LISTED)
    first = f"SELECT {columns} FROM runs ORDER BY {NEWEST} LIMIT 50"
    after = f"SELECT {columns} FROM runs WHERE {AFTER} ORDER BY {NEWEST} LIMIT 50"
    at = "2026-11-02T02:00:00.000+00:00"
    with sqlite3.connect(tmp_path / "state.db") as conn:
        for query, values in ((first, ()), (after, (at, at, "r4"))):
            plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, values))
            assert "USING INDEX ix_runs_newest" in plan and "TEMP B-TREE" not in plan, plan


def test_a_postgresql_page_of_the_list_is_an_index_scan_without_a_sort() -> None:
    with scratch_postgresql() as url:
        _runs(url)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                # A few rows: only with its scans held off does the planner say which
                # index, if any, gives the order.
                conn.execute(text("SET enable_seqscan = off"))
                plan = "\n".join(
                    conn.execute(
                        text(
                            "EXPLAIN SELECT run_id FROM runs "
                            "ORDER BY created_at DESC, run_id LIMIT 50"
                        )
                    ).scalars()
                )
        finally:
            engine.dispose()
        assert "ix_runs_newest" in plan and "Sort" not in plan, plan
