"""~/.my.cnf is read as the DBA's own `mariadb` client reads it (aishell/targets/logins.py):
a `#` outside quotes starts a comment wherever it is, quotes and escapes are taken as
mysys/my_default.c takes them, and a file others may write to is ignored, as the
clients ignore it ("Warning: World-writable config file '...' is ignored").

The client itself is the oracle: `mariadb --print-defaults` prints what it read. Where
it is not installed the oracle tests fail (or skip: see tests/services.unavailable).
Every test has its own empty HOME (conftest.user_home), so its ~/.my.cnf is its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.config.models import TargetConfig
from aishell.targets.logins import MY_CNF_GROUPS, read_option_groups, resolve_login
from tests.helpers import use_target
from tests.services import unavailable

HANG = 60  # seconds: a hang detector, never a timing assertion


def octal(mode: int) -> str:
    return f"{mode:04o}"


# An option file's [client] lines, and the password the mariadb client reads from them
# (None: no password), as `mariadb --print-defaults` showed them (MariaDB 10.11).
LINES = [
    ("password=ab#cd", "ab"),
    ("password=ab #cd", "ab"),
    ("password=ab\t#cd", "ab"),
    ("password = ab # c", "ab"),
    ("password=#ab", ""),
    ('password="ab#cd"', "ab#cd"),
    ("password='ab#cd'", "ab#cd"),
    ('password="ab\'#cd"', "ab'#cd"),
    ('password=ab"c#d"', 'ab"c#d"'),
    ("password=a'b#c", "a'b#c"),
    ('password=a"#"b#c', 'a"#"b'),
    ('password="ab" #c', "ab"),
    ('password="ab" cd', '"ab" cd'),
    ('password="ab#cd', '"ab#cd'),
    ('password="a\\"#b"', 'a"#b'),
    ("password='a\\'#b'", "a'#b"),
    ("password=a\\#b", "a\\"),
    ('password="a\\\\"#b"', "a\\"),
    ("password=a\\sb", "a b"),
    ("password=a\\xb", "a\\xb"),
    ("password=a\\tb\\nc", "a\tb\nc"),
    ("password=ab\\", "ab\\"),
    ("password=  spaced value  ", "spaced value"),
    ('password="  padded  "', "  padded  "),
    ("password  =  'x y' # z", "x y"),
    ('password=""', ""),
    ("password=ab;cd", "ab;cd"),
    ("password=ab ;cd", "ab ;cd"),
    ("password=ab\r", "ab"),
    ("#password=ab", None),
    ("  # password=ab", None),
    (";password=ab", None),
]
# Whole files: group lines and which line wins.
FILES = [
    ("[client] # a comment\npassword=g\n", "g"),
    ("[ client]\npassword=g\n", None),
    ("[CLIENT ]\npassword=g\n", "g"),
    ("[client]\npassword=first\npassword=second\n", "second"),
    ("[client]\npassword=a\n[mysqldump]\npassword=b\n", "a"),
]
CASES = [(f"[client]\n{line}\n", want) for line, want in LINES] + FILES


def client() -> str:
    found = shutil.which("mariadb")
    if found is None:
        unavailable("the MariaDB client `mariadb` is not on PATH (apt-get install mariadb-client)")
    return found


def client_password(args: list[str], env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The password the mariadb client reads (the last --password= it would be started
    with; None if none) and what it said on stderr."""
    done = subprocess.run(
        [client(), *args, "--print-defaults"], capture_output=True, text=True, env=env, timeout=HANG
    )
    assert done.returncode == 0, done.stderr
    header, _, started = done.stdout.partition("\n")
    assert header.endswith("would have been started with the following arguments:"), header
    # printf("%s ") per argument, then a line break.
    started = started.removesuffix("\n").removesuffix(" ")
    if "--password=" not in started:
        return None, done.stderr
    return started.rsplit("--password=", 1)[1], done.stderr


def option_file(folder: Path, content: str, mode: int = 0o600) -> Path:
    path = folder / ".my.cnf"
    path.write_text(content)
    path.chmod(mode)
    return path


def our_password(path: Path) -> str | None:
    return read_option_groups(path, MY_CNF_GROUPS).get("password")


@pytest.mark.parametrize(("content", "want"), CASES)
def test_an_option_file_is_read_as_the_mariadb_client_reads_it(content, want, tmp_path):
    assert our_password(option_file(tmp_path, content)) == want


@pytest.mark.parametrize(("content", "want"), CASES)
def test_the_mariadb_client_reads_each_case_as_aishell_does(content, want, tmp_path):
    path = option_file(tmp_path, content)
    theirs, _ = client_password([f"--defaults-file={path}"])
    assert our_password(path) == theirs


