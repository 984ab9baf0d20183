"""The password file's line for each host libpq tries, as libpq picks it: the host as
given; without one, its hostaddr (never "localhost", whose password would go to another
server); each host of a list in turn (`?host=a:1&host=b:2`, `?host=a,b&port=1,2`, a
service's or PGHOST's `a,b`). aishell sends one password to whichever host answers, so
a list whose hosts the file gives different passwords is refused in one line.

libpq itself is the oracle: the shared server trusts every login, so the password a
connection took from the file (conn.info.password) tells which line matched.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.targets.engines import open_target
from tests.helpers import use_target
from tests.targets.test_logins import watched


def pgpass(user_home: Path, *lines: str) -> Path:
    path = user_home / ".pgpass"
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
    return path


def ours(home: Path, url: str) -> tuple[str | None, str | None]:
    """The password aishell's own session sent, and the host it reached."""
    handle = open_target(use_target(home, url), "db")
    try:
        with handle.connect() as conn:
            info = conn.connection.driver_connection.info  # type: ignore[union-attr]
            return info.password, info.host
    finally:
        handle.close()


def test_a_hostaddr_without_a_host_matches_its_own_line(pg_url, home, user_home):
    url = make_url(pg_url)
    lines = (f"127.0.0.1:{url.port}:*:*:by-address", f"localhost:{url.port}:*:*:by-localhost")
    passfile = pgpass(user_home, *lines)
    with psycopg.connect(
        hostaddr="127.0.0.1",
        port=url.port,
        dbname=url.database,
        user=url.username,
        passfile=str(passfile),
    ) as conn:
        assert conn.info.password == "by-address"
    where = (
        f"postgresql+psycopg://{url.username}@/{url.database}?hostaddr=127.0.0.1&port={url.port}"
    )
    assert ours(home, where) == ("by-address", "127.0.0.1")


def test_a_host_with_a_hostaddr_matches_the_host_s_line(pg_url, home, user_home):
    url = make_url(pg_url)
    lines = (f"127.0.0.1:{url.port}:*:*:by-address", f"localhost:{url.port}:*:*:by-localhost")
    pgpass(user_home, *lines)
    where = f"postgresql+psycopg://{url.username}@localhost:{url.port}/{url.database}?hostaddr=127.0.0.1"
    assert ours(home, where)[0] == "by-localhost"


@pytest.mark.parametrize(
    "query",
    [
        "?host=nosuch.invalid:{port}&host=127.0.0.1:{port}",
        "?host=nosuch.invalid,127.0.0.1&port={port},{port}",
    ],
)
def test_a_host_list_logs_in_to_the_host_that_answers(pg_url, home, user_home, query):
    url = make_url(pg_url)
    pgpass(user_home, f"*:{url.port}:*:*:every-host")
    where = f"postgresql+psycopg://{url.username}@/{url.database}" + query.format(port=url.port)
    assert ours(home, where) == ("every-host", "127.0.0.1")
    handle = open_target(use_target(home, where), "db")
    try:
        # pg_dump and the like get the same list through their service file.
        seen = watched(handle, ["psql", "-c", "SELECT pg_sleep(2)"])
    finally:
        handle.close()
    assert b"every-host" not in seen["cmdline"]


def test_a_service_s_host_list_is_matched_host_by_host(pg_url, home, user_home, monkeypatch):
    url = make_url(pg_url)
    service = user_home / ".pg_service.conf"
    service.write_text(
        f"[shop]\nhost=nosuch.invalid,127.0.0.1\nport={url.port}\ndbname={url.database}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    pgpass(user_home, f"nosuch.invalid:{url.port}:*:*:same", f"127.0.0.1:{url.port}:*:*:same")
    with psycopg.connect(service="shop", user=url.username) as conn:
        assert conn.info.password == "same"
    where = f"postgresql+psycopg://{url.username}@/?service=shop"
    assert ours(home, where) == ("same", "127.0.0.1")
    # aishell's own finding, which its programs get too (not libpq's, behind it).
    handle = open_target(use_target(home, where), "db")
    handle.close()
    assert handle.login is not None and handle.login.password_from == "~/.pgpass"
    assert handle.login.password == "same"


def test_hosts_the_file_gives_different_passwords_are_one_line(pg_url, home, user_home):
    url = make_url(pg_url)
    pgpass(
        user_home, "nosuch.invalid:*:*:*:first-secret", f"127.0.0.1:{url.port}:*:*:second-secret"
    )
    where = f"postgresql+psycopg://{url.username}@/{url.database}?host=nosuch.invalid:{url.port}&host=127.0.0.1:{url.port}"
    use_target(home, where)
    done = CliRunner().invoke(cli, ["targets", "check", "db"])
    assert done.exit_code == 2, done.output
    error = [row for row in done.output.splitlines() if row.startswith("Error: ")]
    assert len(error) == 1 and "different passwords" in error[0], done.output
    assert "first-secret" not in error[0] and "second-secret" not in error[0], error


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("?host=a:1&host=b:2&port=3", "host=a:1&host=b:2 or as host=a,b&port=1,2, not both"),
        ("?host=a,b&port=1,2,3", "2 host(s) and 3 ports"),
        ("?port=abc", "port is not a port number: 'abc'"),
        ("?host=a,b&hostaddr=127.0.0.1", "2 host(s) and 1 hostaddr value(s)"),
    ],
)
def test_hosts_and_ports_that_do_not_pair_are_one_line(home, user_home, query, said):
    pgpass(user_home, "*:*:*:*:any")
    use_target(home, f"postgresql+psycopg://postgres@/db{query}")
    done = CliRunner().invoke(cli, ["targets", "check", "db"])
    assert done.exit_code == 2, done.output
    error = [row for row in done.output.splitlines() if row.startswith("Error: ")]
    assert len(error) == 1 and "Target 'db'" in error[0] and said in error[0], done.output
