"""One run per database: the run lock is keyed by what the database is, not by the name
a config gives it, and held on the server (or beside the SQLite file's real path)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import TargetLocked
from aishell.targets.engines import open_target
from aishell.targets.identity import database_identity
from tests.conftest import REPO
from tests.helpers import use_target
from tests.services import scratch_mysql, scratch_postgresql

# Holds the run lock of one target the way a run does (take_run_lock), until killed.
HOLDER = """
import sys, time
from aishell.config.models import load_config
from aishell.state.store import StateStore
from aishell.commands.locks import take_run_lock
from aishell.targets.engines import open_target
config = load_config()
handle = open_target(config, sys.argv[1])
with StateStore(config.state_url) as store:
    lock = take_run_lock(store, handle, sys.argv[1], sys.argv[2], "holder-run")
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(home: Path, target: str, agent: str = "maintenance") -> subprocess.Popen[str]:
    env = {**os.environ, "AISHELL_HOME": str(home)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, target, agent],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = holder.stdout.readline().strip() if holder.stdout else ""
    if line != "held":
        holder.kill()
        _out, err = holder.communicate()
        pytest.fail(f"the holder did not take the lock: {line!r} {err}")
    return holder


def _stop(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.communicate()


def _second_home(tmp_path: Path, url: str, name: str = "db") -> Path:
    """Another aishell home (its own state store) naming a database `name`."""
    other = tmp_path / "other-home"
    shutil.copytree(REPO / "config", other / "config")
    path = other / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"][name] = {"url": url, "environment": "test"}
    data["default_target"] = name
    path.write_text(yaml.safe_dump(data))
    return other


def _identity(config: Config, name: str) -> str:
    handle = open_target(config, name)
    try:
        with handle.connect() as conn:
            return database_identity(conn)
    finally:
        handle.close()


def _alias_url(url: str) -> str:
    """The same server database reached by another spelling of its address."""
    return url.replace("127.0.0.1", "localhost")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_two_names_for_one_database_never_run_at_once(engine, home, demo_db, tmp_path):
    if engine == "sqlite":
        link = tmp_path / "elsewhere" / "same.db"
        link.parent.mkdir()
        link.symlink_to(demo_db)
        config = use_target(home, f"sqlite:///{demo_db}", alias=f"sqlite:///{link}")
        _run_while_held(config, home)
        return
    scratch = scratch_postgresql if engine == "postgresql" else scratch_mysql
    with scratch() as url:
        config = use_target(home, url, alias=_alias_url(url))
        _run_while_held(config, home)


def _run_while_held(config: Config, home: Path) -> None:
    assert _identity(config, "db") == _identity(config, "alias")
    holder = _hold(home, "db", "maintenance")
    try:
        # Another name, and another agent: the database is the same, so it waits its turn.
        with pytest.raises(TargetLocked, match="its database is in use by run holder-run"):
            commands.run_job(config, "maintenance", {"type": "quick"}, target="alias")
        with pytest.raises(TargetLocked):
            commands.run_job(config, "backup", {"type": "full"}, target="alias")
        result = CliRunner().invoke(
            cli, ["run", "maintenance", "--type", "quick", "--target", "alias"]
        )
        assert result.exit_code == 5, result.output
    finally:
        _stop(holder)
    # The holder is gone: the server (or the kernel) let go with it.
    assert commands.run_job(config, "maintenance", {"type": "quick"}, target="alias").status == (
        "completed"
    )


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_databases_of_one_name_on_one_server_never_block_each_other(engine, home, tmp_path):
    scratch = scratch_postgresql if engine == "postgresql" else scratch_mysql
    with scratch() as mine, scratch() as theirs:
        other_home = _second_home(tmp_path, theirs)
        # Another aishell, same target name and agent, another database on the same server.
        holder = _hold(other_home, "db", "maintenance")
        try:
            config = use_target(home, mine)
            assert _identity(config, "db") != _identity(load_config(home=other_home), "db")
            for _ in range(3):
                result = commands.run_job(config, "maintenance", {"type": "quick"})
                assert result.status == "completed", result.error
        finally:
            _stop(holder)


def test_a_copied_sqlite_file_is_another_database(home, demo_db, tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copyfile(demo_db, copy)
    config = use_target(home, f"sqlite:///{demo_db}", copy=f"sqlite:///{copy}")
    assert _identity(config, "db") != _identity(config, "copy")
    holder = _hold(home, "db")
    try:
        assert commands.run_job(config, "maintenance", {"type": "quick"}, target="copy").status == (
            "completed"
        )
    finally:
        _stop(holder)


def test_the_sqlite_lock_file_is_gone_after_a_run_and_still_excludes(home, demo_db):
    config = use_target(home, f"sqlite:///{demo_db}")
    before = set(demo_db.parent.iterdir())
    assert commands.run_job(config, "maintenance", {"type": "quick"}).status == "completed"
    assert not [p for p in set(demo_db.parent.iterdir()) - before if p.suffix == ".lock"]

    # Let go and taken again, a lock still keeps a second taker out: the second
    # locks the file that is there now, not the one its first holder removed.
    handle = open_target(config, "db")
    other = open_target(config, "db")
    try:
        key = f"aishell:{_identity(config, 'db')}"
        first = handle.try_lock(key)
        assert first is not None and other.try_lock(key) is None
        first.release()
        first.release()  # twice is once: it removes nobody else's file
        second = other.try_lock(key)
        assert second is not None and handle.try_lock(key) is None
        [held] = [p for p in demo_db.parent.iterdir() if p.suffix == ".lock"]
        assert held.exists()
        second.release()
        assert not held.exists()
    finally:
        handle.close()
        other.close()


def test_the_lease_s_wait_ends_at_once_when_the_run_wakes_it(home, pg_url):
    config = use_target(home, pg_url)
    handle = open_target(config, "db")
    lock = handle.try_lock(f"lease-wake-{os.getpid()}-{id(handle)}")
    woken, wake = socket.socketpair()
    try:
        assert lock is not None and lock.stirred is not None
        wake.send(b"x")
        # Woken, the wait ends with False: nothing was seen on the lock's session (a wait
        # of ten minutes would otherwise outlast the test's time).
        assert lock.stirred(600, woken.fileno()) is False
        assert lock.holds()
    finally:
        woken.close()
        wake.close()
        if lock is not None:
            lock.release()
        handle.close()
