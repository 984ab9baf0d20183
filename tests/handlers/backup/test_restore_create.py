"""`aishell restore ID --to TARGET --create` makes the target's database when it does not
exist, then restores into it; without --create, a database that does not exist is one
line saying how to make it. On PostgreSQL, MariaDB and SQLite; the database the test
names is unique to it, made only by the restore and dropped by the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.policy.approvers import Prompting
from tests.helpers import fill_table, use_target
from tests.services import MYSQL_ADMIN, PG_ADMIN, engine


@pytest.fixture
def new_database(server_url: str) -> Iterator[str]:
    """The URL of a database on server_url's server that nobody made; dropped after."""
    name = f"aishell_new_{uuid.uuid4().hex[:10]}"
    admin_url = PG_ADMIN if server_url.startswith("postgresql") else MYSQL_ADMIN
    yield str(make_url(server_url).set(database=name).render_as_string(False))
    admin = engine(admin_url)
    try:
        with admin.connect() as conn:
            quoted = f'"{name}"' if server_url.startswith("postgresql") else f"`{name}`"
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
    finally:
        admin.dispose()


def _rows(url: str) -> int:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM kept")).scalar() or 0)
    finally:
        eng.dispose()


def test_restore_create_makes_the_database_then_restores_into_it(
    home: Path, server_url: str, new_database: str
):
    fill_table(server_url, "kept", 30)
    config = use_target(home, server_url, fresh=new_database)
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    [backup] = commands.list_backups(config, "db")

    refused = CliRunner().invoke(cli, ["restore", str(backup["id"]), "--to", "fresh", "--yes"])
    assert refused.exit_code == 2, refused.output
    name = make_url(new_database).database
    assert f"its database {name} does not exist" in refused.output
    assert f"aishell restore {backup['id']} --to fresh --create" in refused.output
    assert refused.output.strip().count("\n") == 0

    typed = Prompting(ask=lambda request: "yes")
    done = commands.restore(config, backup["id"], "fresh", approver=typed, create=True)
    assert done.status == "completed", done.error
    assert _rows(new_database) == 30
    # Once made, --create changes nothing: the restore of a database that exists.
    again = commands.restore(
        config, backup["id"], "fresh", replace=True, approver=typed, create=True
    )
    assert again.status == "completed", again.error
    assert _rows(new_database) == 30


def test_sqlite_restore_create_makes_a_private_file(home: Path, demo_db: Path):
    config = use_target(home, f"sqlite:///{demo_db}", fresh=f"sqlite:///{home / 'fresh.db'}")
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    [backup] = commands.list_backups(config, "db")
    refused = CliRunner().invoke(cli, ["restore", str(backup["id"]), "--to", "fresh"])
    assert refused.exit_code == 2 and "does not exist" in refused.output
    assert not (home / "fresh.db").exists()
    done = commands.restore(
        config, backup["id"], "fresh", approver=Prompting(ask=lambda r: "yes"), create=True
    )
    assert done.status == "completed", done.error
    assert (home / "fresh.db").stat().st_mode & 0o777 == 0o600
    # A folder that is not there is one line, and nothing is made.
    config = use_target(home, f"sqlite:///{demo_db}", gone=f"sqlite:///{home / 'no' / 'x.db'}")
    missing = CliRunner().invoke(
        cli, ["restore", str(backup["id"]), "--to", "gone", "--create", "--yes"]
    )
    assert missing.exit_code != 0 and "does not exist" in missing.output
    assert not (home / "no").exists()
