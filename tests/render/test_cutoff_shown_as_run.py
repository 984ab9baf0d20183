"""What `aishell runs show` says of a purge's cutoff is the value its DELETE compared the
rows with, to the microsecond, on every engine, in text and in --json: the purge's own
line names it, and `--sql` shows the values PostgreSQL and SQLite were sent apart from
the statement's text (MariaDB's are in the text, as the driver sent them)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.policy.approvers import PreApproved
from tests.handlers.purge.test_log_cleanup import _database, fill, job
from tests.helpers import use_target


def _shown(args: list[str]) -> str:
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    return ran.stdout


def _deletes(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in statements if s["sql"].lstrip().upper().startswith("DELETE")]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_the_cutoff_shown_is_the_one_the_delete_ran_with(home: Path, dialect: str) -> None:
    with _database(dialect, home) as url:
        fill(url, rows=300)
        config = use_target(home, url)
        # A retention of a fraction of a day: the cutoff, from the server's clock, has
        # microseconds (where the column's own format holds them).
        done = commands.run_job(
            config, "log_cleanup", job(retention_days=30.25), approver=PreApproved()
        )
        assert done.status == "completed", done.error
    run_id = done.run_id
    as_json = json.loads(_shown(["runs", "show", run_id, "--json", "--sql"]))
    purge = as_json["steps"][1]
    cutoff = purge["output"]["cutoff"]
    assert purge["params"]["cutoff"] == cutoff
    if dialect != "sqlite":  # SQLite's text dates are in the column's format (seconds)
        assert re.search(r"\.\d{6}", str(cutoff)), cutoff
    # The DELETE's bound value, as recorded when it was sent (MariaDB: in its text).
    deletes = _deletes(as_json["statements"])
    assert deletes
    for delete in deletes:
        if dialect == "mysql":
            assert f"< '{cutoff}'" in delete["sql"], delete["sql"]
        else:
            sent = delete["parameters"]["cutoff"]
            assert datetime.fromisoformat(str(sent)) == datetime.fromisoformat(str(cutoff))
            assert str(sent).replace(" ", "T") == str(cutoff).replace(" ", "T")
    text = _shown(["runs", "show", run_id])
    # Its clock named beside it (test_cutoff_clock_named.py).
    older = rf"\(older than {re.escape(str(cutoff))} in time zone [^)]+\)"
    assert re.search(rf"deleted in \d+ batch(es)? {older}", text), text
    with_sql = _shown(["runs", "show", run_id, "--sql"])
    delete_lines = [line for line in with_sql.splitlines() if "  DELETE FROM" in line]
    assert delete_lines
    for line in delete_lines:
        if dialect == "mysql":
            assert f"'{cutoff}'" in line, line
        else:
            assert re.search(rf"cutoff={re.escape(str(sent))}(,|$)", line), line
