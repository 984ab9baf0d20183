"""`aishell plan` shows, under its table, what each step's writes reach beyond the rows
it names: the rows a foreign key takes with them and the triggers the writes fire, as
the dry run, the prompt and `--json` do."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.handlers.purge.test_log_cleanup import RETENTION, ROWS, _database, fill
from tests.helpers import run_sql, use_target
from tests.plan.test_apply_as_reviewed import AUDIT_TRIGGER


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_plan_table_names_cascades_and_triggers(dialect: str, home: Path) -> None:
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_sql(
            url,
            "CREATE TABLE audit (id INT)",
            "CREATE TABLE notes (id INT PRIMARY KEY, log_id INT, "
            "FOREIGN KEY (log_id) REFERENCES events (id) ON DELETE CASCADE)",
            *AUDIT_TRIGGER[dialect],
        )
        use_target(home, url)
        args = ["plan", "log-cleanup", "--table", "events", "--date-column", "created_at"]
        shown = CliRunner(env={"COLUMNS": "200"}).invoke(
            cli, [*args, "--retention-days", str(RETENTION)]
        )
        assert shown.exit_code == 0, shown.output
        text = " ".join(shown.output.split())
        assert "reaches further: deleting from events also acts on " in text, text
        assert "notes.log_id (ON DELETE CASCADE" in text, text
        assert "reaches further: deleting from events fires trigger audit_gone" in text, text
