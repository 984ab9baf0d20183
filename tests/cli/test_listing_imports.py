"""Listing commands import only the database drivers they use: on a home whose state
store is SQLite and whose targets include PostgreSQL and MariaDB servers, `targets
list` imports no driver at all (it only reads the config), and `runs list` and `fleet
status` (which read the SQLite state store) import neither psycopg nor PyMySQL. A
driver is imported when a target of its engine is opened, never to list one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from tests.helpers import fresh_interpreter

DRIVERS = ("sqlite3", "_sqlite3", "psycopg", "psycopg2", "pymysql", "MySQLdb", "mariadb")

# Run in a fresh interpreter: this test process has imported every driver already.
PROBE = """
import json, sys
from aishell.cli import cli
try:
    cli(sys.argv[2:], prog_name="aishell")
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))))
"""


@pytest.fixture
def mixed_home(home: Path, demo_db: Path) -> Path:
    """The demo SQLite target with one run in the SQLite state store, beside a
    PostgreSQL and a MariaDB target (never connected to: listing does not connect)."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["pg-listed"] = {"url": "postgresql+psycopg://postgres@127.0.0.1:5432/x"}
    data["targets"]["maria-listed"] = {"url": "mysql+pymysql://root@127.0.0.1:3306/x"}
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    assert config.state_url.startswith("sqlite")
    result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert result.status == "completed", result.error
    return home


def _drivers(home: Path, *args: str) -> list[str]:
    done = fresh_interpreter(PROBE, json.dumps(DRIVERS), "--home", str(home), *args)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_targets_list_imports_no_driver(mixed_home: Path) -> None:
    assert _drivers(mixed_home, "targets", "list", "--json") == []


@pytest.mark.parametrize("args", [["runs", "list"], ["fleet", "status"]])
def test_commands_reading_the_state_store_import_only_its_driver(
    mixed_home: Path, args: list[str]
) -> None:
    found = _drivers(mixed_home, *args, "--json")
    assert "sqlite3" in found  # they did read the store
    assert not set(found) - {"sqlite3", "_sqlite3"}, found
