"""The health report of a partitioned table on PostgreSQL: the parent has no storage of
its own, so its rows, dead rows and sizes are its leaf partitions' totals (a partition
that is itself partitioned counted through its own leaves), with how many partitions it
has; its urgency is 0 and it gets no dead-row advice of its own, since its partitions
are listed themselves and get theirs. Nothing the report sums counts the rows twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target
from tests.services import engine

# ev by range of id: ev_1 and ev_2 plain, ev_3 partitioned again by id into ev_3a and
# ev_3b. Every row of ev_1 and ev_3a dead but one in ten, so each has dead-row advice.
# No autovacuum on the leaves: their dead rows stay as the test made them.
_LEAF = (
    "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}) WITH (autovacuum_enabled = false)"
)
TREE = [
    "CREATE TABLE ev (id int, body text) PARTITION BY RANGE (id)",
    "CREATE INDEX ev_id ON ev (id)",
    _LEAF.format("ev_1", "ev", 0, 10000),
    _LEAF.format("ev_2", "ev", 10000, 20000),
    "CREATE TABLE ev_3 PARTITION OF ev FOR VALUES FROM (20000) TO (40000) PARTITION BY RANGE (id)",
    _LEAF.format("ev_3a", "ev_3", 20000, 30000),
    _LEAF.format("ev_3b", "ev_3", 30000, 40000),
    "INSERT INTO ev SELECT g, repeat('x', 40) FROM generate_series(0, 39999) g",
    "DELETE FROM ev WHERE id < 10000 AND id % 10 <> 0",
    "DELETE FROM ev WHERE id >= 20000 AND id < 30000 AND id % 10 <> 0",
    "CREATE TABLE plain (id int PRIMARY KEY)",
    "INSERT INTO plain SELECT generate_series(1, 500)",
]
LEAVES = {"ev": ["ev_1", "ev_2", "ev_3a", "ev_3b"], "ev_3": ["ev_3a", "ev_3b"]}


def _made(url: str) -> None:
    """TREE made, and its rows counted by the server's statistics, which each session
    sends when it ends, a moment after the client has gone."""
    run_sql(url, *TREE)
    counted = (
        "SELECT sum(n_live_tup + n_dead_tup) FROM pg_stat_user_tables WHERE relname LIKE 'ev%'"
    )
    with engine(url).connect() as conn:
        for _ in range(600):
            if conn.execute(text(counted)).scalar() == 40000:
                return
            conn.execute(text("SELECT pg_sleep(0.05), pg_stat_clear_snapshot()"))
            conn.rollback()
    raise AssertionError("the server's statistics never counted the rows")


def _health(home: Path, url: str, tables: list[str] | None = None) -> dict[str, Any]:
    config = use_target(home, url)
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "analyze_database_health", {"tables": tables or []}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return dict(result.steps[0].output)


def _server(url: str) -> dict[str, dict[str, int]]:
    """Each leaf's figures as the server gives them now."""
    with engine(url).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, n_live_tup, n_dead_tup, pg_relation_size(relid), "
                "pg_indexes_size(relid) FROM pg_stat_user_tables"
            )
        ).all()
    return {
        str(r[0]): {"rows": r[1], "dead_rows": r[2], "table_bytes": r[3], "index_bytes": r[4]}
        for r in rows
    }


def test_a_partitioned_table_reports_its_partitions_totals(home: Path, pg_url: str) -> None:
    _made(pg_url)
    health = _health(home, pg_url)
    server = _server(pg_url)
    tables = {t["table"]: t for t in health["tables"]}
    assert tables["ev"]["partitions"] == 3 and tables["ev_3"]["partitions"] == 2
    assert tables["ev"]["leaf_partitions"] == 4 and tables["ev_3"]["leaf_partitions"] == 2
    for parent, leaves in LEAVES.items():
        shown = tables[parent]
        assert shown["partitioned"] is True
        for key in ("rows", "dead_rows", "table_bytes", "index_bytes"):
            assert shown[key] == sum(server[leaf][key] for leaf in leaves), (parent, key)
            assert shown[key] == sum(tables[leaf][key] for leaf in leaves), (parent, key)
        assert shown["rows"] > 0 and shown["table_bytes"] > 0 and shown["index_bytes"] > 0
        assert shown["dead_percent"] > 0
        assert shown["urgency"] == 0
        assert shown["xid_age"] is None
    assert tables["ev"]["rows"] + tables["ev"]["dead_rows"] == 40000
    for leaf in ("ev_1", "ev_2", "ev_3a", "ev_3b", "plain"):
        assert tables[leaf]["partitioned"] is False and tables[leaf]["partitions"] == 0
    # The parents last: their urgency is 0, their partitions carry their own.
    assert [t["table"] for t in health["tables"]][-2:] == ["ev", "ev_3"]
    advised = [r.split(":")[0] for r in health["recommendations"] if "dead rows" in r]
    assert sorted(advised) == ["ev_1", "ev_3a"], health["recommendations"]


def test_a_parent_named_alone_has_its_totals(home: Path, pg_url: str) -> None:
    """Named alone, as --tables: its figures are its partitions' all the same."""
    _made(pg_url)
    health = _health(home, pg_url, ["ev_3"])
    assert [t["table"] for t in health["tables"]] == ["ev_3"]
    shown = health["tables"][0]
    server = _server(pg_url)
    assert shown["rows"] == server["ev_3a"]["rows"] + server["ev_3b"]["rows"] > 0
    assert shown["leaf_partitions"] == 2
    # Its partitions' dead rows are theirs to be advised on; its statistics are its own
    # (autovacuum never gathers a parent's).
    assert health["recommendations"] == ["No planner statistics for ev_3"]


def test_a_partitioned_table_without_partitions_is_empty(home: Path, pg_url: str) -> None:
    run_sql(pg_url, "CREATE TABLE lone (id int) PARTITION BY LIST (id)")
    shown = _health(home, pg_url)["tables"][0]
    assert shown["table"] == "lone" and shown["partitioned"] is True
    assert (shown["rows"], shown["table_bytes"], shown["partitions"]) == (0, 0, 0)
