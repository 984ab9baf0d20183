"""No password is ever written to state, logs, plans or reports, nor put on a command
line: every command is run for real against a role (PostgreSQL) and a user (MariaDB) of
this test's own with a password of awkward characters, given both ways aishell takes it
(in the URL, and through password_env), while every process of the run is watched.

The shared PostgreSQL trusts every login from 127.0.0.1, so there a password can only be
shown to travel, not to be checked; MariaDB checks it (a wrong one is refused), sent as
UTF-8 bytes by aishell as by the clients.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import closed_port
from tests.services import MYSQL_ADMIN, PG_ADMIN, admin_engine

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

TIMEOUT = 300  # a hang detector for one command, far above its few seconds
ENV_NAME = "AISHELL_AUDIT_PW"
CLIENT_PROGRAMS = {"pg_dump", "pg_restore", "psql", "mariadb", "mariadb-dump", "mysql", "mysqldump"}


def awkward_password() -> str:
    """Beyond latin-1 on both: PyMySQL's own encoding of a password would refuse it."""
    return f"S3cr3t-{uuid.uuid4().hex} @:/%'é☃"


def spellings(password: str) -> list[bytes]:
    """Every way the password could be written down: as it is, URL-quoted, form-quoted."""
    return [s.encode() for s in {password, quote(password, safe=""), quote_plus(password)}]


