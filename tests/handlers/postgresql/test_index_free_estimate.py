"""A PostgreSQL B-tree's estimated free share (from the catalog's statistics, before any
full scan) agrees with what the index holds: pgstatindex's avg_leaf_density of its leaf
pages, and the pages a REINDEX gives back, within TOLERANCE points, for indexes of many
duplicates (kept as posting lists) and of none; so the rebuild step reads and rebuilds a
half-empty index of duplicates instead of calling it full."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target
from tests.services import engine

# Percentage points between the estimate and what the index holds. The estimate counts
# a rebuild's leaf pages filled to the fill factor; a build of long posting lists (up to
# a tenth of a page each) ends each page a little short of it.
TOLERANCE = 6.0
ROWS = 200_000
# Each built by CREATE INDEX after the rows are in (its leaf pages as dense as a build
# makes them): d_k 50 keys, d_t 300 text keys, d_kf 50 keys at fill factor 70,
# d_kid no duplicate (50 keys times unique ids), pkey unique, d_knd duplicates not kept
# as posting lists.
INDEXES = {
    "d_k": "CREATE INDEX d_k ON d (k)",
    "d_t": "CREATE INDEX d_t ON d (t)",
    "d_kf": "CREATE INDEX d_kf ON d (k) WITH (fillfactor = 70)",
    "d_kid": "CREATE INDEX d_kid ON d (k, id)",
    "d_knd": "CREATE INDEX d_knd ON d (k) WITH (deduplicate_items = off)",
}
NAMES = {*INDEXES, "d_pkey"}


def _made(url: str) -> None:
    run_sql(
        url,
        "CREATE EXTENSION pgstattuple",
        "CREATE TABLE d (id int PRIMARY KEY, k int NOT NULL, t text NOT NULL) "
        "WITH (autovacuum_enabled = false)",
        "CREATE TABLE other (id int PRIMARY KEY)",
        f"INSERT INTO d SELECT g, g % 50, 'value-' || (g % 300) FROM generate_series(1, {ROWS}) g",
        *INDEXES.values(),
        "VACUUM (ANALYZE) d, other",
    )


def _estimates(home: Any, url: str, together: bool) -> dict[str, float]:
    """Each index of d's estimated free share, as the fragmentation step gives it (with
    another table: the plan's tables read in one query)."""
    tables = ["d", "other"] if together else ["d"]
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "analyze_table_fragmentation", {"tables": tables}
    )
    result = commands.apply_plan(use_target(home, url), plan, approver=PreApproved())
    assert result.status == "completed", result.error
    (found,) = [t for t in result.steps[0].output["by_table"] if t["table"] == "d"]
    return {i["index"]: i["estimated_free_percent"] for i in found["indexes"]}


def _held(url: str, name: str) -> float:
    """The share of the index's pages that its entries do not need, from pgstatindex:
    the bytes its leaf pages hold (avg_leaf_density of each page's 8,152 bytes of room)
    packed at its fill factor, the internal pages and the metapage, against its pages
    (empty and deleted ones free)."""
    with engine(url).connect() as conn:
        stats = conn.execute(text(f"SELECT * FROM pgstatindex('{name}')")).mappings().one()
        options = conn.execute(text(f"SELECT reloptions FROM pg_class WHERE relname = '{name}'"))
        fill = int(next((o.split("=")[1] for o in options.scalar() or [] if "fillfactor" in o), 90))
    room = 8192 - 24 - 16
    held = stats["leaf_pages"] * room * float(stats["avg_leaf_density"]) / 100
    leaf = math.ceil(held / (room - 8192 * (100 - fill) / 100))
    return 100 * (1 - (leaf + stats["internal_pages"] + 1) / (stats["index_size"] / 8192))


def _given_back(url: str, name: str) -> float:
    """The share of the index's pages a REINDEX gives back."""
    size = f"SELECT pg_relation_size('{name}')"
    with engine(url).connect() as conn:
        before = conn.execute(text(size)).scalar_one()
        conn.execute(text(f"REINDEX INDEX {name}"))
        after = conn.execute(text(size)).scalar_one()
    return 100 * (1 - after / before)


def _agrees(estimated: dict[str, float], truth: dict[str, float]) -> None:
    off = {n: (estimated[n], round(truth[n], 2)) for n in truth}
    assert all(abs(e - t) <= TOLERANCE for e, t in off.values()), off


@pytest.mark.parametrize("together", [True, False], ids=["with others", "alone"])
def test_an_index_estimate_agrees_with_pgstatindex_with_and_without_duplicates(
    home: Any, pg_url: str, together: bool
) -> None:
    _made(pg_url)
    fresh = _estimates(home, pg_url, together)
    assert set(fresh) == NAMES
    _agrees(fresh, {n: _held(pg_url, n) for n in NAMES})
    assert all(v < 10 for v in fresh.values()), fresh

    # 55 of every 100 rows gone, spread over the whole table: the posting lists of d_k
    # shrink in place, its leaf pages left about 44% full.
    run_sql(pg_url, "DELETE FROM d WHERE id % 20 < 11", "VACUUM (ANALYZE) d")
    sparse = _estimates(home, pg_url, together)
    _agrees(sparse, {n: _held(pg_url, n) for n in NAMES})
    assert all(v > 45 for v in sparse.values()), sparse
    _agrees(sparse, {n: _given_back(pg_url, n) for n in NAMES})


def test_an_index_of_duplicates_filled_row_by_row_is_estimated_as_a_rebuild_gives_back(
    home: Any, pg_url: str
) -> None:
    """Filled by inserts, an index keeps some duplicates apart (they are merged only when
    a page would split): a rebuild gives back more than its leaf density shows, and the
    estimate says what the rebuild gives back."""
    run_sql(
        pg_url,
        "CREATE TABLE d (id int PRIMARY KEY, r int NOT NULL) WITH (autovacuum_enabled = false)",
        "CREATE INDEX d_r ON d (r)",
        f"INSERT INTO d SELECT g, (g * 7919) % 500 FROM generate_series(1, {ROWS}) g",
        "DELETE FROM d WHERE id % 3 = 0",
        "VACUUM (ANALYZE) d",
    )
    estimated = _estimates(home, pg_url, False)
    _agrees(estimated, {n: _given_back(pg_url, n) for n in ("d_r", "d_pkey")})


def test_a_half_empty_index_of_duplicates_is_read_and_rebuilt(home: Any, pg_url: str) -> None:
    _made(pg_url)
    run_sql(pg_url, "DELETE FROM d WHERE id % 20 < 11", "VACUUM (ANALYZE) d")
    plan = one_step_plan(
        "maintenance",
        "db",
        "postgresql",
        "rebuild_fragmented_indexes",
        {"table": "d", "fragmentation_threshold": 30},
    )
    result = commands.apply_plan(use_target(home, pg_url), plan, approver=PreApproved())
    assert result.status == "completed", result.error
    rebuilt = {r["index"] for r in result.steps[0].output["rebuilt"]}
    assert {"d_k", "d_t"} <= rebuilt, result.steps[0].output
