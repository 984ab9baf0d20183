"""A dry run shows each previewed step on one line, its statements joined by ` ; `, and
its details indented below: no statement's own line breaks split a step's line (the
MariaDB statistics step's row-estimate read used to print over three lines and a blank
one after a log cleanup's purge)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import run_sql, use_target
from tests.services import scratch_mysql


def _previewed_lines(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Dry run:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Run ") and i > start)
    return lines[start + 1 : end]


def test_mysql_a_log_cleanup_dry_run_shows_each_step_on_one_line(home: Path) -> None:
    with scratch_mysql() as url:
        run_sql(
            url,
            "CREATE TABLE app_logs (id bigint AUTO_INCREMENT PRIMARY KEY, created_at datetime "
            "NOT NULL, message varchar(40), KEY (created_at))",
            "INSERT INTO app_logs (created_at, message) SELECT now() - interval (seq % 45) day, "
            "'m' FROM seq_1_to_3000",
        )
        use_target(home, url)
        done = CliRunner().invoke(
            cli,
            ["run", "log-cleanup", "--table", "app_logs", "--retention-days", "30", "--dry-run"],
        )
    assert done.exit_code == 0, done.output
    shown = _previewed_lines(done.stdout)
    steps = [line for line in shown if line.startswith("  step_")]
    assert any(" update_table_statistics " in line for line in steps), shown
    # Every other line is a step's detail, indented under it.
    assert [line for line in shown if not line.startswith(("  step_", "    "))] == []
    statistics = next(line for line in steps if " update_table_statistics " in line)
    # What its run renders and sends (tests/executor/test_dry_run_foreseen.py).
    assert statistics.endswith(" update_table_statistics app_logs: ANALYZE TABLE `app_logs`")