@contextmanager
def pg_login(password: str) -> Iterator[str]:
    """A role of this test's own with `password` and a database it owns, with rows
    to purge; yields the URL without the password. Both are dropped afterwards."""
    name = f"aishell_pw_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    try:
        with admin.connect() as conn:
            # PostgreSQL binds no value in CREATE ROLE: the literal, quoted, through the
            # driver itself (no placeholder parsing of the password's % or :).
            literal = "'" + password.replace("'", "''") + "'"
            raw = conn.connection.driver_connection
            raw.execute(f'CREATE ROLE "{name}" LOGIN CREATEDB PASSWORD {literal}')  # type: ignore[union-attr]
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{name}"'))
        url = make_url(PG_ADMIN).set(username=name, database=name)
        try:
            with admin_engine(
                url.set(username="postgres").render_as_string(False), "PG"
            ).begin() as c:
                c.execute(text(f'SET ROLE "{name}"'))
                _fill(c, "now() - interval '100 days'", "generate_series(1, 500) AS s(i)")
                c.execute(text("ANALYZE"))  # a plan's row counts, settled before it is made
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@contextmanager
def my_login(password: str) -> Iterator[str]:
    """A MariaDB user of this test's own with `password`, a database of its own (and the
    scratch databases a validation makes); yields the URL without the password."""
    name = f"aishell_pw_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(MYSQL_ADMIN, "MariaDB")
    user = f"'{name}'@'%'"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
            conn.execute(text(f"CREATE USER {user} IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(text(f"GRANT ALL ON `{name}`.* TO {user}"))
            conn.execute(text(f"GRANT ALL ON `aishell\\_verify\\_%`.* TO {user}"))
            conn.execute(text(f"USE `{name}`"))
            _fill(conn, "now() - interval 100 day", "(SELECT seq AS i FROM seq_1_to_500) AS s")
        try:
            url = make_url(MYSQL_ADMIN).set(username=name, database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                conn.execute(text(f"DROP USER IF EXISTS {user}"))
    finally:
        admin.dispose()


def _fill(conn: object, old: str, numbers: str) -> None:
    """app_logs with 50 of its 500 rows old enough to purge, and a table to maintain;
    `numbers` is the dialect's rows 1..500 as `i`, so each table is one INSERT."""
    run = conn.execute  # type: ignore[attr-defined]
    run(text("CREATE TABLE app_logs (id INTEGER PRIMARY KEY, created_at TIMESTAMP, msg TEXT)"))
    run(text("CREATE TABLE t (a INTEGER PRIMARY KEY)"))
    when = f"CASE WHEN i <= 50 THEN {old} ELSE now() END"
    run(text(f"INSERT INTO app_logs SELECT i, {when}, 'x' FROM {numbers}"))
    run(text(f"INSERT INTO t SELECT i FROM {numbers}"))


class Watch:
    """Every process of this home's commands, seen while they run: a password on any
    command line, or in a client program's environment, is a leak. The client programs
    are started through wrappers first on PATH that write down their command line and
    environment before they become the program: a program that lives a few milliseconds
    is seen however busy the machine, where a look at /proc could miss it."""

    def __init__(self, home: Path, password: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mark = f"AISHELL_HOME={home}".encode()
        self.secrets = spellings(password)
        self.leaks: set[str] = set()
        self.clients: set[str] = set()
        # Outside the home, whose files are searched for the password.
        self._base = Path(tempfile.mkdtemp(prefix="aishell-clients-"))
        self._records = self._base / "records"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        wrappers = self._wrappers(self._base / "bin")
        monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")

    def _wrappers(self, folder: Path) -> Path:
        folder.mkdir()
        self._records.mkdir()
        for program in CLIENT_PROGRAMS:
            real = shutil.which(program)
            if real is None:
                continue
            wrapper = folder / program
            wrapper.write_text(
                "#!/bin/sh\n"
                f'printf "%s\\0" "$0" "$@" > "{self._records}/{program}.$$.argv"\n'
                f'env -0 > "{self._records}/{program}.$$.env"\n'
                f'exec "{real}" "$@"\n'
            )
            wrapper.chmod(0o700)
        return folder

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for record in self._records.glob("*.env"):
            program = record.name.split(".")[0]
            self.clients.add(program)
            argv = record.with_suffix(".argv").read_bytes()
            self._judge(program, argv.split(b"\0"), record.read_bytes())
        shutil.rmtree(self._base)

    def _judge(self, program: str, argv: list[bytes], environ: bytes) -> None:
        if any(s in b" ".join(argv) for s in self.secrets):
            self.leaks.add(f"command line of {program}")
        if program in CLIENT_PROGRAMS:
            for variable in environ.split(b"\0"):
                if any(s in variable for s in self.secrets):
                    self.leaks.add(f"environment of {program}: {variable.split(b'=')[0]!r}")

    def _poll(self) -> None:
        """Each pass looks at the processes new since the last pass, and again at those
        it keeps watching: the marked ones (an exec may change their command line) and
        this process's own children (a command between fork and exec does not carry
        the mark yet). Any other process it has seen cannot come to carry the mark:
        /proc/PID/environ changes only at an exec, and only a marked process's child
        (marked itself from its fork) or this process's starts one with AISHELL_HOME."""
        me = os.getpid()
        listed: set[str] = set()
        watched: set[str] = set()
        while not self._stop.is_set():
            now = {pid for pid in os.listdir("/proc") if pid.isdigit()}
            for pid in (now - listed) | (watched & now):
                if self._look(Path("/proc", pid), me):
                    watched.add(pid)
                else:
                    watched.discard(pid)
            listed = now
            time.sleep(0.05)  # aishell lives long: the client programs have wrappers

    def _look(self, proc: Path, me: int) -> bool:
        """Judge the process if it carries the mark; whether to look at it again."""
        try:
            environ = (proc / "environ").read_bytes()
            if self.mark not in environ.split(b"\0"):
                # The parent's pid is the second field after the command's name.
                return (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[1] == b"%d" % me
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False  # gone
        self._judge(os.path.basename(argv[0].decode(errors="replace")), argv, environ)
        return True


def aishell(*argv: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "aishell", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=os.environ.copy(),
    )
    return done.returncode, done.stdout + done.stderr


def in_process(*argv: str) -> tuple[int, str]:
    """A command run in this process, where its own process adds nothing to what is
    watched (one of its kind runs as a process too, or it starts no program): its exit
    code and output, with the traceback of whatever it raised, as a process prints it."""
    result = CliRunner().invoke(cli, list(argv))
    said = result.output
    if result.exc_info is not None and not isinstance(result.exc_info[1], SystemExit):
        said += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, said


def set_targets(home: Path, targets: dict[str, dict[str, str]]) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"] = {n: {"environment": "test", **t} for n, t in targets.items()}
    data["default_target"] = next(iter(targets))
    path.write_text(yaml.safe_dump(data))


def with_password(url: str, password: str | None, **changes: object) -> str:
    return make_url(url).set(password=password, **changes).render_as_string(False)


def commands_of(name: str, out: Path) -> list[list[str]]:
    """What a DBA does with one target, --json and not."""
    plan = str(out / f"plan-{name}.json")
    cleanup = ["run", "log-cleanup", "--table", "app_logs", "--retention-days", "30", "--yes"]
    return [
        ["targets", "check", name, "--json"],
        ["plan", "maintenance", "--type", "full", "--target", name, "--out", plan],
        ["apply", plan, "--yes"],  # before anything else changes what the plan assumed
        ["run", "maintenance", "--type", "full", "--dry-run", "--target", name],
        ["run", "maintenance", "--type", "full", "--yes", "--target", name, "--json"],
        ["run", "backup", "--yes", "--target", name],  # dump, validation, restore
        ["run", "backup", "--type", "drill", "--yes", "--target", name, "--json"],
        [*cleanup, "--target", name, "--json"],
        [*cleanup, "--dry-run", "--target", name],
    ]


def env_commands(name: str) -> list[list[str]]:
    """The commands that log in through password_env: a plan's and a run's sessions, a
    backup's client programs and its validation's scratch database."""
    return [
        ["targets", "check", name, "--json"],
        ["run", "maintenance", "--type", "full", "--yes", "--target", name, "--json"],
        ["run", "backup", "--yes", "--target", name],
    ]


def failures(url: str, password: str) -> dict[str, dict[str, str]]:
    """Targets that fail: the server down, a wrong password; each keeps the password in
    its URL, where an error echoing a DSN would show it."""
    return {
        "down": {"url": with_password(url, password, port=closed_port())},
        "wrong": {"url": with_password(url, password + "x")},
    }


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_no_command_writes_or_passes_on_the_password(
    dialect: str, home: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    password = awkward_password()
    monkeypatch.setenv(ENV_NAME, password)
    out = tmp_path_factory.mktemp("out")
    login = pg_login if dialect == "postgresql" else my_login
    outputs: list[str] = []
    with login(password) as url, Watch(home, password, monkeypatch) as watch:
        targets = {
            "in_url": {"url": with_password(url, password)},
            "in_env": {"url": url, "password_env": ENV_NAME},
        }
        set_targets(home, targets)
        # Every command with the password in the URL; through the variable, those that
        # log in anew each way (aishell's own sessions, the client programs').
        for argv in [*commands_of("in_url", out), *env_commands("in_env")]:
            code, said = aishell(*argv)
            assert code == 0, (argv, said)
            outputs.append(said)
        # The text report in this process: its client programs are watched as well, and
        # the failures' `doctor` below is a text report's process.
        outputs += [in_process("doctor")[1], aishell("doctor", "--json")[1]]
        # The failures, the variable unset as well (a failure of its own).
        set_targets(home, {**targets, **failures(url, password)})
        monkeypatch.delenv(ENV_NAME)
        for argv in (
            ["run", "log-cleanup", "--table", "no_such_table", "--retention-days", "1", "--yes"],
            ["run", "maintenance", "--type", "quick", "--dry-run", "--target", "down"],
            ["run", "backup", "--yes", "--target", "down", "--json"],
            ["targets", "check", "wrong", "--json"],
            ["run", "backup", "--yes", "--target", "wrong"],
            ["doctor"],
        ):
            outputs.append(aishell(*argv)[1])
        # The views of the config and the state store: they log in nowhere and start no
        # program, so their own process adds nothing to what is watched.
        for argv in (
            ["targets", "list", "--json"],
            ["fleet", "status", "--json"],
            ["backups", "list", "--json"],
            ["metrics"],
        ):
            outputs.append(in_process(*argv)[1])
        outputs.append(aishell("runs", "list", "--json", "--limit", "500")[1])
        first, *rest = json.loads(outputs[-1])["runs"]
        # Every run shown; a process shows one, and the text view (what the JSON holds).
        outputs.append(aishell("runs", "show", first["run_id"], "--json")[1])
        outputs += [in_process("runs", "show", run["run_id"], "--json")[1] for run in rest]
        outputs.append(aishell("runs", "show", first["run_id"])[1])
    programs = {"pg_dump", "pg_restore"} if dialect == "postgresql" else {"mariadb-dump", "mariadb"}
    assert watch.clients >= programs, watch.clients
    assert sum("completed" in o for o in outputs) > 10, outputs
    assert not watch.leaks, sorted(watch.leaks)
    secrets = spellings(password)
    shown = [o for o in outputs if any(s in o.encode() for s in secrets)]
    assert not shown, shown
    config = home / "config" / "aishell.yaml"  # where the test itself put it
    files = [p for p in (*home.rglob("*"), *out.rglob("*")) if p.is_file() and p != config]
    assert home / "state.db" in files and any(p.name.endswith(".manifest.json") for p in files)
    assert not [str(p) for p in files if any(s in p.read_bytes() for s in secrets)]
    assert not _rows_with(home / "state.db", secrets)


def _rows_with(store: Path, secrets: list[bytes]) -> list[str]:
    """Every row of every table of the store holding the password, decoded as SQLite
    holds it (a value may be compressed or encoded: read through SQLite, not the file)."""
    conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        found = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                held = repr(row).encode()
                if any(s in held or s.decode() in repr(row) for s in secrets):
                    found.append(f"{table}: {repr(row)[:200]}")
        return found
    finally:
        conn.close()


def _locations(secret: str) -> list[str]:
    """Where a target is, as a DBA might type it with the password in it."""
    return [
        f"host=127.0.0.1 dbname=db user=app password='{secret}",  # a DSN libpq cannot read
        f"app:{secret}@127.0.0.1/shop",  # no scheme
        f"postgresql://app:{secret}@127.0.0.1:notaport/shop",
        f"postgresql://app@127.0.0.1/shop?password={secret}",
        f"mysql://app@127.0.0.1/shop?passwd={secret}",
        f"host=127.0.0.1 dbname=shop user=app sslpassword={secret}",
        f"mysql://app@127.0.0.1/shop?ssl_key_password={secret}",
    ]


@pytest.mark.parametrize("at", range(len(_locations(""))))
def test_targets_add_neither_echoes_nor_keeps_a_password(home: Path, at: int) -> None:
    """A password given to `targets add` in any form is refused in one line that does not
    repeat it, and the config file is left as it was."""
    secret = f"S3cr3t-{uuid.uuid4().hex}"
    location = _locations(secret)[at]
    config = home / "config" / "aishell.yaml"
    before = config.read_bytes()
    for extra in ([], ["--json"]):
        code, said = in_process("targets", "add", "shop", location, "--no-check", *extra)
        assert code == 2, said
        assert secret not in said, said
        assert "internal error" not in said, said
    assert config.read_bytes() == before


def test_a_password_in_the_urls_query_is_never_shown(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq takes `?password=` from a URL (as PyMySQL takes `?passwd=`): it is a password
    like the URL's own, hidden wherever the target's URL is shown or kept."""
    password = awkward_password()
    with pg_login(password) as url:
        query = {"password": password, "sslmode": "disable"}
        with_query = make_url(url).update_query_dict(query).render_as_string(False)
        set_targets(home, {"db": {"url": with_query}})
        # The state store on the same server, its password in the query too.
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        data["state"] = {"url": with_query}
        path.write_text(yaml.safe_dump(data))
        code, said = aishell("run", "maintenance", "--type", "quick", "--dry-run")
        assert code == 0, said
        outputs = [said]
        for argv in (["targets", "list"], ["targets", "list", "--json"], ["doctor", "--json"]):
            outputs.append(in_process(*argv)[1])
    listed = json.loads(outputs[2])["targets"]
    assert "sslmode=disable" in listed[0]["location"], listed
    secrets = spellings(password)
    assert not [o for o in outputs if any(s in o.encode() for s in secrets)], outputs
    config = home / "config" / "aishell.yaml"
    files = [p for p in home.rglob("*") if p.is_file() and p != config]
    assert home / "cache" / "config.json" in files
    assert not [str(p) for p in files if any(s in p.read_bytes() for s in secrets)]


def test_a_client_program_gets_no_other_targets_password(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = awkward_password()
    monkeypatch.setenv(ENV_NAME, password)
    with my_login(password) as url, Watch(home, password, monkeypatch) as watch:
        other = with_password(url, "not-" + uuid.uuid4().hex)
        set_targets(home, {"other": {"url": other}, "db": {"url": url, "password_env": ENV_NAME}})
        aishell("doctor", "--json")  # starts mariadb-dump and mariadb for each target
    assert "mariadb" in watch.clients
    assert not watch.leaks, sorted(watch.leaks)
