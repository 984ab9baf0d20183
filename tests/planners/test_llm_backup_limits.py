"""A model's draft of a backup job is held to the job, as the rule-based plan is: the
backup of its type and no other, chained from the newest verified backup when
incremental; with verification, a validation of the backup the plan takes, as quick as
the job says, and none without; the cleanup of old backups only with --cleanup and with
its settings; never a restore. A draft that breaks one is rejected with the reason,
sent back to the model, and, every draft rejected, the rules plan runs instead: no
backup it does not ask for is taken, and none is deleted. Against a local server
speaking the Ollama API, on the demo database, and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from tests.fake_ollama import Script, fake_ollama
from tests.helpers import run_sql, use_target
from tests.planners.test_llm_job_limits import _answer, _drafted, _settings, _step

FULL = _step("backup_database_full", {})
NEWEST = _step("find_last_backup", {})
VALIDATE = _step("validate_backup", {"backup_path": "${step_0.output.backup_path}"})
CLEANUP = _step("cleanup_old_backups", {"retention_days": 0, "keep_last": 1})


def _backups(config: Config) -> list[tuple[str, str]]:
    """Each catalogued backup's type and file, the file still there."""
    rows = commands.list_backups(config)
    return sorted((str(r["kind"]), str(r["path"])) for r in rows if Path(r["path"]).exists())


def _taken(config: Config, times: int = 1) -> list[tuple[str, str]]:
    """Backups taken and verified by the rules plan, to chain from or clean up."""
    for _ in range(times):
        result = commands.run_job(config, "backup", {"type": "full"}, planner="rules")
        assert result.status == "completed", result.error
    return _backups(config)


