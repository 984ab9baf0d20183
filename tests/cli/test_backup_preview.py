"""`aishell plan backup` and `aishell run backup --dry-run`: a backup's steps and its
estimated size, with nothing written to the backup folder."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.handlers.backup.take import size_statements
from tests.helpers import use_target

STEPS = ["calculate_backup_size", "backup_database_full", "validate_backup"]


def backup_folder_files(home: Path) -> list[Path]:
    folder = home / "backups"
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_plan_backup_shows_each_step_and_saves_a_signed_plan(demo_db: Path, home: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["plan", "backup", "--json"])
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.stdout)
    assert plan["agent"] == "backup" and plan["plan_hash"]
    assert [s["tool"] for s in plan["steps"]] == STEPS
    dump = plan["steps"][1]
    assert dump["risk_level"] == "low" and dump["requires_approval"] is False
    assert dump["locks"] and "sql" in dump
    out = home / "backup-plan.json"
    saved = runner.invoke(cli, ["plan", "backup", "--no-verify", "--out", str(out)])
    assert saved.exit_code == 0, saved.output
    assert "backup_database_full" in saved.output and f"aishell apply {out}" in saved.output
    assert json.loads(out.read_text())["signature"]
    assert backup_folder_files(home) == []


def test_run_backup_dry_run_estimates_and_writes_nothing(
    config: Config, demo_db: Path, home: Path
) -> None:
    ran = CliRunner().invoke(cli, ["run", "backup", "--dry-run", "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["dry_run"] is True and result["status"] == "completed"
    statuses = [(s["tool"], s["status"]) for s in result["steps"]]
    assert statuses == [
        ("calculate_backup_size", "succeeded"),
        ("backup_database_full", "previewed"),
        ("validate_backup", "previewed"),
    ]
    assert result["steps"][0]["output"]["estimated_bytes"] > 0
    assert backup_folder_files(home) == []
    assert commands.list_backups(config) == []


@pytest.mark.parametrize("url_fixture", ["sqlite_demo", "pg_url", "mysql_url"])
def test_the_size_step_shows_and_sends_its_own_engines_statement(
    home: Path, url_fixture: str, request: pytest.FixtureRequest
) -> None:
    """Each engine's size step shows the statement it sends there: a PostgreSQL plan
    shows pg_database_size, never SQLite's page count, and the run's audit agrees."""
    if url_fixture == "sqlite_demo":
        request.getfixturevalue("demo_db")
        config = request.getfixturevalue("config")
    else:
        config = use_target(home, request.getfixturevalue(url_fixture))
    plan = commands.plan_job(config, "backup", {"type": "full"})
    dialect = plan.plan.dialect
    wanted = [s.strip() for s in size_statements(dialect)]
    assert plan.steps[0].tool == "calculate_backup_size"
    assert [s.strip() for s in plan.steps[0].sql] == wanted
    result = commands.run_job(config, "backup", {"type": "full"}, dry_run=True)
    assert result.status == "completed", result.error
    sent = [
        s["sql"].strip()
        for s in commands.run_statements(config, result.run_id)
        if s["step_index"] == 0
    ]
    assert set(wanted) <= set(sent), (wanted, sent)
    assert not [s for s in sent if "pragma_page" in s and dialect != "sqlite"]
