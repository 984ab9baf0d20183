"""optimize_table on its own, outside full maintenance, decides on MariaDB as the
fragmentation step measures (fragmentation.measure): a table of half-empty pages, whose
DATA_FREE is small, is rebuilt; a table as full as a rebuild leaves it is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aishell.config.models import Config
from tests.handlers.mysql.test_free_space_one_measure import _step
from tests.handlers.mysql.test_rebuild_reclaims import _table, file_bytes
from tests.helpers import run_sql, use_target
from tests.services import scratch_mysql


@pytest.fixture
def made(home: Path) -> Iterator[tuple[Config, str]]:
    """`sparse` and `nopk` of pages a fifth and a quarter full, `tight` as a rebuild
    leaves it (as test_free_space_one_measure's tables)."""
    with scratch_mysql() as url:
        run_sql(
            url,
            *_table("sparse", key=True, index=True, keep_every=5),
            *_table("nopk", key=False, index=False, keep_every=4),
            *_table("tight", key=True, index=True, keep_every=1),
        )
        yield use_target(home, url), url


@pytest.mark.parametrize("table", ["sparse", "nopk"])
def test_optimize_table_alone_rebuilds_a_table_of_half_empty_pages(
    made: tuple[Config, str], table: str
) -> None:
    config, url = made
    before = file_bytes(url, table)
    out = _step(config, "optimize_table", {"table": table, "fragmentation_threshold": 30})
    assert out["vacuumed"] is True, out
    assert file_bytes(url, table) < before / 2
    tight = _step(config, "optimize_table", {"table": "tight", "fragmentation_threshold": 30})
    assert tight["vacuumed"] is False and "free" in tight["reason"], tight
