"""A PostgreSQL partitioned table named to maintenance is the table with its partitions,
at every depth: each maintenance type plans them, the plan says so, and the catalog
read that finds them is one query whatever their number. In full maintenance each
partition is vacuumed once and analyzed once: by its partitioned table's ANALYZE, which
analyzes every partition under it (PostgreSQL 15), after their plain VACUUMs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.handlers.postgresql.test_partitioned_vacuum import _counts
from tests.helpers import run_sql, use_target
from tests.services import engine
from tests.targets.test_catalog_round_trips import sent_to

# ev: ev_1, and ev_2 partitioned in turn into ev_2a and ev_2b; `other` is a plain table.
LEAVES = ("ev_1", "ev_2a", "ev_2b")


def _events(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE ev (id int, body text) PARTITION BY RANGE (id)",
        "CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (0) TO (1000)",
        "CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (1000) TO (3000) "
        "PARTITION BY RANGE (id)",
        "CREATE TABLE ev_2a PARTITION OF ev_2 FOR VALUES FROM (1000) TO (2000)",
        "CREATE TABLE ev_2b PARTITION OF ev_2 FOR VALUES FROM (2000) TO (3000)",
        "INSERT INTO ev SELECT g, repeat('x', 60) FROM generate_series(0, 2999) g",
        "DELETE FROM ev WHERE id % 3 = 0",
        "CREATE TABLE other (id int PRIMARY KEY)",
        "INSERT INTO other SELECT generate_series(1, 50)",
    )


def _run(config: Config, url: str, job: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Run the job; each table's (VACUUMs, ANALYZEs) it did."""
    before = _counts(url)
    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    after = _counts(url)
    return {t: (after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in after}


def _tables_of(step: Any) -> list[str]:
    """The tables a step names (none where they are an earlier step's output)."""
    named = step.params.get("tables", [step.params.get("table")])
    return [t for t in named if t] if isinstance(named, list) else []


@pytest.mark.parametrize("kind", ["quick", "standard", "full", "emergency"])
def test_a_partitioned_table_named_is_planned_with_its_partitions(
    home: Path, pg_url: str, kind: str
) -> None:
    _events(pg_url)
    config = use_target(home, pg_url)
    plan = commands.make_plan(config, "maintenance", {"type": kind, "tables": ["ev"]})
    health = plan.steps[0]
    # The partitions at every depth, before their partitioned table; ev_2, partitioned
    # in turn, is analyzed within ev and has no step of its own, but is reported on.
    assert health.params["tables"] == [*LEAVES, "ev", "ev_2"]
    assert "ev (partitioned): its partitions ev_1, ev_2a, ev_2b included" in health.rationale
    assert "through ev_2, partitioned in turn" in health.rationale
    worked = {t for s in plan.steps[1:-1] for t in _tables_of(s)}
    # Emergency's corruption check reports on the whole tree, as the health step does.
    assert worked == {"ev", *LEAVES, *(["ev_2"] if kind == "emergency" else [])}
    preview = commands.plan_job(config, "maintenance", {"type": kind, "tables": ["ev"]})
    analyzed = [q for s in preview.steps if s.tool == "update_table_statistics" for q in s.sql]
    # ev's ANALYZE alone, which analyzes every partition under it.
    assert analyzed == ([] if kind in ("full", "emergency") else ['ANALYZE "ev"'])
    assert set(plan.assumptions["tables"]) >= {"ev", "ev_2", *LEAVES}


def test_full_maintenance_of_a_named_partitioned_table_vacuums_and_analyzes_each_once(
    home: Path, pg_url: str
) -> None:
    """Naming ev vacuumed no partition; and where they were named, each partition's
    VACUUM (ANALYZE) was analyzed again by ev's ANALYZE after it."""
    _events(pg_url)
    config = use_target(home, pg_url)
    for job in ({"type": "full", "tables": ["ev"]}, {"type": "full", "tables": ["ev", *LEAVES]}):
        done = _run(config, pg_url, job)
        for leaf in LEAVES:
            assert done[leaf] == (1, 1), (job, leaf, done)
        # The partitioned tables' statistics as a whole, each gathered once.
        assert done["ev"] == (0, 1) and done["ev_2"] == (0, 1), done
        assert done["other"] == (0, 0)
    with engine(pg_url).connect() as conn:
        inherited = conn.execute(
            text("SELECT DISTINCT tablename FROM pg_stats WHERE inherited ORDER BY 1")
        ).scalars()
        assert list(inherited) == ["ev", "ev_2"]


def test_the_plan_says_what_the_partitioned_table_s_analyze_does(home: Path, pg_url: str) -> None:
    _events(pg_url)
    use_target(home, pg_url)
    shown = CliRunner().invoke(
        cli, ["plan", "maintenance", "--type", "full", "--tables", "ev", "--json"]
    )
    assert shown.exit_code == 0, shown.output
    steps = json.loads(shown.stdout)["steps"]
    vacuums = [s for s in steps if s["tool"] == "optimize_table"]
    parent = vacuums[-1]
    assert parent["params"]["table"] == "ev" and "update_stats" not in parent["params"]
    assert "autovacuum never gathers" in parent["rationale"]
    assert "ev_1, ev_2a, ev_2b have no ANALYZE of their own" in parent["rationale"]
    for step in vacuums[:-1]:
        assert step["params"]["update_stats"] is False
        assert "ev's ANALYZE after them refreshes their statistics" in step["rationale"]
    assert [s["tool"] for s in steps if "ev" in (s["params"].get("table"),)] == ["optimize_table"]


def test_every_table_full_and_quick_analyze_each_partition_once(home: Path, pg_url: str) -> None:
    """Without --tables too: a partition's own ANALYZE, then its partitioned table's."""
    _events(pg_url)
    config = use_target(home, pg_url)
    done = _run(config, pg_url, {"type": "full"})
    for leaf in LEAVES:
        assert done[leaf] == (1, 1), (leaf, done)
    assert done["ev"] == (0, 1) and done["ev_2"] == (0, 1) and done["other"] == (1, 1)
    done = _run(config, pg_url, {"type": "quick"})
    assert all(done[t] == (0, 1) for t in (*LEAVES, "ev", "ev_2", "other")), done


def test_without_statistics_partitions_are_vacuumed_and_nothing_analyzed(
    home: Path, pg_url: str
) -> None:
    _events(pg_url)
    config = use_target(home, pg_url)
    done = _run(config, pg_url, {"type": "full", "tables": ["ev"], "update_stats": False})
    assert all(done[leaf] == (1, 0) for leaf in LEAVES), done
    assert done["ev"] == (0, 0) and done["ev_2"] == (0, 0)


def _planning_queries(config: Config, url: str) -> int:
    with sent_to(url) as sent:
        commands.make_plan(config, "maintenance", {"type": "full", "tables": ["ev", "big"]})
    return len(sent)


def test_finding_the_partitions_is_one_query_whatever_their_number(home: Path, pg_url: str) -> None:
    _events(pg_url)
    config = use_target(home, pg_url)
    run_sql(pg_url, "CREATE TABLE big (id int) PARTITION BY RANGE (id)")
    run_sql(pg_url, "CREATE TABLE big_0 PARTITION OF big FOR VALUES FROM (0) TO (10)")
    few = _planning_queries(config, pg_url)
    run_sql(
        pg_url,
        *(
            f"CREATE TABLE big_{i} PARTITION OF big FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
            for i in range(1, 40)
        ),
    )
    assert _planning_queries(config, pg_url) == few
    plan = commands.make_plan(config, "maintenance", {"type": "full", "tables": ["big"]})
    assert len(plan.steps[0].params["tables"]) == 41


def test_a_mariadb_partitioned_table_is_one_table(home: Path, mysql_url: str) -> None:
    """MariaDB's partitions are no tables of their own: the table named is the plan's."""
    run_sql(
        mysql_url,
        "CREATE TABLE ev (id int PRIMARY KEY) PARTITION BY RANGE (id) "
        "(PARTITION p0 VALUES LESS THAN (1000), PARTITION p1 VALUES LESS THAN MAXVALUE)",
        "CREATE TABLE other (id int PRIMARY KEY)",
    )
    config = use_target(home, mysql_url)
    for kind in ("quick", "full"):
        plan = commands.make_plan(config, "maintenance", {"type": kind, "tables": ["ev"]})
        assert plan.steps[0].params["tables"] == ["ev"]
        assert "partitioned" not in plan.steps[0].rationale
