"""An invalid index (left by a CREATE INDEX CONCURRENTLY that failed) is what it is: not
used by queries, still maintained by writes, and no sign of corruption. A rebuild of one
that fails is that index's trouble, with the server's reason: the step goes on with
the other tables."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target

# dup_uq: a unique index whose CREATE INDEX CONCURRENTLY failed on duplicate values,
# left invalid. zz_k: an index another way made invalid (as a cancelled build leaves
# one), whose rebuild succeeds; on a table after dup in every order.
SETUP = [
    "CREATE EXTENSION amcheck",
    "CREATE TABLE dup (id int, note text)",
    "INSERT INTO dup VALUES (1, 'a'), (1, 'b'), (2, 'c')",
    "CREATE TABLE zz (id int PRIMARY KEY, k int)",
    "INSERT INTO zz SELECT g, g % 7 FROM generate_series(1, 500) g",
    "CREATE INDEX zz_k ON zz (k)",
    "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'zz_k'::regclass",
]


def _setup(pg_url: str) -> None:
    run_sql(pg_url, *SETUP[:3])
    with pytest.raises(DBAPIError, match="could not create unique index"):
        run_sql(pg_url, "CREATE UNIQUE INDEX CONCURRENTLY dup_uq ON dup (id)")
    run_sql(pg_url, *SETUP[3:])


def _by_table(result: Any, tool: str) -> dict[str, dict[str, Any]]:
    found = {}
    for step in result.steps:
        if step.tool == tool and step.output:
            for out in step.output.get("by_table") or [step.output]:
                found[out["table"]] = out
    return found


def test_the_health_check_calls_an_invalid_index_invalid_not_corrupt(
    home: Any, pg_url: str
) -> None:
    _setup(pg_url)
    config = use_target(home, pg_url)
    preview = commands.run_job(config, "maintenance", {"type": "full"}, dry_run=True)
    health = preview.steps[0].output
    check = health["corruption_check"]
    assert check["corrupted_tables"] == [], check
    assert check["corruption_found"] is False
    assert health["integrity"] == "ok"
    said = " ".join(health["recommendations"])
    assert "emergency" not in said
    assert "dup_uq is invalid" in said and "not used by queries" in said
    assert "zz_k is invalid" in said


def test_emergency_maintenance_repairs_nothing_for_an_invalid_index(home: Any, pg_url: str) -> None:
    _setup(pg_url)
    config = use_target(home, pg_url)
    result = commands.run_job(config, "maintenance", {"type": "emergency"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert result.report["corrupted_tables"] == []
    assert result.report["corruption_repaired"] == []


def test_a_repair_never_calls_the_data_damaged_for_an_invalid_index(home: Any, pg_url: str) -> None:
    """REINDEX TABLE CONCURRENTLY leaves an invalid index as it is: the check after it
    says so, and the table is repaired (its data was never damaged)."""
    _setup(pg_url)
    config = use_target(home, pg_url)
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "repair_corrupted_tables", {"tables": ["dup"]}
    )
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    assert result.steps[0].output["repaired_tables"] == ["dup"]


def test_a_rebuild_that_fails_is_that_index_trouble(home: Any, pg_url: str) -> None:
    _setup(pg_url)
    config = use_target(home, pg_url)
    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert all(s.status in ("succeeded", "skipped") for s in result.steps), [
        (s.tool, s.status, s.error) for s in result.steps
    ]
    skipped = [s for s in result.report["skipped"] if s["table"] == "dup"]
    assert skipped and skipped[0]["tool"] == "rebuild_fragmented_indexes"
    assert "dup_uq" in skipped[0]["reason"]
    assert "could not create unique index" in skipped[0]["reason"]
    # The other table's invalid index was rebuilt, and every table vacuumed.
    assert _by_table(result, "rebuild_fragmented_indexes")["zz"]["indexes_rebuilt"] == 1
    assert set(_by_table(result, "optimize_table")) == {"dup", "zz"}
