"""What SQLite's fragmentation step says VACUUM gives back of a table is the pages a
repacking of its b-trees saves, not the unused bytes of its leaves: a row too large for
two to share a page leaves room no VACUUM can fill. Its sum with the file's freelist is
what VACUUM gives back, for rowid tables, WITHOUT ROWID tables, indexes and rows held
mostly in overflow pages alike, and the health report sizes each such table whole."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.handlers.maintenance.test_sqlite_freelist_once import fragmentation, pragma
from tests.helpers import one_step_plan, use_target

ROWS = 4000
# Each layout: its statements, then its rows (key, value) as the table takes them.
LAYOUTS = {
    # 2,100-byte rows: one a page, nearly half of each page unused and unusable.
    "one_a_page": "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
    # 1,500-byte rows: two a page, a quarter of each page unused and unusable.
    "two_a_page": "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
    # 20,000-byte rows: each mostly in overflow pages.
    "overflow": "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
    "without_rowid": "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB) WITHOUT ROWID",
    "indexed": "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
}
WIDTH = {"one_a_page": 2100, "two_a_page": 1500, "overflow": 20000}


def _made(path: Path, layout: str, keep_every: int) -> None:
    """Table t of `layout`; all but each keep_every-th row deleted, here and there."""
    rows = ROWS // 20 if layout == "overflow" else ROWS
    width = WIDTH.get(layout, 120)
    generator = random.Random(7)
    with sqlite3.connect(path) as conn:
        conn.execute(LAYOUTS[layout])
        if layout == "indexed":
            conn.execute("CREATE INDEX t_v ON t (v)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?)",
            ((i, generator.randbytes(width)) for i in range(rows)),
        )
        if keep_every > 1:
            conn.execute(f"DELETE FROM t WHERE id % {keep_every} <> 0")
    conn.close()


def _given_back(path: Path) -> int:
    page = pragma(path, "page_size")
    before = pragma(path, "page_count")
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
    conn.close()
    return (before - pragma(path, "page_count")) * page


@pytest.mark.parametrize("layout", ["one_a_page", "two_a_page", "overflow"])
def test_room_no_vacuum_can_fill_is_not_counted(home: Path, layout: str) -> None:
    path = home / f"{layout}.db"
    _made(path, layout, keep_every=1)
    out = fragmentation(home, path, ["t"])["by_table"][0]
    assert _given_back(path) == 0
    page = pragma(path, "page_size")
    assert out["estimated_benefit_bytes"] <= 2 * page, out
    assert out["free_space_percent"] < 5, out
    assert out["recommendation"] == "No optimization needed", out


@pytest.mark.parametrize("keep_every", [1, 5])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_estimate_and_the_freelist_are_what_vacuum_gives_back(
    home: Path, layout: str, keep_every: int
) -> None:
    path = home / f"{layout}.db"
    _made(path, layout, keep_every)
    page = pragma(path, "page_size")
    freelist = pragma(path, "freelist_count") * page
    out = fragmentation(home, path, ["t"])
    estimated = out["estimated_benefit_bytes"] + freelist
    given_back = _given_back(path)
    assert abs(estimated - given_back) <= max(0.15 * given_back, 2 * page), (
        estimated,
        given_back,
        out,
    )


@pytest.mark.parametrize("layout", ["overflow", "without_rowid", "indexed"])
def test_the_health_report_sizes_each_table_whole(home: Path, layout: str) -> None:
    path = home / f"{layout}.db"
    _made(path, layout, keep_every=1)
    config = use_target(home, f"sqlite:///{path}")
    plan = one_step_plan("maintenance", "db", "sqlite", "analyze_database_health", {})
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    table = result.steps[0].output["tables"][0]
    with sqlite3.connect(path) as conn:
        size = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    conn.close()
    assert table["table_bytes"] == size["t"] > 0
    assert table["index_bytes"] == size.get("t_v", 0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_table_vacuum_just_packed_has_nothing_left_to_give(home: Path, layout: str) -> None:
    """Its leaves in order (past its own overflow and interior pages) and no room a
    repacking would save: nothing to recommend."""
    path = home / f"{layout}.db"
    _made(path, layout, keep_every=5)
    _given_back(path)
    out = fragmentation(home, path, ["t"])["by_table"][0]
    assert out["fragmentation_percent"] < 10, out
    assert out["estimated_benefit_bytes"] <= 2 * pragma(path, "page_size"), out
    assert out["recommendation"] == "No optimization needed", out
