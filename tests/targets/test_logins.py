"""One login for aishell's connection and the client programs it starts, found as the
clients find it (aishell/targets/logins.py, aishell/targets/clientlogin.py).

Every test has its own empty HOME (conftest.user_home): the ~/.my.cnf, ~/.pgpass and
~/.pg_service.conf written here are the test's own. MariaDB logins are real users with
a password, made and dropped by the test; the shared PostgreSQL trusts every login, so
there a password can only be shown to reach the right place, not to be checked.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.handlers.backup.processes import run_tool, server_env
from aishell.targets.clientlogin import client_env, client_login
from aishell.targets.engines import open_target
from aishell.tool.context import ToolContext
from tests.faultproxy import Silent
from tests.helpers import use_target
from tests.services import MYSQL_ADMIN, engine


def doctor() -> dict[str, Any]:
    done = CliRunner().invoke(cli, ["doctor", "--target", "db", "--json"])
    return dict(json.loads(done.stdout)["targets"][0])


def populate(url: str) -> None:
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))"))
        for i in range(50):
            conn.execute(text("INSERT INTO a VALUES (:i, :v)"), {"i": i, "v": f"value {i}"})


def my_cnf(home: Path, text_: str) -> None:
    path = home / ".my.cnf"
    path.write_text(text_)
    path.chmod(0o600)


def quoted(password: str) -> str:
    return '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("source", ["~/.my.cnf [client]", "MYSQL_PWD"])
def test_mariadb_password_from_the_clients_sources_serves_maintenance_and_backups(
    source, mysql_user, mysql_url, home, user_home, monkeypatch
):
    user, password, url = mysql_user
    populate(mysql_url)
    # A [mysqldump] group with a wrong password: a dump reading its own defaults would
    # log in with it and fail; the clients get aishell's login alone.
    wrong = "[mysqldump]\npassword=wrong\n[mariadb-dump]\npassword=wrong\n[mysql]\npassword=wrong\n"
    if source == "MYSQL_PWD":
        monkeypatch.setenv("MYSQL_PWD", password)
        my_cnf(user_home, wrong)
    else:
        my_cnf(user_home, f"[client]\npassword={quoted(password)}\n{wrong}")
    config = use_target(home, url)
    maintenance = commands.run_job(config, "maintenance", {"type": "quick"})
    assert maintenance.status == "completed", maintenance.error
    backup = commands.run_job(config, "backup", {"type": "full"})
    assert backup.status == "completed", backup.error
    assert backup.steps[2].output["tables_compared"] == 1
    found = doctor()
    assert found["login"]["user"] == user
    assert found["login"]["password_from"] == source
    assert {c["program"]: c["logged_in"] for c in found["client_logins"]} == {
        "mariadb-dump": True,
        "mariadb": True,
    }
    assert password not in json.dumps(found)


def test_doctor_reports_a_client_program_that_cannot_log_in(mysql_url, home, user_home):
    """A password the driver logs in with but no client's login file can carry (a line
    break): doctor says so per program, and a backup stops with that sentence."""
    user = f"aishell_l{uuid.uuid4().hex[:8]}"
    password = "two\nlines"
    database = make_url(mysql_url).database
    admin = engine(MYSQL_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": password})
        conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    try:
        populate(mysql_url)
        url = make_url(mysql_url).set(username=user, password=password)
        config = use_target(home, url.render_as_string(hide_password=False))
        found = doctor()
        assert found["reachable"] and found["login"]["password_from"] == "URL"
        clients = {c["program"]: c for c in found["client_logins"]}
        assert not clients["mariadb-dump"]["logged_in"]
        assert "line break" in clients["mariadb-dump"]["error"]
        problems = [p["problem"] for p in found["problems"]]
        assert any(p.startswith("mariadb-dump cannot log in") for p in problems)
        backup = commands.run_job(config, "backup", {"type": "full"})
        assert backup.status == "failed" and "line break" in str(backup.error)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def test_a_wrong_password_env_is_reported_and_no_client_file_is_read(
    mysql_user, home, user_home, monkeypatch
):
    """password_env comes before ~/.my.cnf, as a command line's password comes before an
    option file's: a wrong one fails though ~/.my.cnf holds the right one."""
    _user, password, url = mysql_user
    my_cnf(user_home, f"[client]\npassword={quoted(password)}\n")
    monkeypatch.setenv("AISHELL_TEST_LOGIN_PW", "wrong")
    path = home / "config" / "aishell.yaml"
    use_target(home, url)
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["password_env"] = "AISHELL_TEST_LOGIN_PW"
    path.write_text(yaml.safe_dump(data))
    found = doctor()
    assert not found["reachable"]
    assert "Access denied" in found["problems"][0]["problem"]


