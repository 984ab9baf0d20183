"""A MariaDB backup's programs reach the server the way aishell's own session does, so
the server takes them for the same account. The server tells 'app'@'localhost' (its
Unix socket) from 'app'@'127.0.0.1' (TCP): two accounts, here with passwords of their
own. A URL with `?unix_socket=` had its session go through the socket while mariadb-dump
was forced onto TCP (`--protocol=TCP`), and was refused as the other account; a URL
naming `localhost` had its session go by TCP while `doctor`'s checks of the programs went
through the socket ("CANNOT log in", for a login the backups used)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.secrets.test_password_audit import set_targets
from tests.services import admin_engine

SOCKET_PW = "through-the-socket"
TCP_PW = "through-tcp"


@contextmanager
def two_accounts(mysql_url: str) -> Iterator[tuple[str, str]]:
    """A user of this test's own at 'localhost' and at '127.0.0.1', each with rights on
    the test's database and a password of its own; yields its name and the socket."""
    name = f"aishell_acct_{uuid.uuid4().hex[:8]}"
    database = make_url(mysql_url).database
    admin = admin_engine(mysql_url, "MariaDB")
    try:
        with admin.connect() as conn:
            socket = str(conn.execute(text("SELECT @@socket")).scalar())
            for host, password in (("localhost", SOCKET_PW), ("127.0.0.1", TCP_PW)):
                user = f"'{name}'@'{host}'"
                conn.execute(text(f"CREATE USER {user} IDENTIFIED BY :pw"), {"pw": password})
                conn.execute(text(f"GRANT ALL ON `{database}`.* TO {user}"))
                conn.execute(text(f"GRANT ALL ON `aishell\\_verify\\_%`.* TO {user}"))
            conn.execute(text(f"CREATE TABLE `{database}`.t (a INT PRIMARY KEY)"))
            conn.execute(text(f"INSERT INTO `{database}`.t VALUES (1), (2), (3)"))
        yield name, socket
    finally:
        with admin.connect() as conn:
            for host in ("localhost", "127.0.0.1"):
                conn.execute(text(f"DROP USER IF EXISTS '{name}'@'{host}'"))
        admin.dispose()


def _url(mysql_url: str, user: str, host: str, **query: str) -> str:
    url = make_url(mysql_url).set(username=user, host=host, port=None, query=query)
    return url.render_as_string(False)


@pytest.mark.parametrize("through", ["socket", "tcp"])
def test_a_backup_and_doctor_reach_the_account_the_session_does(
    through: str, mysql_url: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_accounts(mysql_url) as (user, socket):
        if through == "socket":
            url, password = _url(mysql_url, user, "localhost", unix_socket=socket), SOCKET_PW
        else:
            url, password = _url(mysql_url, user, "localhost"), TCP_PW
        monkeypatch.setenv("AISHELL_ACCT_PW", password)
        set_targets(home, {"db": {"url": url, "password_env": "AISHELL_ACCT_PW"}})
        doctor = CliRunner().invoke(cli, ["doctor", "--target", "db", "--json"])
        [target] = json.loads(doctor.stdout)["targets"]
        assert target["client_logins"], target
        assert all(c["logged_in"] for c in target["client_logins"]), target["client_logins"]
        ran = CliRunner().invoke(cli, ["run", "backup", "--yes", "--json"])
        shown = json.loads(ran.stdout)
        assert ran.exit_code == 0, shown["error"]
        assert shown["status"] == "completed"
