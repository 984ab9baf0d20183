"""On MariaDB every place that reports or decides on a table's free space measures it as
the fragmentation step does (fragmentation.space_of: DATA_FREE and the room of the
half-empty pages a rebuild gives back): the health report, not DATA_FREE alone, which
a table whose rows were deleted here and there keeps small."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.handlers.mysql.test_rebuild_reclaims import _table, catalog
from tests.helpers import one_step_plan, run_sql, use_target
from tests.services import scratch_mysql


@pytest.fixture
def database(home: Path) -> Iterator[tuple[Config, str]]:
    """`sparse`: four rows of five deleted, spread over every page (its pages a fifth
    full, its DATA_FREE a few extents); `nopk`: three of four deleted, without a primary
    key; `tight`: as full as a rebuild leaves it."""
    with scratch_mysql() as url:
        run_sql(
            url,
            *_table("sparse", key=True, index=True, keep_every=5),
            *_table("nopk", key=False, index=False, keep_every=4),
            *_table("tight", key=True, index=True, keep_every=1),
        )
        yield use_target(home, url), url


def _step(config: Config, tool: str, params: dict[str, Any]) -> dict[str, Any]:
    plan = one_step_plan("maintenance", "db", "mysql", tool, params)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return dict(result.steps[0].output)


def test_health_reports_half_empty_pages_as_the_fragmentation_step_does(
    database: tuple[Config, str],
) -> None:
    config, url = database
    for table in ("sparse", "nopk"):
        found = catalog(url, table)
        # DATA_FREE alone says little is free.
        assert found["free"] < 0.2 * (found["data"] + found["index"] + found["free"]), found
    health = _step(config, "analyze_database_health", {})
    tables = {t["table"]: t for t in health["tables"]}
    for table in ("sparse", "nopk", "tight"):
        measured = _step(config, "analyze_table_fragmentation", {"table": table})
        assert tables[table]["free_percent"] == measured["fragmentation_percent"], table
        assert tables[table]["free_method"] == measured["method"], table
    assert tables["sparse"]["free_percent"] >= 50 and tables["nopk"]["free_percent"] >= 50
    assert tables["tight"]["free_percent"] < 20
    advised = " ".join(health["recommendations"])
    assert "sparse:" in advised and "nopk:" in advised and "tight:" not in advised, advised
