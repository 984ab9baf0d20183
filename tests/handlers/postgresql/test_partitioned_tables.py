"""A partitioned table on PostgreSQL: the parent has no storage of its own, so no
per-relation function that needs storage (amcheck, pgstattuple, pgstatindex) is given
it or its partitioned indexes; its partitions are maintained as tables, and whatever is
said of the parent says it is partitioned."""

from __future__ import annotations

from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target

EXTENSIONS = ["CREATE EXTENSION amcheck", "CREATE EXTENSION pgstattuple"]
# meas, partitioned by date; meas_2024 partitioned again by id (a sub-partitioned
# partition); an index on the whole tree (a partitioned index, relkind I, with an index
# of each partition under it), and one on the parent ONLY (invalid until each partition's
# index is attached).
PARTITIONED = [
    "CREATE TABLE meas (id int, d date) PARTITION BY RANGE (d)",
    "CREATE INDEX meas_id ON meas (id)",
    "CREATE TABLE meas_2024 PARTITION OF meas FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')"
    " PARTITION BY RANGE (id)",
    "CREATE TABLE meas_2024_a PARTITION OF meas_2024 FOR VALUES FROM (0) TO (1000)",
    "CREATE TABLE meas_2024_b PARTITION OF meas_2024 FOR VALUES FROM (1000) TO (100000)",
    "CREATE TABLE meas_2025 PARTITION OF meas FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE INDEX meas_d_only ON ONLY meas (d)",
    "INSERT INTO meas SELECT g, date '2024-01-01' + (g % 700) FROM generate_series(1, 5000) g",
    "CREATE TABLE plain (id int PRIMARY KEY, v text)",
    "INSERT INTO plain SELECT g, 'x' FROM generate_series(1, 1000) g",
    "ANALYZE",
]
PARENTS = {"meas", "meas_2024"}
LEAVES = {"meas_2024_a", "meas_2024_b", "meas_2025"}


def _config(home: Any, pg_url: str, *, extensions: bool = True) -> Config:
    run_sql(pg_url, *(EXTENSIONS if extensions else []), *PARTITIONED)
    return use_target(home, pg_url)


def _outputs(result: Any, tool: str) -> list[dict[str, Any]]:
    """Each table's output of the steps of `tool` (a step of many tables: by_table)."""
    found = []
    for step in result.steps:
        if step.tool == tool and step.output:
            found += step.output.get("by_table") or [step.output]
    return found


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("kind", ["quick", "standard", "full", "emergency"])
def test_every_maintenance_type_completes_with_a_partitioned_table(
    home: Any, pg_url: str, kind: str, dry_run: bool
) -> None:
    config = _config(home, pg_url)
    result = commands.run_job(
        config, "maintenance", {"type": kind}, approver=PreApproved(), dry_run=dry_run
    )
    assert result.status == "completed", result.error
    assert all(s.status in ("succeeded", "previewed", "skipped") for s in result.steps), [
        (s.tool, s.status, s.error) for s in result.steps
    ]
    health = result.steps[0].output
    by_name = {t["table"]: t for t in health["tables"]}
    for parent in PARENTS:
        assert by_name[parent]["partitioned"] is True
    for fragmentation in _outputs(result, "analyze_table_fragmentation"):
        if fragmentation["table"] in PARENTS:
            assert fragmentation["partitioned"] is True
            assert "partitioned" in fragmentation["method"]
            assert fragmentation["fragmentation_percent"] is None
    for rebuild in _outputs(result, "rebuild_fragmented_indexes"):
        if rebuild["table"] in PARENTS:
            assert rebuild["indexes_rebuilt"] == 0
            assert all("partitioned" in s["reason"] for s in rebuild["skipped"])
    check = health.get("corruption_check") or next(
        (s.output for s in result.steps if s.tool == "check_table_corruption" and s.output),
        None,
    )
    if (check is not None and not dry_run) or kind == "full":
        assert check is not None
        assert {check["status_by_table"][p] for p in PARENTS} == {"partitioned"}
        assert set(check["checked_tables"]) >= LEAVES
        assert check["corruption_found"] is False, check


def test_a_partitioned_table_named_alone_has_its_partitions_checked(home: Any, pg_url: str) -> None:
    """Named alone, as VACUUM and ANALYZE take it: its partitions are what is checked."""
    config = _config(home, pg_url)
    result = commands.run_job(
        config, "maintenance", {"type": "emergency", "tables": ["meas"]}, approver=PreApproved()
    )
    assert result.status == "completed", result.error
    check = result.steps[1].output
    assert check["status_by_table"]["meas"] == "partitioned"
    assert set(check["checked_tables"]) >= LEAVES
    assert check["corruption_found"] is False


def test_without_amcheck_or_pgstattuple_the_parent_is_not_read_whole(
    home: Any, pg_url: str
) -> None:
    """The check without amcheck reads each table whole: a parent's rows are its
    partitions', which are read as tables, not twice."""
    config = _config(home, pg_url, extensions=False)
    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    check = result.steps[0].output["corruption_check"]
    assert check["status_by_table"]["meas"] == "partitioned"
    sql = commands.run_statements(config, result.run_id)
    full_read = 'SELECT pg_catalog.count(*) FROM "{}"'
    assert not [r for r in sql if full_read.format("meas") in r["sql"]]
    assert [r for r in sql if full_read.format("meas_2025") in r["sql"]]
