"""A SQLite file's free pages (its freelist) are the database's: the fragmentation step
gives them once, apart from each table's own unused bytes, and the tables' sum with the
freelist is what VACUUM gives back. A step where no table is fragmented names none as
the most fragmented."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.render.figures import step_figures
from tests.helpers import one_step_plan, use_target

PAD = "x" * 300


def made(path: Path, tables: dict[str, int], keep_every: int) -> None:
    """Each table of `tables` with its rows (id, pad, an index on pad's prefix); all but
    each keep_every-th row of the first table deleted, to the freelist and half-empty
    pages."""
    with sqlite3.connect(path) as conn:
        for name, rows in tables.items():
            conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, pad TEXT)")
            conn.execute(f"CREATE INDEX {name}_pad ON {name} (pad)")
            conn.executemany(
                f"INSERT INTO {name} VALUES (?, ?)", ((i, f"{i:08}{PAD}") for i in range(rows))
            )
        first = next(iter(tables))
        if keep_every > 1:
            conn.execute(f"DELETE FROM {first} WHERE id % {keep_every} <> 0")
            conn.execute(f"DELETE FROM {first} WHERE id >= {tables[first] // 2}")
    conn.close()


def pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        value = int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    conn.close()
    return value


def fragmentation(home: Path, path: Path, tables: list[str]) -> dict[str, Any]:
    config = use_target(home, f"sqlite:///{path}")
    plan = one_step_plan(
        "maintenance", "db", "sqlite", "analyze_table_fragmentation", {"tables": tables}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return dict(result.steps[0].output)


def test_the_freelist_is_counted_once_and_the_sums_match_vacuum(home: Path) -> None:
    path = home / "frag.db"
    made(path, {"big": 20_000, "small": 50, "empty_t": 0}, keep_every=4)
    page = pragma(path, "page_size")
    freelist = pragma(path, "freelist_count") * page
    assert freelist > 100 * page  # the case: a freelist far larger than a small table
    out = fragmentation(home, path, ["big", "small", "empty_t"])
    by_table = {o["table"]: o for o in out["by_table"]}

    for name, table in by_table.items():
        # A table's benefit is its own pages' unused bytes, never the file's freelist.
        own = (table["pages"] + sum(i["pages"] for i in table["indexes"])) * page
        assert table["estimated_benefit_bytes"] <= own, (name, table)
        assert table["database_freelist"] == {
            "pages": freelist // page,
            "bytes": freelist,
            "percent": table["database_freelist_percent"],
        }
    assert by_table["empty_t"]["estimated_benefit_bytes"] < 2 * page
    assert out["estimated_benefit_bytes"] == sum(
        t["estimated_benefit_bytes"] for t in by_table.values()
    )

    # What VACUUM gives back is about the tables' unused bytes and the freelist, once.
    before = pragma(path, "page_count") * page
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
    conn.close()
    given_back = before - pragma(path, "page_count") * page
    estimated = out["estimated_benefit_bytes"] + freelist
    assert 0.75 * given_back <= estimated <= 1.25 * given_back, (estimated, given_back)


def test_no_table_is_named_most_fragmented_at_zero(home: Path) -> None:
    path = home / "tight.db"
    made(path, {"a": 0, "b": 0}, keep_every=1)
    out = fragmentation(home, path, ["a", "b"])
    assert {o["fragmentation_percent"] for o in out["by_table"]} == {0.0}
    shown = step_figures(out)
    assert "none fragmented" in shown and "most fragmented" not in shown, shown
