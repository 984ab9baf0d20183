"""A backup's preview names what is known before it runs: the database, the target's
backup folder, the dump program's arguments as it starts them; only what its run alone
knows (when it is taken, a name's random part, pg_dump's snapshot) is a marked
placeholder. The file the run writes is the one its preview named."""

from __future__ import annotations

import shlex
from fnmatch import fnmatch
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.handlers.backup.processes import mysql_dump_program
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, scratch_target

SUFFIX = {"sqlite": ".sqlite", "postgresql": ".dump", "mysql": ".sql"}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_backup_preview_names_the_database_and_the_file_it_writes(
    dialect: str, home: Path
) -> None:
    with scratch_target(dialect, home) as (config, url):
        run_sql(url, "CREATE TABLE named (id integer PRIMARY KEY)", "INSERT INTO named VALUES (1)")
        dry = commands.run_job(config, "backup", {"type": "full"}, dry_run=True)
        assert dry.status == "completed", dry.error
        [shown] = dry.steps[1].sql
        real = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
        assert real.status == "completed", real.error
    for unknown in ("<database>", "<target>", "<backup folder>"):
        assert unknown not in shown, shown
    written = f"{config.backup_dir / 'db'}/db-full-<time>-<random>{SUFFIX[dialect]}.partial"
    database = str(make_url(url).database)
    if dialect == "sqlite":
        assert shown == f"VACUUM INTO '{written}'"
    elif dialect == "postgresql":
        assert shown.startswith("-- pg_dump -Fc --snapshot <exported snapshot> -h "), shown
        assert shown.endswith(f" {database} > {shlex.quote(written)}"), shown
    else:
        assert shown.startswith(f"-- {mysql_dump_program()} --single-transaction "), shown
        assert shown.endswith(f" -- {database} > {shlex.quote(written)}"), shown
    # The run renders the same line, and writes the file the preview named.
    assert real.steps[1].sql == [shown]
    taken = real.steps[1].output["backup_path"] + ".partial"
    assert fnmatch(taken, written.replace("<time>-<random>", "*-*")), (taken, written)
