"""A target's backup age is that of the database it reaches now, judged without
connecting to it: a target pointed at another database (PostgreSQL, MariaDB, SQLite), or
whose SQLite file was replaced at its path, has no age vouched by `backups list` (and its
--json), `fleet status`, the web view or the metrics, and the backup_stale alert fires
saying why, until a run reaches the new database and backs it up. None of them connects
to a target, and what the store records of a database reached holds no password."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved
from aishell.view.web import make_app
from tests.faultproxy import Proxy, Silent, server_port, through
from tests.helpers import fill_table, read_yaml, use_target, write_yaml
from tests.services import scratch_server

# What each reader says when it vouches no age, and why.
NEVER_REACHED = "unknown: no run has reached this database yet"
POINTED_ELSEWHERE = "unknown: its config changed since a run last reached its database"
FILE_REPLACED = "unknown: its SQLite file was replaced since a run last reached it"
FILE_MISSING = "unknown: its SQLite file is not there"
NO_BACKUP = "no restore-proven backup of its database"
STALE = {"condition": "backup_age_hours > 24", "targets": ["db"]}
GAUGE = 'aishell_backup_age_seconds{target="db"}'


@contextmanager
def two_databases(dialect: str, home: Path) -> Iterator[tuple[str, str]]:
    """Two databases of the dialect, a table of rows in each: SQLite files under the home,
    or scratch databases on the local server."""
    if dialect == "sqlite":
        first, second = (f"sqlite:///{home / name}" for name in ("first.db", "second.db"))
        fill_table(first, "kept", 5)
        fill_table(second, "kept", 5)
        yield first, second
        return
    with scratch_server(dialect) as first, scratch_server(dialect) as second:
        fill_table(first, "kept", 5)
        fill_table(second, "kept", 5)
        yield first, second


def watched(home: Path, url: str, **settings: Any) -> Config:
    """Target `db` at url (with `settings`), the only one, the backup_stale alert on it."""
    path = home / "config" / "aishell.yaml"
    data = read_yaml(path)
    data["targets"] = {"db": {"url": url, "environment": "test", **settings}}
    data["default_target"] = "db"
    data["monitoring"] = {"enabled": True, "alerts": [STALE]}
    write_yaml(path, data)
    return load_config(home=home)


def backed_up(config: Config) -> int:
    """A verified full backup of target db; its catalog id."""
    done = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
    assert done.status == "completed", done.error
    path = done.steps[1].output["backup_path"]
    return next(b["id"] for b in commands.list_backups(config) if b["path"] == path)


def seen(config: Config) -> dict[str, Any]:
    """What every reader of a backup's age says of target db."""
    runner = CliRunner()
    wide = {"COLUMNS": "300"}
    listed = runner.invoke(cli, ["backups", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    catalog = json.loads(listed.output)
    status = runner.invoke(cli, ["fleet", "status", "--json"])
    assert status.exit_code == 0, status.output
    (fleet,) = [t for t in json.loads(status.output)["targets"] if t["target"] == "db"]
    view = TestClient(
        make_app(config, None), base_url="http://127.0.0.1:8765", client=("127.0.0.1", 50000)
    )
    metric = [line for line in commands.metrics(config).splitlines() if line.startswith(GAUGE)]
    return {
        "newest": catalog["newest_restorable"]["db"],
        "listed": [b["id"] for b in catalog["backups"]],
        "list_text": runner.invoke(cli, ["backups", "list"], env=wide).output,
        "fleet": fleet["backup"],
        "fleet_text": runner.invoke(cli, ["fleet", "status"], env=wide).output,
        "pages": view.get("/").text + view.get("/backups").text,
        "metric": metric,
        "alerts": [a for a in commands.check_alerts(config)["firing"] if a["subject"] == "db"],
    }


def vouched(found: dict[str, Any], backup_id: int) -> str:
    """Every reader gives backup `backup_id`'s age, a fresh one, and no alert fires;
    returns the database it is of."""
    newest = found["newest"]
    assert newest["backup_id"] == backup_id and newest["reason"] is None
    assert 0 <= newest["age_seconds"] < 3600
    assert found["fleet"]["age_seconds"] is not None and found["fleet"]["reason"] is None
    assert f"db: newest backup proven restorable is id {backup_id}," in found["list_text"]
    assert "unknown:" not in found["fleet_text"] + found["pages"]
    assert len(found["metric"]) == 1
    assert found["alerts"] == []
    return str(newest["database"])


def unvouched(found: dict[str, Any], reason: str) -> None:
    """No reader gives an age, each says why, and the alert fires with that reason."""
    assert found["newest"]["backup_id"] is None and found["newest"]["age_seconds"] is None
    assert found["newest"]["reason"] == reason
    assert found["fleet"] == {"proven_at": None, "age_seconds": None, "reason": reason}
    if found["listed"]:  # else `backups list` says there are none
        assert f"db: {reason}" in found["list_text"]
    assert "unknown:" in found["fleet_text"]
    assert found["pages"].count(reason) == 2
    assert found["metric"] == []
    (alert,) = found["alerts"]
    assert alert["rule"] == "backup_stale" and alert["reason"] == reason
    assert alert["backup_age_hours"] is None and reason in alert["summary"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_target_pointed_at_another_database_has_no_age_until_that_one_is_backed_up(
    dialect: str, home: Path
) -> None:
    with two_databases(dialect, home) as (first, second):
        config = watched(home, first)
        unvouched(seen(config), NEVER_REACHED)
        taken = backed_up(config)
        first_database = vouched(seen(config), taken)

        config = watched(home, second)
        found = seen(config)
        unvouched(found, POINTED_ELSEWHERE)
        assert taken in found["listed"]  # the first database's backup is still listed

        again = backed_up(config)
        assert vouched(seen(config), again) != first_database
        assert taken in seen(config)["listed"]
        # A restore of the first one says which database it is of, not only its name.
        restoring = commands.restore(config, taken, "db", replace=True)
        assert restoring.status == "waiting_approval"
        assert restoring.steps[0].rationale == (
            f"Restore backup {taken} (of {first_database}, taken as 'db') into 'db'"
        )


def test_a_sqlite_file_replaced_at_its_path_has_no_age(home: Path) -> None:
    path = home / "target.db"
    fill_table(f"sqlite:///{path}", "kept", 5)
    config = watched(home, f"sqlite:///{path}")
    taken = backed_up(config)
    vouched(seen(config), taken)
    # Another file moved over it: the same URL, another database.
    fill_table(f"sqlite:///{home / 'other.db'}", "kept", 5)
    os.replace(home / "other.db", path)
    unvouched(seen(config), FILE_REPLACED)
    path.unlink()
    unvouched(seen(config), FILE_MISSING)


def test_no_listing_page_scrape_or_alert_connects_to_a_target(home: Path, pg_url: str) -> None:
    """Backed up through a proxy that then answers nothing: every reader vouches its age
    without a connection to it; pointed at a listener that answers nothing, every reader
    says it is unknown without a connection to that either."""
    fill_table(pg_url, "kept", 5)
    proxy, silent = Proxy(server_port(pg_url)), Silent()
    try:
        # Two seconds to connect, the least: a reader that did connect ends soon.
        config = watched(home, through(proxy.port, pg_url), connect_timeout_seconds=2)
        taken = backed_up(config)
        proxy.freeze()
        accepted = len(proxy.held)
        vouched(seen(config), taken)
        assert len(proxy.held) == accepted
        elsewhere = through(silent.port, pg_url)
        config = watched(home, elsewhere, connect_timeout_seconds=2)
        unvouched(seen(config), POINTED_ELSEWHERE)
        assert silent.held == [] and len(proxy.held) == accepted
    finally:
        proxy.close()
        silent.close()


SECRET = "Pw-0f-the-target-9"


def test_a_run_records_the_database_it_reached_and_no_password(home: Path, pg_url: str) -> None:
    """A dry run reaches its target too; a password changed since leaves it known."""
    fill_table(pg_url, "kept", 5)
    with_password = make_url(pg_url).set(password=SECRET).render_as_string(False)
    config = use_target(home, with_password)
    done = commands.run_job(config, "maintenance", {"type": "quick"}, dry_run=True)
    assert done.status not in ("failed",), done.error
    newest = commands.backup_catalog(config)["newest_restorable"]["db"]
    assert newest["database"].startswith("postgresql:") and newest["reason"] == NO_BACKUP
    state = home / "state.db"
    with sqlite3.connect(state) as conn:
        dumped = "\n".join(conn.iterdump())
        (row,) = conn.execute("SELECT target, database_identity FROM reached_databases")
    assert row == ("db", newest["database"])
    assert SECRET not in dumped
    for file in state.parent.glob("state.db*"):
        assert SECRET.encode() not in file.read_bytes(), file
    config = use_target(home, make_url(pg_url).set(password="another").render_as_string(False))
    assert commands.backup_catalog(config)["newest_restorable"]["db"]["reason"] == NO_BACKUP