def watched(handle: Any, argv: list[str]) -> dict[str, bytes]:
    """Run argv as a backup runs a client program; its command line and environment
    as /proc shows them while it runs (looked at every quarter second: the programs
    given here run two seconds, so a busy machine still sees them)."""
    seen: dict[str, bytes] = {}

    def watch(pid: int) -> None:
        for what in ("cmdline", "environ"):
            with contextlib.suppress(OSError):  # ended between two looks
                shown = Path(f"/proc/{pid}/{what}").read_bytes()
                # A program that has just ended (a zombie) shows both empty: a look
                # then keeps what the looks while it ran saw.
                if shown:
                    seen[what] = shown

    with handle.connect() as conn:
        ctx = ToolContext(conn=conn, dialect=handle.dialect, target=handle.name)
        run_tool(argv, server_env(conn.engine.url), ctx, watch=watch)
    return seen


def test_a_mariadb_client_gets_the_login_in_a_private_file_never_on_its_command_line(
    mysql_user, home, user_home
):
    _user, password, url = mysql_user
    my_cnf(user_home, f"[client]\npassword={quoted(password)}\n")
    config = use_target(home, url)
    handle = open_target(config, "db")
    try:
        seen = watched(handle, ["mariadb", "-e", "SELECT SLEEP(2)"])
    finally:
        handle.close()
    argv = seen["cmdline"].split(b"\0")
    assert argv[1].startswith(b"--defaults-file=")  # the first option: nothing else read
    private = Path(argv[1].split(b"=", 1)[1].decode())
    assert not private.exists()  # removed when the program ended
    assert password.encode() not in seen["cmdline"] and password.encode() not in seen["environ"]
    assert b"MYSQL_PWD=" not in seen["environ"]


def test_a_pgpass_password_reaches_pg_programs_through_their_own_passfile(pg_url, home, user_home):
    secret = f"pg:{uuid.uuid4().hex[:8]}\\x"
    pgpass = user_home / ".pgpass"
    escaped = secret.replace("\\", "\\\\").replace(":", "\\:")
    pgpass.write_text(f"# aishell test\n127.0.0.1:5432:*:postgres:{escaped}\n")
    pgpass.chmod(0o600)
    config = use_target(home, pg_url)
    handle = open_target(config, "db")
    try:
        assert handle.login is not None
        assert handle.login.password_from == "~/.pgpass"
        assert handle.engine.url.password == secret
        seen = watched(handle, ["psql", "-c", "SELECT pg_sleep(2)"])
    finally:
        handle.close()
    env = dict(item.split(b"=", 1) for item in seen["environ"].split(b"\0") if b"=" in item)
    assert b"PGPASSWORD" not in env and secret.encode() not in seen["cmdline"]
    assert secret.encode() not in seen["environ"]
    assert Path(env[b"PGPASSFILE"].decode()).parent.name.startswith("aishell-login-")
    assert env[b"PGSERVICE"] == b"aishell_login" and b"PGCONNECT_TIMEOUT" in env


