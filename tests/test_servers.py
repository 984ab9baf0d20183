"""The maintenance agent on live PostgreSQL and MariaDB servers."""

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.approval import PreApproved
from aishell.cli import cli
from aishell.errors import TargetError
from tests.services import engine

TABLES = 12


def populate(url: str, tables: int = TABLES, rows: int = 3000) -> None:
    """Tables with indexes, written in random key order, then half deleted."""
    eng = engine(url)
    pg = url.startswith("postgresql")
    with eng.connect() as conn:
        if not pg:
            conn.execute(text("SET SESSION max_recursive_iterations = 10000000"))
        for i in range(tables):
            name = f"t{i:03d}"
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, "
                    "note VARCHAR(200) NOT NULL)"
                )
            )
            conn.execute(text(f"CREATE INDEX {name}_k ON {name} (k)"))
            if pg:
                conn.execute(
                    text(
                        f"INSERT INTO {name} SELECT g, (g * 7919) % {rows}, repeat('x', 150) "
                        f"FROM generate_series(1, {rows}) g"
                    )
                )
            else:
                conn.execute(
                    text(
                        f"INSERT INTO {name} WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL "
                        f"SELECT n + 1 FROM g WHERE n < {rows}) "
                        f"SELECT n, (n * 7919) % {rows}, REPEAT('x', 150) FROM g"
                    )
                )
            conn.execute(text(f"DELETE FROM {name} WHERE id % 2 = 0"))
    eng.dispose()


def test_full_maintenance_completes_with_a_report(server_config, server_url):
    populate(server_url)
    result = commands.run_job(
        server_config, "maintenance", {"type": "full"}, approver=PreApproved()
    )
    assert result.status == "completed", result.error
    assert all(s.status == "succeeded" for s in result.steps)
    report = result.report
    assert report["statistics_updated"] == TABLES
    assert len(report["tables_processed"]) == TABLES
    assert report["size_before"] > 0 and report["size_after"] > 0
    health = result.steps[0].output
    assert [t["table"] for t in health["tables"]][:1]  # ranked by urgency
    assert set(report["fragmentation"]) == {f"t{i:03d}" for i in range(TABLES)}


def test_full_maintenance_through_the_cli(server_config, server_url):
    populate(server_url, tables=3)
    result = CliRunner().invoke(cli, ["run", "maintenance", "--type", "full", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "completed"
    assert data["report"]["summary"].startswith("full maintenance of 3 table(s)")


def test_a_hostile_table_name_is_refused_and_nothing_runs(server_config, server_url):
    populate(server_url, tables=1, rows=10)
    with pytest.raises(TargetError, match="not found in target 'db'"):
        commands.run_job(
            server_config, "maintenance", {"type": "quick", "tables": ['x"; DROP TABLE t000; --']}
        )
    with engine(server_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t000")).scalar() == 5


def test_dry_run_is_read_only_in_the_server(server_config, server_url):
    populate(server_url, tables=2, rows=100)
    from aishell.targets import open_target

    handle = open_target(server_config, None, read_only=True)
    conn = handle.connect()
    try:
        with pytest.raises(Exception, match="read-only|READ ONLY"):
            conn.execute(text("DELETE FROM t000"))
    finally:
        conn.close()
        handle.close()
    result = commands.run_job(server_config, "maintenance", {"type": "full"}, dry_run=True)
    assert result.status == "completed"
    assert {s.status for s in result.steps} <= {"succeeded", "previewed"}


def test_targets_check_warns_about_an_over_broad_account(server_config, server_url):
    result = CliRunner().invoke(cli, ["targets", "check", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["target"] == "db" and info["server_version"]
    # The test servers connect as postgres / root: exactly what a DBA should not give aishell.
    assert any("superuser" in w or "ALL PRIVILEGES" in w for w in info["warnings"])
    listed = json.loads(CliRunner().invoke(cli, ["targets", "list", "--json"]).stdout)
    assert {t["name"] for t in listed["targets"]} == {"demo", "db"}


def test_password_comes_from_the_environment_and_is_never_stored(
    edit_config, server_url, monkeypatch, home
):
    from sqlalchemy.engine import make_url

    secret = "s3cret-Value-42"
    url = make_url(server_url)
    if url.get_backend_name() == "mysql":
        # MariaDB checks passwords: an account of our own for this database.
        user = f"u{url.database[-10:]}"
        with engine(server_url).connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'"))
            conn.execute(text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
            conn.execute(text("GRANT PROCESS ON *.* TO '" + user + "'@'%'"))
        url = url.set(username=user)
    config = edit_config(
        {
            "targets": {"db": {"url": url.render_as_string(), "password_env": "AISHELL_TEST_PW"}},
            "default_target": "db",
        }
    )
    monkeypatch.delenv("AISHELL_TEST_PW", raising=False)
    from aishell.errors import ConfigError

    with pytest.raises(ConfigError, match="AISHELL_TEST_PW \\(password_env\\) is not set"):
        commands.run_job(config, "maintenance", {"type": "quick"})
    # Trust auth ignores the password, so any value connects; it must never be written down.
    monkeypatch.setenv("AISHELL_TEST_PW", secret)
    populate(server_url, tables=1, rows=10)
    result = commands.run_job(config, "maintenance", {"type": "quick"})
    assert result.status == "completed"
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    if url.get_backend_name() == "mysql":
        with engine(server_url).connect() as conn:
            conn.execute(text(f"DROP USER '{url.username}'@'%'"))
