"""A restore's approval covers the tables it replaces as they were when approved: one
grown past the approval's slack before the restore runs is asked about again, naming
the change, instead of being overwritten on a yes given for far fewer rows. A table the
same size keeps the approval."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.config.models import Config
from tests.handlers.backup.test_restore_replaces import (
    asked,
    backup_of,
    hundred_rows,
    run_sql,
    scalar,
    target_url,  # noqa: F401  (a fixture)
)


def _approved(home: Path, source: str, target: str) -> tuple[Config, str]:
    """A restore over a one-row `kept` of target, approved by its step's number."""
    config, backup = backup_of(home, source, target, *hundred_rows(source, "kept"))
    run_sql(target, "CREATE TABLE kept (id INTEGER PRIMARY KEY, note VARCHAR(40))")
    run_sql(target, "INSERT INTO kept VALUES (1, 'small')")
    run = asked(config, backup)
    [step] = run.steps
    assert step.status == "waiting_approval", step.error
    commands.decide_steps(config, run.run_id, "approved", step=0, reason="ok")
    return config, run.run_id


def _grown(url: str, rows: int) -> str:
    if url.startswith("postgresql"):
        return f"INSERT INTO kept SELECT g, 'new' FROM generate_series(1000, {999 + rows}) g"
    return f"INSERT INTO kept SELECT seq, 'new' FROM seq_1000_to_{999 + rows}"


def test_a_replaced_table_grown_after_the_approval_is_asked_about_again(
    home: Path,
    server_url: str,
    target_url: str,  # noqa: F811
) -> None:
    config, run_id = _approved(home, server_url, target_url)
    run_sql(target_url, _grown(target_url, 20000))
    again = commands.resume_run(config, run_id)
    assert again.status == "waiting_approval", again.error
    [step] = again.steps
    said = step.error or ""
    assert said.startswith("its earlier approval no longer covers it: "), said
    assert "kept" in said and "rows" in said, said
    assert scalar(target_url, "SELECT count(*) FROM kept") == 20001  # nothing replaced


def test_a_replaced_table_unchanged_keeps_the_approval(
    home: Path,
    server_url: str,
    target_url: str,  # noqa: F811
) -> None:
    config, run_id = _approved(home, server_url, target_url)
    done = commands.resume_run(config, run_id)
    assert done.status == "completed", done.error
    assert scalar(target_url, "SELECT count(*) FROM kept") == 100
