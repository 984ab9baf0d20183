"""No file a step or a plan writes goes into a folder aishell reads tools and config
from: a site's catalog_paths folder, an agents folder, the plugins' tool folders. A new
.yaml there is read as a tool, and a bad one stops every command. Refused whoever names
the path: the model (before its draft is shown), a person (before the first step), a
saved plan (before it is applied) and `plan --out`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.errors import DraftRejected, UsageError
from aishell.files import private_places
from aishell.policy.approvers import NonInteractive, PreApproved
from aishell.risk import RiskLevel
from tests.fake_ollama import Script
from tests.helpers import query
from tests.planners.conftest import planner_settings

TRIES = 2
PURGE = {"table": "app_logs", "date_column": "created_at", "retention_days": 90}


def _site_tools(edit_config: Any, home: Path, **more: Any) -> tuple[Config, Path]:
    """A config whose catalog_paths names an empty folder under the home, as a site
    starts one before it writes its first tool."""
    folder = home / "sitetools"
    folder.mkdir()
    return edit_config({"catalog_paths": ["sitetools"], **more}), folder


def _purge_into(path: Path) -> dict[str, Any]:
    step = {
        "tool": "delete_old_records",
        "params": {**PURGE, "archive_file": str(path)},
        "rationale": "as asked",
    }
    return {"agent": "log_cleanup", "summary": "as asked", "steps": [step]}


def _rows(demo_db: Path) -> int:
    return int(query(demo_db, "SELECT count(*) FROM app_logs")[0][0])


def test_a_drafted_archive_into_a_site_tool_folder_is_refused_before_the_preview(
    edit_config: Any, home: Path, demo_db: Path, ollama_host: str, script: Script
) -> None:
    """The finding: the model archived rows into sitetools/archived.yaml, and every
    command after it failed on that file as a tool."""
    config, folder = _site_tools(edit_config, home, **planner_settings(ollama_host, TRIES))
    archive = folder / "archived.yaml"
    script.answers = [_purge_into(archive)] * TRIES
    rows, shown = _rows(demo_db), []
    with pytest.raises(DraftRejected) as refused:
        commands.ask(
            config,
            "purge app_logs rows older than 90 days, keep them in a file",
            review=lambda preview: shown.append(preview) or True,
            approver=PreApproved(up_to=RiskLevel.MEDIUM, how="test", then=NonInteractive()),
        )
    reasons = [r for draft in refused.value.rejected for r in draft]
    assert (
        f"step_0 (delete_old_records): parameter 'archive_file' writes '{archive}', but it is "
        f"inside {folder}, which aishell reads tools and config from; give a path in a folder "
        "of its own"
    ) in reasons
    # The reason went back to the model with its draft.
    assert "reads tools and config from" in json.dumps(script.chats[-1]["messages"])
    assert shown == [] and not archive.exists() and _rows(demo_db) == rows
    assert commands.list_runs(config) == []


def test_an_archive_a_person_names_in_a_site_tool_folder_is_refused_before_any_row(
    edit_config: Any, home: Path, demo_db: Path
) -> None:
    config, folder = _site_tools(edit_config, home)
    rows = _rows(demo_db)
    job = {**PURGE, "archive_to": f"file:{folder / 'nested' / 'archived.yaml'}"}
    with pytest.raises(UsageError, match=f"it is inside {folder}, which aishell reads tools"):
        commands.run_job(config, "log_cleanup", job, approver=PreApproved())
    # Its preview too: a plan that cannot run is not shown as one that can.
    with pytest.raises(UsageError, match="^The plan writes into aishell's own folders: step_1"):
        commands.plan_job(config, "log_cleanup", job)
    assert not (folder / "nested").exists() and _rows(demo_db) == rows
    assert commands.list_runs(config) == []
    assert commands.list_tools(config)  # the catalog still loads


def test_a_saved_plan_archiving_into_a_folder_named_since_is_refused_whole(
    edit_config: Any, home: Path, demo_db: Path
) -> None:
    """Saved while the folder was nobody's; catalog_paths names it before the apply."""
    (home / "sitetools").mkdir()
    out = home / "plan.json"
    archive = home / "sitetools" / "archived.yaml"
    job = {**PURGE, "archive_to": f"file:{archive}"}
    commands.plan_job(edit_config(), "log_cleanup", job, out=out)
    config = edit_config({"catalog_paths": ["sitetools"]})
    rows = _rows(demo_db)
    with pytest.raises(UsageError, match="^The plan writes into aishell's own folders: step_"):
        commands.apply_plan(config, out, approver=PreApproved())
    assert not archive.exists() and _rows(demo_db) == rows
    assert commands.list_runs(config) == []


def test_a_run_resumed_after_its_archive_folder_became_a_tool_folder_writes_nothing_there(
    edit_config: Any, home: Path, demo_db: Path
) -> None:
    """Started while the folder was nobody's, waiting for a yes; catalog_paths names it
    before the resume: the step refuses the path before its first batch."""
    (home / "sitetools").mkdir()
    archive = home / "sitetools" / "archived.yaml"
    job = {**PURGE, "archive_to": f"file:{archive}"}
    waiting = commands.run_job(
        edit_config(), "log_cleanup", job, approver=NonInteractive(), safety_level="strict"
    )
    assert waiting.status == "waiting_approval", (waiting.status, waiting.error)
    config = edit_config({"catalog_paths": ["sitetools"]})
    rows = _rows(demo_db)
    commands.decide_steps(config, waiting.run_id, "approved")
    resumed = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
    assert resumed.status == "failed", (resumed.status, resumed.error)
    assert "which aishell reads tools and config from" in (resumed.error or "")
    assert not archive.exists() and _rows(demo_db) == rows
    assert commands.list_tools(config)


def test_a_plan_is_not_saved_into_a_tool_or_agents_folder(
    edit_config: Any, home: Path, demo_db: Path
) -> None:
    config, folder = _site_tools(edit_config, home)
    for out in (folder / "plan.yaml", home / "config" / "agents" / "plan.yaml"):
        with pytest.raises(UsageError, match=f"^--out {out}: it is inside .*; save the plan in"):
            commands.plan_job(config, "maintenance", {"type": "quick"}, out=out)
        assert not out.exists()
    assert commands.list_tools(config)


def test_the_folders_read_from_are_private_below_or_directly_in_one_that_holds_the_home(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    (home / "sitetools" / "deep").mkdir(parents=True)
    # A named config in the folder above the home: the folder is the user's, its agents/
    # folder is read for the agents' files.
    places = private_places(
        home, home, home / "backups", [tmp_path], [home / "sitetools", tmp_path / "agents", home]
    )
    assert places.refusal(tmp_path / "notes.jsonl") is None
    assert places.refusal(home / "archive" / "rows.jsonl") is None
    for path in (
        home / "sitetools" / "deep" / "rows.jsonl",
        tmp_path / "agents" / "maintenance.yaml",
        home / "sitetools" / ".." / "sitetools" / "rows.yaml",
    ):
        assert "which aishell reads tools and config from" in (places.refusal(path) or ""), path
    # A folder read from that holds the home (catalog_paths: ["."]): its own files only.
    assert places.source_refusal(home / "rows.yaml") == (
        f"it is directly in {home}, which aishell reads tools and config from"
    )
    assert places.source_refusal(home / "archive" / "rows.yaml") is None
