"""A person asked at a terminal sees what they are asked about beside the question, with
stdout sent to a file (`aishell run ... > run.log`, `| tee run.log`): the step's SQL,
locks and reasons, or the drafted plan, go where the question goes (stderr), and the
file keeps the run's lines, no prompt in it."""

from __future__ import annotations

import os
from pathlib import Path

from aishell.errors import EXIT_DENIED, EXIT_WAITING_APPROVAL
from tests.cli.test_cli import in_terminal, read_until, strict
from tests.fake_ollama import Script, fake_ollama
from tests.state.test_state_faults import edit_main


def test_a_step_s_facts_are_shown_where_its_approval_is_asked(
    home: Path, demo_db: Path, tmp_path: Path
) -> None:
    strict(home)
    log = tmp_path / "run.log"
    run = ("run", "maintenance", "--type", "full", "--tables", "app_logs")
    with in_terminal(*run, to_file=("stdout", log)) as (proc, leader):
        shown = read_until(leader, "Run this step?")
        os.write(leader, b"q\n")
        read_until(leader, "aborted")
        assert proc.wait(timeout=60) == EXIT_DENIED
    for fact in ("rebuild_fragmented_indexes", 'REINDEX main."idx_app_logs_level"', "why asked"):
        assert fact in shown, shown
    written = log.read_text()
    for prompt_only in ("Approval needed", 'REINDEX main."idx_app_logs_level"', "why asked"):
        assert prompt_only not in written, written
    assert "step_1 analyze_table_fragmentation" in written and "aborted" in written, written
    # Nothing drawn to a pipe's width: each line is a run's line.
    assert max(len(line) for line in written.splitlines()) < 500


def test_a_drafted_plan_is_shown_where_it_is_asked_to_run(
    home: Path, demo_db: Path, tmp_path: Path
) -> None:
    answer = {
        "agent": "maintenance",
        "summary": "statistics",
        "steps": [
            {"tool": "update_table_statistics", "params": {"table": "users"}, "rationale": "asked"}
        ],
    }
    log = tmp_path / "run.log"
    with fake_ollama(Script(answers=[answer])) as host:
        edit_main(home, planner={"llm": {"host": host, "model": "planner-test", "tries": 1}})
        run = ("run", "maintenance", "--type", "quick", "--planner", "llm")
        with in_terminal(*run, to_file=("stdout", log)) as (proc, leader):
            shown = read_until(leader, "Run this plan?")
            os.write(leader, b"y\n")
            assert proc.wait(timeout=60) == 0
    assert "update_table_statistics" in shown and "users" in shown, shown
    written = log.read_text()
    assert "Run this plan?" not in written, written
    assert "step_0 update_table_statistics users succeeded" in written, written


def test_with_stderr_sent_to_a_file_nobody_is_asked_and_the_step_waits(
    home: Path, demo_db: Path, tmp_path: Path
) -> None:
    """The question would go to the file, unseen, and the run would wait for an answer
    nobody knows is asked: it goes on as with nobody to ask, the step left waiting."""
    strict(home)
    errors = tmp_path / "errors.log"
    run = ("run", "maintenance", "--type", "full", "--tables", "app_logs")
    with in_terminal(*run, to_file=("stderr", errors)) as (proc, leader):
        shown = read_until(leader, "waiting_approval")
        assert proc.wait(timeout=60) == EXIT_WAITING_APPROVAL, shown
    assert "Run this step?" not in errors.read_text() + shown