def test_a_password_in_a_postgresql_urls_query_is_the_one_named_and_used(
    pg_url, home, user_home, monkeypatch
):
    """The query's password is the one the driver takes (SQLAlchemy lets it override
    the user part's, the environment's and ~/.pgpass's): doctor names the URL as its
    source, and the session and the client programs use that one."""
    in_query = f"q-{uuid.uuid4().hex[:8]}"
    pgpass = user_home / ".pgpass"
    pgpass.write_text("127.0.0.1:5432:*:postgres:from-pgpass\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("FIXQUERY_PASSWORD", "from-env")
    url = make_url(pg_url).update_query_dict({"password": in_query})
    use_target(home, url.render_as_string(hide_password=False))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["password_env"] = "FIXQUERY_PASSWORD"
    path.write_text(yaml.safe_dump(data))
    handle = open_target(load_config(home=home), "db")
    try:
        assert handle.login is not None and handle.login.password_from == "URL"
        connects = handle.engine.dialect.create_connect_args(handle.engine.url)[1]
        assert connects["password"] == in_query
        assert "password" not in handle.engine.url.query
        seen = watched(handle, ["psql", "-c", "SELECT pg_sleep(2)"])
    finally:
        handle.close()
    env = dict(item.split(b"=", 1) for item in seen["environ"].split(b"\0") if b"=" in item)
    passfile = Path(env[b"PGPASSFILE"].decode())
    assert passfile.parent.name.startswith("aishell-login-")
    assert in_query.encode() not in seen["cmdline"] and in_query.encode() not in seen["environ"]
    assert doctor()["login"]["password_from"] == "URL"


def test_a_world_readable_pgpass_is_ignored_as_libpq_ignores_it(pg_url, home, user_home):
    pgpass = user_home / ".pgpass"
    pgpass.write_text("*:*:*:*:secret\n")
    pgpass.chmod(0o644)
    handle = open_target(use_target(home, pg_url), "db")
    try:
        assert handle.login is not None and handle.login.password is None
        assert handle.login.password_from.startswith("none (~/.pgpass is mode 0644, ")
    finally:
        handle.close()


@pytest.mark.parametrize("named_by", ["url", "PGSERVICE"])
def test_a_pg_service_serves_the_driver_and_pg_dump_alike(
    named_by, pg_url, home, user_home, monkeypatch
):
    database = make_url(pg_url).database
    service = f"svc_{uuid.uuid4().hex[:6]}"
    (user_home / ".pg_service.conf").write_text(
        f"[other]\nhost=192.0.2.1\n[{service}]\nhost=127.0.0.1\nport=5432\n"
        f"dbname={database}\nuser=postgres\napplication_name=aishell_svc\n"
    )
    populate(pg_url)
    if named_by == "url":
        url = f"postgresql+psycopg:///?service={service}"
    else:
        monkeypatch.setenv("PGSERVICE", service)
        url = "postgresql+psycopg://"
    config = use_target(home, url)
    backup = commands.run_job(config, "backup", {"type": "full"})
    assert backup.status == "completed", backup.error
    assert backup.steps[2].output["tables_compared"] == 1
    # The session name a backup watches its client by wins over the service's.
    handle = open_target(config, "db")
    try:
        with handle.connect() as conn:
            ctx = ToolContext(conn=conn, dialect="postgresql", target="db")
            env = server_env(conn.engine.url) | {"PGAPPNAME": "aishell_watched"}
            shown = run_tool(["psql", "-At", "-c", "SHOW application_name"], env, ctx)
    finally:
        handle.close()
    assert shown.stdout == b"aishell_watched\n"
    found = doctor()
    assert found["login"] | {"password_from": None} == {
        "user": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "database": database,
        "service": service,
        "password_from": None,
    }
    logged_in = {c["program"]: c["logged_in"] for c in found["client_logins"]}
    assert logged_in == {"pg_dump": True, "pg_restore": True}, found["client_logins"]


def test_a_service_that_is_nowhere_is_one_line(home, user_home):
    use_target(home, "postgresql+psycopg:///?service=aishell_no_such_service")
    found = doctor()
    assert not found["reachable"]
    assert "service 'aishell_no_such_service' is in no service file" in str(found["problems"])


HANG = 60  # seconds: a hang detector, never a timing assertion


_MY = "mysql+pymysql://root@127.0.0.1:{port}/test"
_PG = "postgresql+psycopg://postgres@127.0.0.1:{port}/test"
_EMPTY_ARCHIVE = ["pg_dump", "-Fc", "--schema-only", "--exclude-schema=*"]


@pytest.mark.parametrize(
    "argv, url",
    [
        (["mariadb", "-e", "SELECT 1"], _MY),
        (["pg_dump", "--schema-only", "test"], _PG),
        (["pg_restore", "--schema-only", "-d", "test"], _PG),
    ],
)
def test_a_client_program_gives_up_on_a_silent_server_at_the_connect_timeout(argv, url):
    """A server that accepts the connection and never answers: the program stops on its
    own, at the target's connect timeout (2 s here), well before the hang detector.
    (mariadb-dump has no connect timeout: its step's time limit ends it.)"""
    # pg_restore reads its archive before it connects: one of no object, from the
    # real server.
    archive = subprocess.run(
        [*_EMPTY_ARCHIVE, "-h", "127.0.0.1", "-U", "postgres", "test"],
        capture_output=True,
        check=True,
        timeout=HANG,
    ).stdout
    silent = Silent()
    try:
        login = make_url(url.format(port=silent.port))
        with client_login(argv, client_env(), login, 2, 60) as (started, env):
            done = subprocess.run(
                started, env=env, input=archive, capture_output=True, timeout=HANG
            )
    finally:
        silent.close()
    assert done.returncode != 0
    said = done.stderr.decode()
    assert "timeout expired" in said or "handshake" in said, said


def test_the_user_and_password_of_my_cnf_serve_a_url_without_them(mysql_user, home, user_home):
    user, password, url = mysql_user
    my_cnf(user_home, f"[client]\nuser={user}\n[client-server]\npassword={quoted(password)}\n")
    handle = open_target(use_target(home, str(make_url(url).set(username=None))), "db")
    try:
        with handle.connect() as conn:
            current = conn.execute(text("SELECT CURRENT_USER()")).scalar_one()
        seen = run_watched(handle)
    finally:
        handle.close()
    assert current == f"{user}@%"
    assert handle.login is not None
    assert handle.login.password_from == "~/.my.cnf [client-server]"
    assert seen == f"{user}@%"


def run_watched(handle: Any) -> str:
    """CURRENT_USER() as the mariadb client sees it, started as a backup starts it."""
    with handle.connect() as conn:
        ctx = ToolContext(conn=conn, dialect=handle.dialect, target=handle.name)
        argv = ["mariadb", "--batch", "--skip-column-names", "-e", "SELECT CURRENT_USER()"]
        done = run_tool(argv, server_env(conn.engine.url), ctx)
    return done.stdout.decode().strip()


def test_a_postgresql_urls_query_login_serves_the_driver_and_pg_dump_alike(pg_url, home, user_home):
    """Where and as whom to log in given in the URL's query (`?host=...&user=...`, as
    libpq and psycopg take them, a socket folder's usual form) is the login of every
    program too. Before, pg_dump and pg_restore got the OS user and no host: another
    login, over the local socket, to whatever server answered there."""
    given = make_url(pg_url)
    populate(pg_url)
    url = (
        f"postgresql+psycopg:///?host={given.host}&port={given.port}"
        f"&dbname={given.database}&user={given.username}"
    )
    config = use_target(home, url)
    found = doctor()
    assert found["login"] | {"password_from": None} == {
        "user": given.username,
        "host": given.host,
        "port": given.port,
        "database": given.database,
        "service": None,
        "password_from": None,
    }
    logged_in = {c["program"]: c["logged_in"] for c in found["client_logins"]}
    assert logged_in == {"pg_dump": True, "pg_restore": True}, found["client_logins"]
    backup = commands.run_job(config, "backup", {"type": "full"})
    assert backup.status == "completed", backup.error
    assert backup.steps[2].output["tables_compared"] == 1


def test_doctor_says_a_login_without_a_port_uses_the_default(pg_url, home, user_home):
    """A URL without a port logs in at the client's default port: doctor says so,
    instead of a line ending in a bare colon (`postgres@127.0.0.1:`)."""
    given = make_url(pg_url)
    use_target(home, f"postgresql+psycopg://{given.username}@{given.host}/{given.database}")
    done = CliRunner().invoke(cli, ["doctor", "--target", "db"])
    (line,) = [line for line in done.output.splitlines() if line.strip().startswith("login:")]
    assert f"login: {given.username}@{given.host} (default port), password from" in line, line
