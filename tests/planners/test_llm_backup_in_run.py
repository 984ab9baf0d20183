"""backup_required is met by a verified backup young enough, or by a backup this run
took before the step: validating an old backup (or restoring one) takes none. Judged
alike by the preview, the dry run and the run. Drafts from a local server speaking
the Ollama API, on the demo database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.commands.previews import PlanPreview
from aishell.config.models import Config
from tests.fake_ollama import Script
from tests.planners.conftest import one_try
from tests.planners.test_llm_planner import _answer, _step

OPTIMIZE = _step("optimize_table", {"table": "app_logs"})
NEEDS = "optimize_table needs a verified backup of 'demo'"


def _config(edit_config: Any, host: str) -> Config:
    """optimize_table needs a backup from the last 3.6 seconds, or one earlier in its run."""
    required = {
        "type": "backup_required",
        "before_operations": ["optimize_table"],
        "max_age_hours": 0.001,
    }
    return edit_config(one_try(host), backup={"safety_constraints": [required]})


def _ask(config: Config, request: str, **how: Any) -> tuple[Any, PlanPreview]:
    """The run of a request, and the preview its review was shown."""
    shown: list[PlanPreview] = []
    result = commands.ask(config, request, review=lambda p: shown.append(p) or True, **how)
    return result, shown[0]


def _needs_backup(reasons: Any) -> bool:
    return any(r.startswith(NEEDS) for r in reasons)


def test_validating_an_old_backup_is_no_backup_earlier_in_the_run(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    config = _config(edit_config, ollama_host)
    # A backup taken, not yet verified: no backup meets the constraint.
    script.answers = [_answer("backup", _step("backup_database_full", {}))]
    taken, _ = _ask(config, "take a backup")
    assert taken.status == "completed", taken.error
    path = taken.steps[0].output["backup_path"]
    validate = _step("validate_backup", {"backup_path": path, "quick": True})
    script.answers = [_answer("backup", validate, OPTIMIZE)]
    previewed, preview = _ask(config, "validate it, then compact app_logs", dry_run=True)
    assert _needs_backup(preview.steps[1].reasons), preview.steps[1]
    assert _needs_backup(previewed.steps[1].reasons), previewed.steps[1]
    # Run: the validation verifies the backup, taken an hour before the step (by the
    # run's clock): too old, and no backup of this run.
    script.answers = [_answer("backup", validate, OPTIMIZE)]
    later = datetime.now(UTC) + timedelta(hours=1)
    ran, _ = _ask(config, "validate it, then compact app_logs, later", clock=lambda: later)
    assert [s.status for s in ran.steps] == ["succeeded", "waiting_approval"], ran.steps
    assert _needs_backup(ran.steps[1].reasons)


def test_a_backup_earlier_in_the_run_meets_it_in_the_preview_the_dry_run_and_the_run(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    config = _config(edit_config, ollama_host)
    draft = _answer("backup", _step("backup_database_full", {}), OPTIMIZE)
    script.answers = [draft]
    previewed, preview = _ask(config, "back up, then compact app_logs", dry_run=True)
    assert not _needs_backup(preview.steps[1].reasons), preview.steps[1]
    assert not _needs_backup(previewed.steps[1].reasons), previewed.steps[1]
    script.answers = [draft]
    ran, _ = _ask(config, "back up, then compact app_logs, now")
    assert ran.status == "completed", ran.error
