"""A server's backup step shows the dump it runs wherever no session renders it: a dry
run's incremental whose parent could not be found (so the step is previewed without its
inputs) and `aishell tools show` name pg_dump or mariadb-dump, never SQLite's VACUUM
INTO, on the engine they are shown for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import use_target

DUMPS = {"postgresql": "-- pg_dump -Fc", "mysql": "-- mariadb-dump --single-transaction"}


def test_a_dry_run_incremental_without_its_parent_shows_the_dump_it_would_run(
    server_url: str, home: Path
) -> None:
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    use_target(home, server_url)
    result = CliRunner().invoke(
        cli, ["run", "backup", "--type", "incremental", "--dry-run", "--json"]
    )
    steps = {s["tool"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["find_last_backup"]["status"] == "failed"  # no verified backup yet
    shown = steps["backup_database_incremental"]
    assert shown["status"] == "previewed"
    assert [line.startswith(DUMPS[dialect]) for line in shown["sql"]] == [True], shown["sql"]


@pytest.mark.parametrize("tool", ["backup_database_full", "backup_database_incremental"])
def test_tools_show_gives_each_engine_its_own_dump(tool: str, home: Path) -> None:
    result = CliRunner().invoke(cli, ["tools", "show", tool, "--json"])
    assert result.exit_code == 0, result.output
    said = json.dumps(json.loads(result.stdout))
    for dialect, line in DUMPS.items():
        assert line in said, (dialect, said)
    assert said.count("VACUUM INTO :path") == 1, said  # SQLite's alone
