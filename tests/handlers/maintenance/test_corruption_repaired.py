"""The maintenance report's corruption_repaired: the tables the repair step repaired."""

from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.helpers import corrupt_index


def test_emergency_maintenance_reports_the_tables_it_repaired(
    config: Config, demo_db: Path
) -> None:
    corrupt_index(demo_db)
    result = commands.run_job(config, "maintenance", {"type": "emergency"}, approver=PreApproved())
    assert result.status == "completed", result.error
    assert result.report is not None
    assert result.report["corrupted_tables"] == ["ledger"]
    assert result.report["corruption_repaired"] == ["ledger"]


def test_a_run_with_nothing_to_repair_reports_an_empty_list(config: Config, demo_db: Path) -> None:
    result = commands.run_job(config, "maintenance", {"type": "emergency", "tables": ["users"]})
    assert result.status == "completed", result.error
    assert result.report is not None and result.report["corruption_repaired"] == []
