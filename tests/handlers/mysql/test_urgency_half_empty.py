"""On MariaDB the urgency that orders full maintenance (targets/catalog.py, one query
for every table) counts a table's half-empty pages as the fragmentation step and the
health report do, with each record's bytes as its columns declare them instead of a
sample of its rows: a table whose rows were mostly deleted here and there ranks above a
compact table of the same size, though its DATA_FREE is small. Where values are shorter
than their declared length, the estimate is lower than the measure, never higher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.targets import catalog as target_catalog
from tests.handlers.mysql.test_free_space_one_measure import _step
from tests.handlers.mysql.test_rebuild_reclaims import ROWS, _table, catalog
from tests.helpers import run_sql, use_target
from tests.services import engine, scratch_mysql


@pytest.fixture
def database(home: Path) -> Iterator[tuple[Config, str]]:
    """`sparse`: four rows of five deleted, spread over every page; `nopk`: three of four,
    without a primary key; `compact`: as full as a rebuild leaves it, the same size as
    `sparse`, and first by name (the order of tables of equal urgency); `wide`: as
    `sparse`, its 400-byte values in a column declared ten times as long."""
    with scratch_mysql() as url:
        run_sql(
            url,
            *_table("sparse", key=True, index=True, keep_every=5),
            *_table("nopk", key=False, index=False, keep_every=4),
            *_table("compact", key=True, index=True, keep_every=1),
            "CREATE TABLE wide (id INT PRIMARY KEY, pad VARCHAR(4000)) ENGINE=InnoDB",
            f"INSERT INTO wide SELECT seq, REPEAT('x', 400) FROM seq_1_to_{ROWS}",
            "DELETE FROM wide WHERE id % 5 <> 0",
            "ANALYZE TABLE wide",
        )
        yield use_target(home, url), url


def test_urgency_ranks_half_empty_pages_as_the_fragmentation_step_measures_them(
    database: tuple[Config, str],
) -> None:
    config, url = database
    sizes = {t: catalog(url, t) for t in ("sparse", "compact")}
    # Of the same size, and DATA_FREE alone says little of sparse is free.
    assert 0.7 < sizes["sparse"]["data"] / sizes["compact"]["data"] < 1.3, sizes
    assert sizes["sparse"]["free"] < 0.2 * sum(sizes["sparse"].values()), sizes
    with engine(url).connect() as conn:
        scores, estimates = target_catalog.urgency(conn), target_catalog.mysql_estimates(conn)
    assert scores["sparse"] > scores["compact"] + 0.5 and scores["nopk"] > scores["compact"] + 0.5
    for table in ("sparse", "nopk", "compact"):
        measured = _step(config, "analyze_table_fragmentation", {"table": table})
        estimate = estimates[table]
        assert estimate["size_bytes"] == measured["size_bytes"], table
        percent = 100.0 * estimate["free_bytes"] / estimate["size_bytes"]
        assert abs(percent - measured["fragmentation_percent"]) < 10, (table, estimate, measured)
        ranked = target_catalog.mysql_urgency(
            measured["size_bytes"], measured["estimated_benefit_bytes"]
        )
        assert abs(scores[table] - ranked) < 0.2, (table, scores[table], ranked)


def test_a_value_shorter_than_its_column_gives_a_lower_figure_never_a_higher_one(
    database: tuple[Config, str],
) -> None:
    config, url = database
    with engine(url).connect() as conn:
        estimate = target_catalog.mysql_estimates(conn)["wide"]
    measured = _step(config, "analyze_table_fragmentation", {"table": "wide"})
    assert measured["fragmentation_percent"] > 50, measured
    assert estimate["free_bytes"] <= measured["estimated_benefit_bytes"], (estimate, measured)


def test_full_maintenance_and_the_health_report_take_the_sparse_table_first(
    database: tuple[Config, str],
) -> None:
    config, _ = database
    preview = commands.plan_job(config, "maintenance", {"type": "full"})
    order = [
        t
        for s in preview.steps
        if s.tool == "analyze_table_fragmentation"
        for t in (s.params.get("tables") or [s.params["table"]])
    ]
    assert order.index("sparse") < order.index("compact"), order
    assert order.index("nopk") < order.index("compact"), order
    health = _step(config, "analyze_database_health", {})
    ranked = [t["table"] for t in health["tables"]]
    assert ranked.index("sparse") < ranked.index("compact"), health["tables"]
    assert ranked.index("wide") < ranked.index("compact"), health["tables"]
