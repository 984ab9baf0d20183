"""A file a drafted plan writes is named in the plan as a path, checked to lie under the
aishell home or the backup folder before the plan is shown: never by a ${...}
reference, whose value is known only as the step runs, and never with one inside it.
A file it reads may come whole from an earlier step (the backup it took). Against a
local server speaking the Ollama API, on the demo database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import DraftRejected
from aishell.policy.approvers import PreApproved
from tests.fake_ollama import Script
from tests.helpers import query

PURGE = {"table": "app_logs", "date_column": "created_at", "retention_days": 90, "max_rows": 5}
COUNT = {
    "tool": "count_table_rows",
    "params": {"table": "app_logs", "date_column": "created_at", "retention_days": 90},
    "rationale": "count first",
}


def _purge_into(archive: str) -> dict[str, Any]:
    step = {"tool": "delete_old_records", "params": {**PURGE, "archive_file": archive}}
    return {"summary": "purge", "agent": "log_cleanup", "steps": [COUNT, step | {"rationale": "r"}]}


def test_an_archive_named_around_a_reference_is_refused_and_nothing_is_written(
    llm_config: Config, demo_db: Path, script: Script, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Through the command line, with every approval given: the draft names a folder
    outside the home and a file in it made of a count's output."""
    outside = tmp_path_factory.mktemp("outside")
    script.answers = [_purge_into(f"{outside}/rows-${{step_0.output.row_count}}.jsonl")]
    rows = query(demo_db, "SELECT count(*) FROM app_logs")
    shown = CliRunner().invoke(cli, ["ask", "--yes", "purge app_logs past 90 days to a file"])
    assert shown.exit_code == 2, shown.output
    assert "parameter 'archive_file' (writes a file) is given by a reference" in shown.output
    assert list(outside.iterdir()) == []
    assert query(demo_db, "SELECT count(*) FROM app_logs") == rows
    assert commands.list_runs(llm_config) == []


@pytest.mark.parametrize(
    "archive",
    ["${step_0.output.cutoff}", "${step_0.output.how}"],
    ids=["a count's cutoff", "a count's words"],
)
def test_an_archive_given_whole_by_a_reference_is_refused(
    llm_config: Config, demo_db: Path, script: Script, archive: str
) -> None:
    script.answers = [_purge_into(archive)]
    with pytest.raises(DraftRejected) as refused:
        commands.ask(
            llm_config,
            "purge app_logs past 90 days to a file",
            review=lambda _p: True,
            approver=PreApproved(),
        )
    reasons = " ".join(refused.value.rejected[0])
    assert f"parameter 'archive_file' (writes a file) is given by a reference, '{archive}'" in (
        reasons
    )
    assert commands.list_runs(llm_config) == []


def test_a_validation_of_a_file_named_around_a_reference_is_refused(
    llm_config: Config, demo_db: Path, script: Script, home: Path
) -> None:
    backup = {"tool": "backup_database_full", "params": {}, "rationale": "take one"}
    check = {
        "tool": "validate_backup",
        "params": {"backup_path": f"{home}/backups/${{step_0.output.sha256}}"},
        "rationale": "prove it",
    }
    script.answers = [{"summary": "backup", "agent": "backup", "steps": [backup, check]}]
    with pytest.raises(DraftRejected) as refused:
        commands.ask(llm_config, "take a backup and prove it", review=lambda _p: True)
    reasons = " ".join(refused.value.rejected[0])
    assert "parameter 'backup_path' (reads a file) is given by a reference" in reasons
    assert "or one whole ${...} reference" in reasons
