"""Planning, the health report and the maintenance steps take the same tables for a
PostgreSQL partitioned table's partitions, from one read of its tree: here partitioned
at two levels, with a default partition, a partition in another schema (which holds
some of its rows, summed by health, but which this target does not maintain) and a
partition detached (a table of its own now, in none of them). The run's steps share one
read of the trees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell import commands
from aishell.handlers.postgresql.catalog import partitioned
from aishell.policy.approvers import PreApproved
from aishell.targets.partitions import PARTITION_TREE, partition_trees
from tests.handlers.postgresql.test_partitioned_vacuum import _counts, _outputs
from tests.helpers import one_step_plan, run_sql, use_target
from tests.services import engine
from tests.targets.test_catalog_round_trips import sent_to

TREE = [
    "CREATE SCHEMA kept_apart",
    "CREATE TABLE ev (id int, body text) PARTITION BY RANGE (id)",
    "CREATE INDEX ev_id ON ev (id)",
    "CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (0) TO (1000)",
    "CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (1000) TO (3000) PARTITION BY RANGE (id)",
    "CREATE TABLE ev_2a PARTITION OF ev_2 FOR VALUES FROM (1000) TO (2000)",
    "CREATE TABLE kept_apart.ev_2b PARTITION OF ev_2 FOR VALUES FROM (2000) TO (3000)",
    "CREATE TABLE ev_old PARTITION OF ev FOR VALUES FROM (3000) TO (4000)",
    "CREATE TABLE ev_def PARTITION OF ev DEFAULT",
    "INSERT INTO ev SELECT g, repeat('x', 40) FROM generate_series(0, 4999) g",
    "ALTER TABLE ev DETACH PARTITION ev_old",
    "CREATE TABLE plain (id int PRIMARY KEY)",
    "INSERT INTO plain SELECT generate_series(1, 100)",
]
# ev's partitions in its schema that hold its rows, in name order: those maintained.
HERE = ["ev_1", "ev_2a", "ev_def"]
JOB = {"type": "full", "tables": ["ev"]}
# The tree's read as the driver sends it (its parameters bound, its text otherwise whole).
_TREE_READ = PARTITION_TREE.split("SELECT", 1)[0].strip()


def _main_fork_bytes(url: str, table: str) -> int:
    with engine(url).connect() as conn:
        size = conn.execute(text("SELECT pg_relation_size(CAST(:t AS regclass))"), {"t": table})
        return int(size.scalar_one())


def test_the_tree_read_once_names_the_leaves_each_consumer_takes(pg_url: str) -> None:
    run_sql(pg_url, *TREE)
    with engine(pg_url).connect() as conn:
        trees = partition_trees(conn, None)
        parents = partitioned(conn, ["ev"])
    assert set(trees) == {"ev", "ev_2"}
    ev = trees["ev"]
    assert ev.leaves == tuple(HERE) and ev.partitioned == ("ev_2",)
    assert ev.elsewhere == 1  # kept_apart.ev_2b
    assert sorted(m.name for m in ev.partitions) == ["ev_1", "ev_2", "ev_def"]
    assert sorted(m.name for m in ev.storing) == ["ev_1", "ev_2a", "ev_2b", "ev_def"]
    assert list(parents["ev"].leaves) == HERE and parents["ev"].leaves == ev.leaf_oids
    assert trees["ev_2"].leaves == ("ev_2a",) and trees["ev_2"].elsewhere == 1


def test_planning_health_and_the_steps_agree_on_the_partitions(home: Path, pg_url: str) -> None:
    run_sql(pg_url, *TREE)
    config = use_target(home, pg_url)
    plan = commands.make_plan(config, "maintenance", JOB)
    # Planning: ev named is its partitions here, at every depth, then ev and ev_2.
    assert plan.steps[0].params["tables"] == [*HERE, "ev", "ev_2"]
    before = _counts(pg_url)
    with sent_to(pg_url) as sent:
        result = commands.run_job(config, "maintenance", JOB, approver=PreApproved())
    assert result.status == "completed", result.error
    after = _counts(pg_url)
    done = {t: (after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in before}
    # The steps: each partition here vacuumed once and analyzed once; the one of the
    # other schema analyzed by ev's ANALYZE alone; the detached one left alone.
    assert all(done[t] == (1, 1) for t in HERE), done
    assert done["ev_2b"] == (0, 1) and done["ev_old"] == (0, 0) and done["plain"] == (0, 0)
    vacuum = _outputs(result, "optimize_table")["ev"]
    assert vacuum["partitions"] == HERE
    assert "1 partition(s) outside this schema or foreign are not vacuumed here" in vacuum["reason"]
    _health_agrees(result.steps[0].output, _main_fork_bytes(pg_url, "kept_apart.ev_2b"))
    # One read of the trees for the run's planning, one for all the run's steps.
    reads = [params["names"] for sql, params in sent if _TREE_READ in sql]
    # The run's planning read ev's tree; the health step (its totals and its corruption
    # check) and the vacuums shared one read of every tree.
    assert reads == [["ev"], None], reads


def _health_agrees(health: dict[str, Any], apart_bytes: int) -> None:
    """ev's figures are the sums over the same partitions, and the one apart."""
    tables = {t["table"]: t for t in health["tables"]}
    assert set(tables) == {*HERE, "ev", "ev_2"}
    ev, ev_2 = tables["ev"], tables["ev_2"]
    assert (ev["partitions"], ev["leaf_partitions"]) == (3, len(HERE) + 1)
    assert (ev_2["partitions"], ev_2["leaf_partitions"]) == (2, 2)
    assert apart_bytes > 0
    assert ev["table_bytes"] == sum(tables[t]["table_bytes"] for t in HERE) + apart_bytes
    assert ev_2["table_bytes"] == tables["ev_2a"]["table_bytes"] + apart_bytes


def test_partitioned_tables_measured_share_the_runs_one_read(home: Path, pg_url: str) -> None:
    """A fragmentation step given partitioned tables (ev, ev_2) says each has nothing
    of its own to read, its partitions taken from the run's one read of the trees, not
    from a read per partitioned table."""
    run_sql(pg_url, *TREE)
    tool = "analyze_table_fragmentation"
    plan = one_step_plan("maintenance", "db", "postgresql", tool, {"tables": ["ev", "ev_2"]})
    with sent_to(pg_url) as sent:
        result = commands.apply_plan(use_target(home, pg_url), plan, approver=PreApproved())
    assert result.status == "completed", result.error
    measured = {t["table"]: t for t in result.steps[0].output["by_table"]}
    assert measured["ev"]["partitioned"] and measured["ev_2"]["partitioned"], measured
    reads = [params["names"] for sql, params in sent if _TREE_READ in sql]
    assert reads == [None], reads
