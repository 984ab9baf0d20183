"""On MariaDB a table whose rows were mostly deleted keeps its half-empty pages, which
DATA_FREE does not count: the fragmentation analysis estimates the pages' fill from
what the rows need, and its figure is held against what a rebuild of the table gives
back on the server. The rebuild step counts the tables it rebuilt and their indexes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target
from tests.services import engine, scratch_mysql

ROWS = 60_000


def _table(name: str, *, key: bool, index: bool, keep_every: int, rows: int = ROWS) -> list[str]:
    """`name` of `rows` rows of about 400 bytes in key order, all but each keep_every-th
    deleted; its statistics brought up to date."""
    columns = "id INT NOT NULL" + (" PRIMARY KEY" if key else "") + ", k INT, pad VARCHAR(400)"
    sql = [
        f"CREATE TABLE {name} ({columns}) ENGINE=InnoDB",
        f"INSERT INTO {name} SELECT seq, seq, REPEAT('x', 400) FROM seq_1_to_{rows}",
    ]
    if index:
        sql.append(f"CREATE INDEX {name}_k ON {name} (k)")
    if keep_every > 1:
        sql.append(f"DELETE FROM {name} WHERE id % {keep_every} <> 0")
    return [*sql, f"ANALYZE TABLE {name}"]


@pytest.fixture
def database(home: Path) -> Iterator[tuple[Config, str]]:
    with scratch_mysql() as url:
        run_sql(
            url,
            *_table("frag", key=True, index=True, keep_every=5),
            *_table("nopk", key=False, index=False, keep_every=4),
            *_table("tight", key=True, index=True, keep_every=1),
        )
        yield use_target(home, url), url


def file_bytes(url: str, table: str) -> int:
    with engine(url).connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT FILE_SIZE FROM information_schema.INNODB_SYS_TABLESPACES "
                    "WHERE NAME = CONCAT(DATABASE(), '/', :t)"
                ),
                {"t": table},
            ).scalar_one()
        )


def catalog(url: str, table: str) -> dict[str, Any]:
    with engine(url).connect() as conn:
        row = conn.execute(
            text(
                "SELECT DATA_LENGTH, INDEX_LENGTH, DATA_FREE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            ),
            {"t": table},
        ).one()
    return {"data": int(row[0]), "index": int(row[1]), "free": int(row[2])}


def analyzed(config: Config, table: str) -> dict[str, Any]:
    plan = one_step_plan(
        "maintenance", "db", "mysql", "analyze_table_fragmentation", {"table": table}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return dict(result.steps[0].output)


def given_back_percent(url: str, table: str) -> float:
    """The share of the table's file a rebuild on the server gives back."""
    before = file_bytes(url, table)
    run_sql(url, f"ALTER TABLE {table} FORCE")
    return 100.0 * (before - file_bytes(url, table)) / before


@pytest.mark.parametrize("table", ["frag", "nopk"])
def test_half_empty_pages_count_as_fragmentation(database: tuple[Config, str], table: str) -> None:
    config, url = database
    out = analyzed(config, table)
    figures = catalog(url, table)
    # The size is the percentage's denominator: data, indexes and free extents.
    assert out["size_bytes"] == figures["data"] + figures["index"] + figures["free"], out
    assert out["method"].startswith("page fill"), out
    assert out["estimated_benefit_bytes"] > figures["free"], out
    assert out["recommendation"].startswith("rebuild"), out
    actual = given_back_percent(url, table)
    assert actual > 50
    assert abs(out["fragmentation_percent"] - actual) < 15, (out, actual)


def test_a_table_a_rebuild_would_not_shrink_is_not_fragmented(
    database: tuple[Config, str],
) -> None:
    config, url = database
    out = analyzed(config, "tight")
    assert out["fragmentation_percent"] < 15, out
    assert out["recommendation"] == "No optimization needed"
    assert given_back_percent(url, "tight") < 15


def test_the_rebuild_counts_tables_and_their_indexes(database: tuple[Config, str]) -> None:
    config, _ = database
    job = {"type": "full", "tables": ["frag", "nopk", "tight"]}
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    rebuild = next(s for s in result.steps if s.tool == "rebuild_fragmented_indexes")
    by_table = {o["table"]: o for o in rebuild.output["by_table"]}
    # frag: its primary key and k; nopk has no index; tight is not rebuilt.
    counts = {t: (o["tables_rebuilt"], o["indexes_rebuilt"]) for t, o in by_table.items()}
    assert counts == {"frag": (1, 2), "nopk": (1, 0), "tight": (0, 0)}, by_table
    report = result.report
    assert report["indexes_rebuilt"] == 2 and report["tables_optimized"] == 2, report
    assert "2 index(es) rebuilt" in report["summary"], report["summary"]


def _tables_where(step: Any, field: str) -> set[str]:
    """The tables a step of many tables did `field`'s work on (its by_table outcomes)."""
    outcomes = step.output.get("by_table") or [{**step.output, "table": step.params["table"]}]
    return {o["table"] for o in outcomes if o.get(field)}


def test_a_table_rebuilt_and_optimized_counts_once(database: tuple[Config, str]) -> None:
    config, url = database
    # A small table's file keeps whole extents free after its rebuild, a large share of
    # it: the optimize step after the rebuild takes it too.
    run_sql(url, *_table("small", key=True, index=True, keep_every=5, rows=6_000))
    job = {"type": "full", "tables": ["frag", "small", "tight"]}
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    steps = {s.tool: s for s in result.steps if s.output is not None}
    rebuilt = _tables_where(steps["rebuild_fragmented_indexes"], "tables_rebuilt")
    optimized = _tables_where(steps["optimize_table"], "vacuumed")
    assert rebuilt & optimized, (rebuilt, optimized)  # the case counted twice before
    assert result.report["tables_optimized"] == len(rebuilt | optimized), result.report
