"""The default purge limits hold every purge no configured purge_limits lists: one that
lists other tools replaces them for its own tools only, never for delete_old_records
(a purge keeping one day of rows, of nearly every row, then ran unasked)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.models import PurgeLimits
from aishell.config.resources import bundled_catalog_dir
from aishell.policy.rules import DEFAULT_PURGE_LIMITS, SafetyPolicy, StepFacts
from aishell.registry import load_tool
from tests.conftest import EditConfig

PURGE = load_tool(bundled_catalog_dir() / "delete_old_records.yaml")
ELSEWHERE = PurgeLimits(type="purge_limits", min_retention_days=1, tools=["optimize_table"])


def _policy(*constraints: PurgeLimits) -> SafetyPolicy:
    return SafetyPolicy("permissive", "development", "db", constraints)


def test_a_purge_limit_on_another_tool_leaves_the_purge_held_to_the_defaults() -> None:
    policy = _policy(ELSEWHERE)
    assert policy.purge_limits("delete_old_records") == DEFAULT_PURGE_LIMITS
    assert policy.purge_limits("optimize_table") == ELSEWHERE
    facts = StepFacts(
        tool=PURGE,
        params={"retention_days": 1},
        effect={"rows_this_run": 90, "table_rows": 100},
    )
    verdict = policy.check(facts)
    assert verdict.requires_approval
    assert verdict.personal == (
        "retention of 1 days is under 7: recent rows would be deleted",
        "would delete 90 of 100 rows (90%), over max_share (50%)",
    )


def test_a_purge_limit_on_the_purge_replaces_the_defaults_for_it() -> None:
    own = PurgeLimits(type="purge_limits", min_retention_days=1, max_share=0.95)
    policy = _policy(own, ELSEWHERE)
    assert policy.all_constraints == (own, ELSEWHERE)
    assert policy.purge_limits("delete_old_records") == own
    facts = StepFacts(
        tool=PURGE, params={"retention_days": 1}, effect={"rows_this_run": 90, "table_rows": 100}
    )
    assert policy.check(facts).personal == ()


def test_two_purge_limits_on_the_purge_stop_it_at_the_lesser_share() -> None:
    """Each limit holds: the purge's stop (max_share, watched batch by batch) is the
    tightest, whichever is listed first, as a drafted plan's agents' limits are joined."""
    loose = PurgeLimits(type="purge_limits", min_retention_days=1, max_share=0.9)
    tight = PurgeLimits(type="purge_limits", min_retention_days=1, max_share=0.2)
    for order in ((loose, tight), (tight, loose)):
        assert _policy(*order).purge_limits("delete_old_records") == tight, order
        facts = StepFacts(
            tool=PURGE,
            params={"retention_days": 1},
            effect={"rows_this_run": 50, "table_rows": 100},
        )
        assert _policy(*order).check(facts).personal == (
            "would delete 50 of 100 rows (50%), over max_share (20%)",
        )


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM app_logs").fetchone()[0])


def test_a_run_whose_purge_limits_name_another_tool_waits_for_a_person(
    demo_db: Path, edit_config: EditConfig
) -> None:
    edit_config(
        log_cleanup={"safety_constraints": [{"type": "purge_limits", "tools": ["optimize_table"]}]}
    )
    before = _rows(demo_db)
    args = ["run", "log-cleanup", "--table", "app_logs", "--retention-days", "1"]
    done = CliRunner().invoke(cli, [*args, "--non-interactive", "--json"])
    assert done.exit_code == 3, done.output
    result = json.loads(done.stdout)
    assert result["status"] == "waiting_approval"
    [waiting] = [s for s in result["steps"] if s["status"] == "waiting_approval"]
    assert waiting["tool"] == "delete_old_records"
    assert "retention of 1 days is under 7" in json.dumps(waiting)
    assert _rows(demo_db) == before
