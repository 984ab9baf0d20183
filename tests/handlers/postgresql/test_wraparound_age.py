"""A relation without a relfrozenxid of its own (a partitioned table: relfrozenxid 0,
whose age() is INT_MAX) is given no transaction-ID age: no false wraparound alarm, and
no urgency of its own to put it first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.targets.catalog import urgency
from tests.handlers.postgresql.test_partitioned_tables import PARENTS, PARTITIONED
from tests.helpers import run_sql, use_target


def test_a_partitioned_table_has_no_transaction_id_age(home: Any, pg_url: str) -> None:
    run_sql(pg_url, *PARTITIONED)
    config = use_target(home, pg_url)
    result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert result.status == "completed", result.error
    health = result.steps[0].output
    by_name = {t["table"]: t for t in health["tables"]}
    # meas_2024 is a partition and partitioned itself: neither has an age.
    for parent in PARENTS:
        assert by_name[parent]["xid_age"] is None
        assert by_name[parent]["wraparound_percent"] is None
        assert by_name[parent]["urgency"] == 0.0
    assert by_name["meas_2025"]["xid_age"] is not None  # a table's own
    assert not [r for r in health["recommendations"] if "wraparound" in r], health
    # Ranked by urgency: a parent is not put first.
    assert health["tables"][0]["table"] not in PARENTS


def test_the_planner_ranks_a_partitioned_table_by_no_age(home: Any, pg_url: str) -> None:
    """Full maintenance takes the most urgent tables first: a parent's urgency is not
    that of a table about to wrap around."""
    run_sql(pg_url, *PARTITIONED)
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            scores = urgency(conn)
    finally:
        engine.dispose()
    assert {scores[p] for p in PARENTS} == {0.0}
    config = use_target(home, pg_url)
    plan = commands.plan_job(config, "maintenance", {"type": "full"})
    first = plan.plan.steps[1].params
    assert (first.get("table") or first["tables"][0]) not in PARENTS
