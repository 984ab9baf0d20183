"""A saved plan applies only to the database it was made on: one dropped and created again
under the same name, with the same tables, is another database on every engine."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.plan.model import Plan
from aishell.state import signing
from aishell.targets.identity import (
    NO_TABLES,
    birth_time_ns,
    database_identity,
    database_instance,
)
from tests.helpers import use_target
from tests.services import MYSQL_ADMIN, PG_ADMIN, admin_engine, engine

JOB = {"type": "quick", "tables": ["kept"]}


def save(config: Config, out: Path, job: dict[str, Any] | None = None) -> dict[str, Any]:
    commands.plan_job(config, "maintenance", job or JOB, out=out)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def apply_cli(out: Path) -> Any:
    return CliRunner().invoke(cli, ["apply", str(out)])


def refused_line(result: Any) -> str:
    """The one line a refused apply prints; a plan refused is a usage error (exit 2)."""
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return str(lines[0])


def fill(url: str) -> None:
    """The schema every test database has: one table of 30 rows."""
    eng = engine(url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE kept (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
        conn.execute(text("INSERT INTO kept VALUES (:i, 'row')"), [{"i": i} for i in range(30)])
    eng.dispose()


def count(url: str) -> int:
    eng = engine(url)
    with eng.connect() as conn:
        found = int(conn.execute(text("SELECT count(*) FROM kept")).scalar_one())
    eng.dispose()
    return found


class Server:
    """A scratch database of this test's own that it may drop and create again."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.admin_url = PG_ADMIN if dialect == "postgresql" else MYSQL_ADMIN
        self.admin = admin_engine(self.admin_url, dialect)
        self.name = f"aishell_id_{uuid.uuid4().hex[:10]}"
        self.url = make_url(self.admin_url).set(database=self.name).render_as_string(False)

    def create(self) -> None:
        with self.admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(self.name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))

    def drop(self) -> None:
        with self.admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(self.name)
            force = " WITH (FORCE)" if self.dialect == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}{force}"))


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    made = Server(request.param)
    made.create()
    try:
        yield made
    finally:
        made.drop()
        made.admin.dispose()


# --- a database dropped and created again is refused --------------------------------------


def test_a_server_database_created_again_under_its_name_is_refused(
    home: Path, server: Server
) -> None:
    fill(server.url)
    config = use_target(home, server.url)
    out = home / "plan.json"
    data = save(config, out)
    server.drop()
    server.create()
    fill(server.url)
    line = refused_line(apply_cli(out))
    identity = data["target_identity"].split("#")[0]
    if server.dialect == "postgresql":
        # The new database's oid makes another identity.
        assert line.startswith("Error: Target 'db' now points at another database (")
    else:
        assert line == (
            f"Error: Target 'db' reaches a database of the same name ({identity}) that is not "
            "the one the plan was made on: its tables were created since the plan was made "
            "(the database dropped and created again, or a table added, rebuilt or "
            "dropped); make a new plan"
        )
    assert count(server.url) == 30