def _run(config: Config, job: dict[str, Any]) -> Any:
    result = commands.run_job(config, "backup", job, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    return result


def _rejected(config: Config, result: Any) -> str:
    drafted = _drafted(config, result)
    assert drafted["planner"] == "rules" and drafted["fallback_from"] == "llm", drafted
    return " ".join(map(str, drafted["rejected"][0]))


def test_an_incremental_job_drafted_as_a_full_backup_is_rejected(
    llm_config: Config, script: Script
) -> None:
    before = _taken(llm_config)
    script.answers = [_answer(FULL, VALIDATE)]
    result = _run(llm_config, {"type": "incremental"})
    said = _rejected(llm_config, result)
    assert "step_0 (backup_database_full): the job says --type incremental" in said
    # The rules plan took the one incremental backup the job asks for, and no full one.
    kinds = [kind for kind, _ in _backups(llm_config)]
    assert kinds.count("full") == len(before) and kinds.count("incremental") == 1


def test_a_cleanup_drafted_for_a_job_without_cleanup_deletes_no_backup(
    llm_config: Config, script: Script
) -> None:
    before = _taken(llm_config, times=2)
    script.answers = [_answer(FULL, VALIDATE, CLEANUP)]
    result = _run(llm_config, {"type": "full"})
    said = _rejected(llm_config, result)
    assert "step_2 (cleanup_old_backups): the job does not say --cleanup" in said
    assert set(before) < set(_backups(llm_config))  # every older backup still there


@pytest.mark.parametrize(
    ("job", "draft", "said"),
    [
        (
            {"type": "full"},
            [FULL],
            "the plan leaves out validate_backup: the full backup job proves its backup",
        ),
        (
            {"type": "full", "quick": False},
            [FULL, _step("validate_backup", {**VALIDATE["params"], "quick": True})],
            "step_1 (validate_backup): the job says no --quick",
        ),
        (
            {"type": "full", "cleanup": True, "retention_days": 30, "keep_last": 3},
            [FULL, VALIDATE, CLEANUP],
            "step_2 (cleanup_old_backups): the job says --retention-days 30",
        ),
        (
            {"type": "full", "verify": False},
            [FULL, VALIDATE],
            "step_1 (validate_backup): the job says --no-verify",
        ),
        (
            {"type": "drill"},
            [NEWEST, _step("restore_backup", {"backup_path": "${step_0.output.backup_path}"})],
            "step_1 (restore_backup): a backup job never restores",
        ),
        (
            {"type": "full"},
            [
                NEWEST,
                FULL,
                _step("validate_backup", {"backup_path": "${step_0.output.backup_path}"}),
            ],
            "step_2 (validate_backup): the validation must check the backup of "
            "backup_database_full before it",
        ),
        (
            {"type": "incremental"},
            [
                _step("find_last_backup", {"verified_only": False}),
                _step("backup_database_incremental", {"parent": "${step_0.output.backup_path}"}),
                _step("validate_backup", {"backup_path": "${step_1.output.backup_path}"}),
            ],
            "step_0 (find_last_backup): the incremental backup job finds the newest verified",
        ),
        (
            {"type": "full", "lock_wait_seconds": 30},
            [_step("backup_database_full", {"lock_wait_seconds": 86400}), VALIDATE],
            "step_0 (backup_database_full): the job says --lock-wait 30",
        ),
        (
            {"type": "full"},
            [FULL, {**VALIDATE, "condition": "${step_0.output.size_bytes} < 0"}],
            "the plan leaves out validate_backup: the full backup job proves its backup",
        ),
        (
            {"type": "full"},
            [
                FULL,
                {**NEWEST, "condition": "${step_0.output.size_bytes} < 0"},
                {**VALIDATE, "depends_on": ["step_1"]},
            ],
            "the plan leaves out validate_backup: the full backup job proves its backup",
        ),
        (
            {"type": "full"},
            [
                _step("calculate_backup_size", {}),
                {**FULL, "condition": "${step_0.output.estimated_bytes} < 0"},
                _step("validate_backup", {"backup_path": "${step_1.output.backup_path}"}),
            ],
            "the plan leaves out validate_backup: the full backup job proves its backup",
        ),
    ],
    ids=[
        "no validation",
        "a quick validation",
        "cleanup settings",
        "a validation with --no-verify",
        "a restore",
        "another backup validated",
        "chained from an unverified backup",
        "a lock wait raised",
        "a validation that never runs",
        "a validation that needs a step that never runs",
        "a validation of a backup that never runs",
    ],
)
def test_a_draft_outside_the_backup_job_is_rejected(
    llm_config: Config, script: Script, job: dict[str, Any], draft: list[Any], said: str
) -> None:
    _taken(llm_config)
    script.answers = [_answer(*draft)]
    result = _run(llm_config, job)
    assert said in _rejected(llm_config, result)
    assert "restore_backup" not in [s.tool for s in result.steps]


def test_a_draft_as_the_job_says_runs(llm_config: Config, script: Script) -> None:
    before = _taken(llm_config, times=2)
    job = {"type": "full", "cleanup": True, "retention_days": 0, "keep_last": 1}
    script.answers = [_answer(FULL, VALIDATE, CLEANUP)]
    result = _run(llm_config, job)
    assert _drafted(llm_config, result)["planner"] == "llm"
    assert [s.tool for s in result.steps] == [
        "backup_database_full",
        "validate_backup",
        "cleanup_old_backups",
    ]
    assert len(_backups(llm_config)) < len(before) + 1


def test_on_postgresql_a_full_backup_drafted_for_a_drill_is_rejected(
    edit_config: Any, home: Path, pg_url: str, script: Script
) -> None:
    run_sql(pg_url, "CREATE TABLE orders (id int PRIMARY KEY)", "INSERT INTO orders VALUES (1)")
    use_target(home, pg_url)
    with fake_ollama(script) as host:
        config = edit_config(_settings(host))
        _taken(config)
        before = _backups(config)
        script.answers = [_answer(FULL, VALIDATE)] * 2
        result = _run(config, {"type": "drill"})
    assert "step_0 (backup_database_full): the job says --type drill" in _rejected(config, result)
    assert _backups(config) == before
