"""What a MySQL/MariaDB URL's query says about the login reaches the client programs
as it reaches aishell's own session: a password given as `?password=` or `?passwd=`,
and the TLS settings (ssl_ca, ssl_disabled, ...). A query option PyMySQL does not take,
or a TLS file that cannot be read, is one line naming it.

Every test has its own empty HOME (conftest.user_home). The MariaDB users are real,
made and dropped by the test; the shared server has no TLS, so TLS is shown by the
options file the programs are given and by what the mariadb client then does with it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.errors import StepFailed
from aishell.targets.clientlogin import client_env, client_login
from aishell.targets.engines import open_target
from tests.helpers import use_target
from tests.services import MYSQL_ADMIN, engine

HANG = 60  # seconds: a hang detector, never a timing assertion


@pytest.fixture
def fixlog_user(mysql_url: str) -> Iterator[tuple[str, str, str]]:
    """A MariaDB user of its own with a password that needs quoting in a URL and in an
    option file; yields (user, password, the scratch database's URL without a login)."""
    user = f"fixlog_{uuid.uuid4().hex[:8]}"
    password = f"p&w='{uuid.uuid4().hex[:6]}\" #x\\y+%"
    database = make_url(mysql_url).database
    admin = engine(MYSQL_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": password})
        conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
        conn.execute(text(f"GRANT ALL ON `aishell\\_verify\\_%`.* TO '{user}'@'%'"))
    try:
        with engine(mysql_url).connect() as conn:
            conn.execute(text("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))"))
            conn.execute(text("INSERT INTO a VALUES (1, 'one'), (2, 'two')"))
        url = make_url(mysql_url).set(username=user, password=None)
        yield user, password, url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


@pytest.mark.parametrize("key", ["password", "passwd"])
def test_a_password_in_the_urls_query_serves_the_backup_programs_too(
    key, fixlog_user, home, user_home, monkeypatch
):
    """The query's password is the URL's: the dump and the validation's restore log in
    with it, and a MYSQL_PWD beside it (a later source) is not used by anyone."""
    user, password, url = fixlog_user
    monkeypatch.setenv("MYSQL_PWD", "wrong")
    use_target(home, f"{url}?{key}={quote_plus(password)}")
    done = CliRunner().invoke(cli, ["run", "backup", "--yes", "--target", "db", "--json"])
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    assert run["status"] == "completed", run
    assert password not in done.output
    shown = CliRunner().invoke(cli, ["doctor", "--target", "db", "--json"])
    found = json.loads(shown.stdout)["targets"][0]
    assert found["login"]["user"] == user
    assert found["login"]["password_from"] == "URL"
    assert {c["program"]: c["logged_in"] for c in found["client_logins"]} == {
        "mariadb-dump": True,
        "mariadb": True,
    }
    assert password not in shown.output


def _handed(url: str, home: Path) -> tuple[str, subprocess.CompletedProcess[bytes]]:
    """The options file the mariadb client is given for target `db` at url (through the
    engine's URL, as a backup hands it), and what the client did with it."""
    handle = open_target(use_target(home, url), "db")
    try:
        login = handle.engine.url
        argv = ["mariadb", "-N", "-e", "SELECT 1"]
        with client_login(argv, client_env(), login, 5, 60) as (started, env):
            options = Path(started[1].split("=", 1)[1]).read_text()
            done = subprocess.run(started, env=env, capture_output=True, timeout=HANG)
    finally:
        handle.close()
    return options, done


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA certificate, a client certificate and its key of the test's own."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
    argv += ["-out", str(cert), "-days", "2", "-subj", "/CN=aishell-test"]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
    )
    return {"ca": cert, "cert": cert, "key": key}


def test_a_urls_tls_files_reach_the_client_programs_and_require_tls(
    mysql_url, home, user_home, tls_files
):
    """ssl_ca, ssl_cert and ssl_key make PyMySQL require TLS; the client gets the same
    files and requires it too, so against a server without TLS both refuse, and
    neither sends the session in clear."""
    query = "&".join(f"ssl_{k}={quote_plus(str(v))}" for k, v in tls_files.items())
    options, done = _handed(f"{mysql_url}?{query}", home)
    lines = options.splitlines()
    assert f'ssl-ca="{tls_files["ca"]}"' in lines
    assert f'ssl-cert="{tls_files["cert"]}"' in lines
    assert f'ssl-key="{tls_files["key"]}"' in lines
    assert "ssl-verify-server-cert" in lines
    assert done.returncode != 0
    assert b"SSL is required" in done.stderr, done.stderr
    handle = open_target(use_target(home, f"{mysql_url}?{query}"), "db")
    try:
        with pytest.raises(Exception, match="SSL is required"), handle.connect():
            pass
    finally:
        handle.close()


def test_a_url_that_turns_tls_off_turns_it_off_for_the_client_programs(mysql_url, home, user_home):
    options, done = _handed(f"{mysql_url}?ssl_disabled=true", home)
    assert "skip-ssl" in options.splitlines()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"1"


def test_a_key_passphrase_no_client_program_takes_is_one_line(
    mysql_url, home, user_home, tls_files
):
    url = f"{mysql_url}?ssl_cert={tls_files['cert']}&ssl_key={tls_files['key']}"
    with pytest.raises(StepFailed, match="ssl_key_password") as refused:
        _handed(f"{url}&ssl_key_password=hush", home)
    assert "hush" not in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "query, said",
    [
        ("bogus=1", "'bogus'"),
        ("ssl_ca=/nonexistent/ca.pem", "ssl_ca /nonexistent/ca.pem"),
        ("ssl_verify_cert=maybe", "ssl_verify_cert"),
    ],
)
def test_a_query_option_pymysql_cannot_use_is_one_line(query, said, mysql_url, home, user_home):
    use_target(home, f"{mysql_url}?{query}")
    done = CliRunner().invoke(cli, ["targets", "check", "db"])
    assert done.exit_code != 0
    lines = done.output.strip().splitlines()
    assert len(lines) == 1, done.output
    assert "internal error" not in lines[0]
    assert said in lines[0], lines[0]


def test_targets_add_refuses_a_query_option_pymysql_cannot_use(mysql_url, home, user_home):
    """Even unchecked (--no-check), a target is not written with such an option."""
    before = (home / "config" / "aishell.yaml").read_text()
    url = str(make_url(mysql_url).set(drivername="mysql"))
    done = CliRunner().invoke(cli, ["targets", "add", "fixlog", f"{url}?bogus=1", "--no-check"])
    assert done.exit_code != 0
    assert "'bogus'" in done.output and len(done.output.strip().splitlines()) == 1
    assert (home / "config" / "aishell.yaml").read_text() == before
