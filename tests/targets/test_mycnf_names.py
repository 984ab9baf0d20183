"""~/.my.cnf's login read as the MariaDB clients read it, or refused in one line where
aishell could not log in as they would (aishell/targets/optionfiles.py): the files it
!includes and the *.cnf files of the folders it !includedirs, `loose-password`; a
shortened name (`passw=`), `skip-password` and a bare `password` are refused.

The client is the oracle: a real login to the local MariaDB server as a user of the
test's own with a password (conftest.mysql_user), or `mariadb --print-defaults`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.targets.engines import open_target
from aishell.targets.optionfiles import read_option_groups
from tests.helpers import use_target
from tests.targets.test_logins import my_cnf, quoted
from tests.targets.test_mycnf_reading import client, client_password

HANG = 60  # seconds: a hang detector, never a timing assertion


def client_logs_in(user_home: Path, url: str) -> bool:
    """Whether the mariadb client, given ~/.my.cnf alone, logs in to the URL's server."""
    parts = make_url(url)
    where = ["-h", str(parts.host), "-P", str(parts.port or 3306), "--protocol=tcp"]
    done = subprocess.run(
        [client(), *where, "-e", "SELECT 1"],
        env={"HOME": str(user_home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG,
        check=False,
    )
    return done.returncode == 0


def our_login(home: Path, url: str) -> str:
    """aishell's own session to the URL's server: who it logged in as."""
    handle = open_target(use_target(home, str(make_url(url).set(username=None))), "db")
    try:
        with handle.connect() as conn:
            return str(conn.execute(text("SELECT CURRENT_USER()")).scalar_one())
    finally:
        handle.close()


@pytest.mark.parametrize("how", ["include", "includedir", "loose"])
def test_a_password_where_the_client_finds_it_logs_aishell_in(
    mysql_user, home, user_home, tmp_path, how
):
    user, password, url = mysql_user
    if how == "loose":
        my_cnf(user_home, f"[client]\nuser={user}\nloose-password={quoted(password)}\n")
    else:
        folder = tmp_path / "conf.d"
        folder.mkdir()
        # Read by name: b after a; a file not named *.cnf is not read.
        (folder / "a.cnf").write_text("[client]\npassword=wrong-a\n")
        (folder / "b.cnf").write_text(f"[client]\npassword={quoted(password)}\n")
        (folder / "c.txt").write_text("[client]\npassword=wrong-c\n")
        line = f"!includedir {folder}" if how == "includedir" else f"!include {folder / 'b.cnf'}"
        my_cnf(user_home, f"[client]\nuser={user}\npassword=wrong\n{line}\n")
    assert client_logs_in(user_home, url)
    assert our_login(home, url) == f"{user}@%"


def test_an_included_folder_is_read_in_the_client_s_order(user_home, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("b.cnf", "a.cnf", "z.txt"):
        (folder / name).write_text(f"[client]\npassword={name}\n")
    (tmp_path / "writable.cnf").write_text("[client]\npassword=anyone\n")
    (tmp_path / "writable.cnf").chmod(0o666)
    path = tmp_path / "main.cnf"
    path.write_text(
        f"[client]\n!includedir {folder}\n[mysqld]\n!include {tmp_path / 'writable.cnf'}\n"
        f"password=server\n!include {tmp_path / 'missing.cnf'}\n"
    )
    theirs, _ = client_password([f"--defaults-file={path}"])
    ours = read_option_groups(path, ("client", "client-server", "client-mariadb"))
    assert theirs == ours["password"] == "b.cnf"


REFUSED = [
    ("passw=x", "a shortened password"),
    ("pass=x", "a shortened password"),
    ("pa=x", "a shortened password"),
    ("loose-passw=x", "a shortened password"),
    ("p=x", "a shortened password or port"),
    ("skip-password", "turns the login's password off"),
    ("password", "without a value makes the clients ask"),
    ("us=x", "a shortened user"),
]


@pytest.mark.parametrize(("line", "said"), REFUSED)
def test_a_login_option_the_clients_read_otherwise_is_one_line(
    mysql_user, home, user_home, line, said
):
    user, password, url = mysql_user
    my_cnf(user_home, f"[client]\nuser={user}\npassword={quoted(password)}\n{line}\n")
    use_target(home, str(make_url(url).set(username=None)))
    done = CliRunner().invoke(cli, ["targets", "check", "db"])
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output
    error = [row for row in done.output.splitlines() if row.startswith("Error: ")]
    assert len(error) == 1 and said in error[0] and ".my.cnf [client]" in error[0], done.output


def test_the_client_takes_a_shortened_name_for_the_password(mysql_user, user_home):
    # Why `passw=` is refused and not passed over: the client logs in with it.
    user, password, url = mysql_user
    my_cnf(user_home, f"[client]\nuser={user}\npassword={quoted(password)}\npassw=wrong\n")
    assert not client_logs_in(user_home, url)
    my_cnf(user_home, f"[client]\nuser={user}\npassw={quoted(password)}\n")
    assert client_logs_in(user_home, url)