def test_the_same_server_database_untouched_applies(home: Path, server: Server) -> None:
    fill(server.url)
    config = use_target(home, server.url)
    out = home / "plan.json"
    save(config, out)
    applied = CliRunner().invoke(cli, ["apply", str(out), "--json"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["status"] == "completed"


def test_a_sqlite_file_created_again_at_its_path_is_refused(home: Path) -> None:
    path = home / "same.db"
    make_sqlite(path)
    config = use_target(home, f"sqlite:///{path}")
    out = home / "plan.json"
    data = save(config, out)
    before = path.stat()
    contents = path.read_bytes()
    path.unlink()
    with path.open("xb") as made:
        made.write(contents)
    after = path.stat()
    line = refused_line(apply_cli(out))
    if (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino):
        # The file system gave the new file the old one's inode: only its birth time differs.
        identity = data["target_identity"].split("#")[0]
        assert line == (
            f"Error: Target 'db' reaches a database of the same name ({identity}) that is not "
            "the one the plan was made on: its file was created again since; make a new plan"
        )
    else:
        assert line.startswith("Error: Target 'db' now points at another database (")


def test_a_sqlite_file_created_again_with_its_inode_is_another_instance(
    tmp_path: Path,
) -> None:
    """The case dev:ino cannot tell: a new file that reuses the deleted one's inode."""
    path = tmp_path / "reused.db"
    for _attempt in range(20):
        make_sqlite(path)
        with open_sqlite(path) as conn:
            identity, instance = database_identity(conn), database_instance(conn)
        contents = path.read_bytes()
        path.unlink()
        with path.open("xb") as made:
            made.write(contents)  # the same bytes: the same schema and rows
        with open_sqlite(path) as conn:
            if database_identity(conn) == identity:
                assert database_instance(conn) != instance
                assert instance.startswith("born:")
                return
        path.unlink()
    pytest.fail("the file system never reused an inode in 20 tries; the case is not shown")


def test_the_same_sqlite_file_untouched_and_written_applies(home: Path) -> None:
    path = home / "kept.db"
    make_sqlite(path)
    config = use_target(home, f"sqlite:///{path}")
    out = home / "plan.json"
    save(config, out)
    # Writing rows is not creating the file again.
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO kept VALUES (1000, 'later')")
    applied = CliRunner().invoke(cli, ["apply", str(out), "--json"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["status"] == "completed"


def make_sqlite(path: Path) -> None:
    """A SQLite file at path with the usual schema, written in one go: nothing else made
    between the old file's deletion and this one takes the inode it frees."""
    source = path.with_name(f"template-{uuid.uuid4().hex[:6]}.db")
    with sqlite3.connect(source) as raw:
        raw.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY, note VARCHAR(20))")
        raw.executemany("INSERT INTO kept VALUES (?, 'row')", [(i,) for i in range(30)])
    raw.close()
    contents = source.read_bytes()
    source.unlink()
    with path.open("xb") as made:
        made.write(contents)


@contextmanager
def open_sqlite(path: Path) -> Iterator[Connection]:
    """A connection to the file, closed with its engine's pool: the file is not held open."""
    eng = engine(f"sqlite:///{path}")
    try:
        with eng.connect() as conn:
            yield conn
    finally:
        eng.dispose()


def test_birth_time_is_told_on_this_file_system(tmp_path: Path) -> None:
    first = tmp_path / "a"
    first.write_text("")
    born = birth_time_ns(str(first))
    assert born is not None and abs(born / 1e9 - time.time()) < 60


# --- MariaDB: an account without PROCESS, and a database without tables -------------------


@pytest.fixture
def reader(mysql_url: str) -> Iterator[str]:
    """An account that may only read the scratch database: no PROCESS, no FILE."""
    user = f"aishell_ro_{uuid.uuid4().hex[:8]}"
    database = make_url(mysql_url).database
    admin = admin_engine(MYSQL_ADMIN, "MariaDB")
    with admin.connect() as conn:
        conn.execute(text("CREATE USER :u@'%' IDENTIFIED BY 'ro-pass'"), {"u": user})
        conn.execute(text(f"GRANT SELECT, SHOW VIEW ON `{database}`.* TO :u@'%'"), {"u": user})
    try:
        yield make_url(mysql_url).set(username=user, password="ro-pass").render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP USER IF EXISTS :u@'%'"), {"u": user})
        admin.dispose()


def test_without_process_the_tables_creation_times_name_the_instance(
    home: Path, mysql_url: str, reader: str
) -> None:
    fill(mysql_url)
    with engine(reader).connect() as conn:
        instance = database_instance(conn)
    with engine(mysql_url).connect() as conn:
        assert database_instance(conn).startswith("table-ids:")
    assert instance.startswith("created:")
    config = use_target(home, reader)
    out = home / "plan.json"
    save(config, out)
    admin = engine(mysql_url)
    with admin.begin() as conn:
        conn.execute(text("DROP TABLE kept"))
    admin.dispose()
    # Creation times count whole seconds: the table made again is made in a later one.
    time.sleep(1.1)
    fill(mysql_url)
    line = refused_line(apply_cli(out))
    assert "that is not the one the plan was made on: its tables were created since" in line


def test_an_empty_mysql_database_is_the_same_while_it_stays_empty(
    home: Path, mysql_url: str
) -> None:
    """An empty database has no instance to tell: a plan made on it applies to the database
    of that name while it holds no tables (no step can reach a row), and is refused once it
    holds one."""
    with engine(mysql_url).connect() as conn:
        assert database_instance(conn) == NO_TABLES
    config = use_target(home, mysql_url)
    out = home / "plan.json"
    save(config, out, {"type": "quick"})
    admin = admin_engine(MYSQL_ADMIN, "MariaDB")
    database = make_url(mysql_url).database
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE `{database}`"))
        conn.execute(text(f"CREATE DATABASE `{database}`"))
    admin.dispose()
    applied = CliRunner().invoke(cli, ["apply", str(out), "--json"])
    assert applied.exit_code == 0, applied.output
    fill(mysql_url)
    line = refused_line(apply_cli(out))
    assert line.endswith("it had no tables then and has tables now; make a new plan")


# --- plans saved before the instance was recorded ------------------------------------------


def test_a_plan_without_the_instance_is_refused(home: Path, demo_db: Path) -> None:
    config = use_target(home, f"sqlite:///{demo_db}")
    out = home / "plan.json"
    data = save(config, out, {"type": "quick"})
    identity = data["target_identity"].split("#")[0]
    data["target_identity"] = identity
    body = {k: v for k, v in data.items() if k not in ("plan_hash", "signature")}
    data["plan_hash"] = Plan.from_dict(body).hash
    key = signing.load_key(home)
    assert key is not None
    data["signature"] = signing.sign(key, {k: v for k, v in data.items() if k != "signature"})
    out.write_text(json.dumps(data))
    line = refused_line(apply_cli(out))
    assert line == (
        f"Error: The plan records database {identity} but not which instance of it (a plan "
        "saved before aishell recorded it); make a new plan"
    )