def mysql_login(monkeypatch: pytest.MonkeyPatch) -> tuple[str | None, str | None, str]:
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    url = "mysql+pymysql://127.0.0.1/shop"
    login = resolve_login(make_url(url), TargetConfig(url=url), "db")
    return login.password, login.user, login.password_from


@pytest.mark.parametrize("mode", [0o666, 0o622, 0o602, 0o646], ids=octal)
def test_a_world_writable_my_cnf_is_ignored_and_said_so(mode, user_home, monkeypatch):
    option_file(user_home, "[client]\nuser=someone\npassword=planted\nport=3307\n", mode)
    password, user, source = mysql_login(monkeypatch)
    assert (password, user) == (None, None)
    assert source == (
        f"none (~/.my.cnf is mode {mode:04o}, world-writable: ignored, as the clients "
        "ignore it; chmod o-w ~/.my.cnf)"
    )
    monkeypatch.setenv("MYSQL_PWD", "from-env")
    url = "mysql+pymysql://127.0.0.1/shop"
    login = resolve_login(make_url(url), TargetConfig(url=url), "db")
    assert login.password == "from-env"
    assert login.password_from.startswith(f"MYSQL_PWD (~/.my.cnf is mode {mode:04o}, ")


@pytest.mark.parametrize("mode", [0o600, 0o620, 0o644, 0o660], ids=octal)
def test_a_my_cnf_others_cannot_write_is_read(mode, user_home, monkeypatch):
    option_file(user_home, "[client]\nuser=someone\npassword=kept\n", mode)
    assert mysql_login(monkeypatch) == ("kept", "someone", "~/.my.cnf [client]")


@pytest.mark.parametrize("mode", [0o666, 0o602, 0o620, 0o644, 0o600], ids=octal)
def test_the_mariadb_client_ignores_the_same_my_cnf_as_aishell(mode, user_home, monkeypatch):
    """The client's own rule, seen through its HOME: it reads ~/.my.cnf exactly when
    aishell does, and warns when it does not."""
    marker = f"pw{uuid.uuid4().hex[:8]}"
    path = option_file(user_home, f"[client]\npassword={marker}\n", mode)
    theirs, said = client_password([], env=dict(os.environ, HOME=str(user_home)))
    ours, _, _ = mysql_login(monkeypatch)
    assert (theirs == marker) == (ours == marker)
    ignored = f"Warning: World-writable config file '{path}' is ignored" in said
    assert ignored == (ours is None)


def test_doctor_logs_in_past_a_planted_my_cnf_and_says_it_was_ignored(
    mysql_user, home, user_home, monkeypatch
):
    """A world-writable ~/.my.cnf with a wrong password: the clients ignore it and log
    in with MYSQL_PWD, and so does aishell; doctor says where the password came from
    and that the file was ignored."""
    user, password, url = mysql_user
    option_file(user_home, "[client]\npassword=planted\n", 0o666)
    monkeypatch.setenv("MYSQL_PWD", password)
    use_target(home, url)
    done = CliRunner().invoke(cli, ["doctor", "--target", "db", "--json"])
    found = json.loads(done.stdout)["targets"][0]
    assert found["reachable"], found["problems"]
    said = (
        "MYSQL_PWD (~/.my.cnf is mode 0666, world-writable: ignored, as the clients ignore "
        "it; chmod o-w ~/.my.cnf)"
    )
    assert found["login"]["user"] == user
    assert found["login"]["password_from"] == said
    assert all(c["logged_in"] for c in found["client_logins"]), found["client_logins"]
    shown = CliRunner().invoke(cli, ["doctor", "--target", "db"]).stdout
    assert f"password from {said}" in shown


def test_a_login_refused_after_an_ignored_my_cnf_says_so(mysql_user, home, user_home, monkeypatch):
    """The password is in a world-writable ~/.my.cnf, which the clients and aishell
    ignore: the server refuses a login without one, and the line that says so tells
    where the password came from (none) and why the file was not read."""
    _user, password, url = mysql_user
    option_file(user_home, f"[client]\npassword={password}\n", 0o666)
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    use_target(home, url)
    done = CliRunner().invoke(cli, ["targets", "check", "db"])
    assert done.exit_code == 1, done.output
    assert "Access denied" in done.output
    assert (
        "; password from none (~/.my.cnf is mode 0666, world-writable: ignored, as the "
        "clients ignore it; chmod o-w ~/.my.cnf)" in done.output
    ), done.output
    assert password not in done.output
