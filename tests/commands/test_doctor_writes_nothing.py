"""`aishell doctor` only looks: its check that the client programs log in writes nothing
on the target, waits for no lock another session holds, and leaves neither a program nor
a server session behind it (aishell/commands/clientlogins.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from aishell.commands.readiness import target_readiness
from tests.faultproxy import Silent
from tests.helpers import use_target
from tests.services import PG_ADMIN, engine

HANG = 60  # seconds: a hang detector, never a timing assertion
# How long a program whose parent died may take to be gone: the parent-death signal is
# immediate; a program without one waits on its silent server for good.
ORPHAN_GRACE = 10.0
# An extension the doctor's pg_dump lists (CREATE EXTENSION, COMMENT ON EXTENSION).
EXTENSION = "pgstattuple"
_COMMENTS = (
    "SELECT d.objoid::bigint, d.xmin::text, d.description FROM pg_catalog.pg_description d "
    "WHERE d.classoid = 'pg_catalog.pg_extension'::regclass ORDER BY 1"
)


def with_extension(url: str) -> None:
    with engine(url).connect() as conn:
        conn.execute(text(f"CREATE EXTENSION {EXTENSION}"))


def comments(url: str) -> list[tuple[object, ...]]:
    """The extensions' comments, each with the transaction that last wrote it."""
    with engine(url).connect() as conn:
        return [tuple(row) for row in conn.execute(text(_COMMENTS))]


def clients(found: dict[str, Any]) -> dict[str, Any]:
    return {c["program"]: c for c in found["client_logins"]}


def configured(home: Path, url: str, connect_timeout: int = 10) -> None:
    import yaml

    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["connect_timeout_seconds"] = connect_timeout
    path.write_text(yaml.safe_dump(data))


def doctor(home: Path) -> dict[str, Any]:
    from aishell.config.models import load_config

    return target_readiness(load_config(home=home), "db")


def test_doctor_writes_nothing_on_postgresql(home, pg_url):
    with_extension(pg_url)
    configured(home, pg_url)
    before = comments(pg_url)
    found = doctor(home)
    logins = clients(found)
    assert logins["pg_dump"]["logged_in"], logins
    assert logins["pg_restore"]["logged_in"], logins
    # No catalog row rewritten: COMMENT ON EXTENSION would give each a new xmin.
    assert comments(pg_url) == before


@pytest.fixture
def held_comment(pg_url: str) -> Iterator[Connection]:
    """Another session in the middle of COMMENT ON EXTENSION, holding its lock."""
    with_extension(pg_url)
    conn = engine(pg_url).connect().execution_options(isolation_level="READ COMMITTED")
    conn.execute(text(f"COMMENT ON EXTENSION {EXTENSION} IS 'being changed'"))
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def test_doctor_waits_for_no_lock_and_leaves_no_session(home, pg_url, held_comment):
    database = make_url(pg_url).database
    before = comments(pg_url)
    configured(home, pg_url, connect_timeout=1)
    found = doctor(home)
    logins = clients(found)
    assert logins["pg_restore"]["logged_in"], logins
    assert not [p for p in found["problems"] if "cannot log in" in str(p)]
    # No session of a client program is left behind, queued behind the held lock.
    assert left_sessions(database) == []
    held_comment.rollback()
    # Nothing queued behind the lock commits once it is released.
    assert comments(pg_url) == before


def left_sessions(database: str) -> list[str]:
    """The sessions of pg_dump or pg_restore still on the database, once those that are
    only exiting have gone (bounded by HANG)."""
    query = text(
        "SELECT application_name || ': ' || coalesce(query, '') FROM pg_catalog.pg_stat_activity "
        "WHERE datname = :db AND (application_name LIKE 'aishell doctor %' "
        "OR application_name IN ('pg_dump', 'pg_restore'))"
    )
    until = time.monotonic() + HANG
    with engine(PG_ADMIN).connect() as conn:
        while True:
            left = list(conn.execute(query, {"db": database}).scalars())
            if not left or time.monotonic() > until:
                return left
            time.sleep(0.1)


def test_doctor_as_a_role_that_owns_no_extension_reports_no_problem(home, pg_url):
    with_extension(pg_url)
    role = f"aishell_r{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    admin = engine(PG_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
    try:
        configured(home, make_url(pg_url).set(username=role).render_as_string(False))
        logins = clients(doctor(home))
        assert logins["pg_restore"]["logged_in"], logins
        assert logins["pg_dump"]["logged_in"], logins
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


_CHECK_LOGINS = """
from aishell.commands.clientlogins import client_logins
from aishell.config.models import load_config
from aishell.targets.engines import open_target

client_logins(open_target(load_config(), "db", read_only=True))
"""


def test_no_client_program_outlives_the_doctor(home, tmp_path):
    """mariadb-dump has no connect timeout: against a server that never answers it
    waits until killed. Killing the process that runs the check kills it too."""
    silent = Silent()
    try:
        configured(home, f"mysql+pymysql://root@127.0.0.1:{silent.port}/test")
        checking = subprocess.Popen(
            [sys.executable, "-c", _CHECK_LOGINS], env=os.environ.copy(), cwd=tmp_path
        )
        try:
            child = wait_for_child(checking.pid, "mariadb-dump")
        finally:
            checking.kill()
            checking.wait()
        assert gone(child), f"mariadb-dump {child} outlived the doctor that started it"
    finally:
        silent.close()


def children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == pid:
            found.append((int(entry.name), name))
    return found


def wait_for_child(pid: int, name: str) -> int:
    until = time.monotonic() + HANG
    while time.monotonic() < until:
        for child, called in children(pid):
            if called == name:
                return child
        time.sleep(0.05)
    raise AssertionError(f"no {name} started within {HANG}s")


def gone(pid: int) -> bool:
    """Whether the process has ended within ORPHAN_GRACE."""
    until = time.monotonic() + ORPHAN_GRACE
    while time.monotonic() < until:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)  # not left behind by the test either
    return False
