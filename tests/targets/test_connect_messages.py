"""A connection that fails is one line with the server's own words and its hint:
never a driver's raw tuple, never libpq's advice cut off."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import closed_port, use_target


def failure(home: Path, url: str) -> str:
    use_target(home, url)
    result = CliRunner().invoke(cli, ["run", "maintenance", "--type", "quick", "--dry-run"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Cannot connect to target 'db': "), (
        result.output
    )
    return lines[0]


def test_a_wrong_password_on_mariadb_is_the_servers_words(home: Path, mysql_url: str) -> None:
    wrong = make_url(mysql_url).set(password="not-the-password")
    line = failure(home, wrong.render_as_string(hide_password=False))
    assert "Access denied for user 'root'" in line and "(error 1045)" in line
    assert "(1045," not in line and "not-the-password" not in line


def test_an_unknown_role_on_postgresql_is_the_servers_words(home: Path, pg_url: str) -> None:
    line = failure(home, make_url(pg_url).set(username="no_such_role_here").render_as_string())
    assert 'role "no_such_role_here" does not exist' in line


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_nothing_listening_keeps_the_clients_advice(home: Path, scheme: str) -> None:
    line = failure(home, f"{scheme}://u@127.0.0.1:{closed_port()}/db")
    assert "refused" in line.lower(), line
    if scheme.startswith("postgresql"):
        assert "Is the server running on that host and accepting TCP/IP connections?" in line
