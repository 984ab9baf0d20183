"""Backups that meet faults, caused for real: a run SIGKILLed mid-dump and mid-validation
on each engine, SIGTERM and a step's time limit while a dump waits, and a disk that
fills up during the backup and during its validation. Nothing may stay behind: no
`.partial` or `.verify-` file, no scratch database, no dump or restore process."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.handlers.backup import take
from aishell.state.processes import process_started
from aishell.state.store import StateStore
from tests.helpers import one_step_plan, query, tmpfs, use_target
from tests.private_servers import private_postgresql
from tests.services import engine

AISHELL = [sys.executable, "-m", "aishell"]


# --- helpers --------------------------------------------------------------------------------


def start(home: Path, *args: str) -> subprocess.Popen[str]:
    """A real `aishell` process in this home."""
    return subprocess.Popen(
        [*AISHELL, *args],
        env={**os.environ, "AISHELL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    """`aishell doctor ARGS --json`, through the CLI, in this process (the home is
    AISHELL_HOME)."""
    done = CliRunner().invoke(cli, ["doctor", *args, "--json"])
    return done.exit_code, json.loads(done.stdout)


def running(pid: int) -> bool:
    """Alive, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def children(pid: int) -> dict[int, str]:
    """The running child processes of pid, by program name."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    found[int(child)] = Path(f"/proc/{child}/comm").read_text().strip()
    return {child: name for child, name in found.items() if running(child)}


# Between two looks at what a test waits for: a moment that may pass in milliseconds
# (a file seen before it is renamed, a dump caught as it streams) is looked for every
# 2 ms; a state that lasts until the test ends it (a program waiting on a held lock, a
# process that has ended) every 20 ms: a tenth of the looks, each of which reads /proc,
# the backup folder or the state store.
FLEETING, STEADY = 0.002, 0.02


def wait_for(
    what: str,
    ready: Callable[[], Any],
    proc: subprocess.Popen[str] | None = None,
    every: float = FLEETING,
) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"aishell ended before {what}: {proc.communicate()}")
        time.sleep(every)
    raise AssertionError(f"{what} never happened")


def scratch_entries(home: Path) -> list[tuple[str, str, dict[str, Any]]]:
    rows = query(home / "state.db", "SELECT kind, name, details FROM scratch ORDER BY id")
    return [(kind, name, json.loads(details)) for kind, name, details in rows]


def debris(folder: Path) -> list[str]:
    """Scratch files of backups under folder."""
    return sorted(
        p.name
        for p in folder.rglob("*")
        if p.is_file() and (".partial" in p.name or ".verify-" in p.name)
    )


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def kill_once_seen(home: Path, pattern: str, attempts: int = 3) -> None:
    """Run a full backup and SIGKILL it as soon as a file matching pattern appears in
    its folder; a run that finishes first is started again."""
    folder = home / "backups" / "db"
    for _attempt in range(attempts):
        proc = start(home, "run", "backup", "--type", "full", "--json")
        seen = wait_for(pattern, lambda p=proc: list(folder.glob(pattern)) or p.poll() is not None)
        if seen is True:
            proc.communicate()
            continue
        kill(proc)
        return
    pytest.fail(f"every run finished before {pattern} could be caught")


def small_disk(tmp_path: Path, megabytes: int) -> contextlib.AbstractContextManager[Path]:
    """A tmpfs of its own: a real file system that fills up."""
    return tmpfs(tmp_path / "small", f"{megabytes}m")


def fill(disk: Path) -> None:
    """Fill the file system, as far as it goes."""
    free = shutil.disk_usage(disk).free
    with contextlib.suppress(OSError):
        (disk / "filler").write_bytes(b"\0" * free)


def server_database_exists(url: str, name: str) -> bool:
    admin = engine(url)
    try:
        with admin.connect() as conn:
            if url.startswith("postgresql"):
                sql = "SELECT count(*) FROM pg_database WHERE datname = :n"
            else:
                sql = "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"
            return bool(conn.execute(text(sql), {"n": name}).scalar())
    finally:
        admin.dispose()


def big_sqlite(path: Path) -> None:
    """A database whose copy, checks and checksums take a moment: long enough to be
    caught halfway."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT)")
    body = os.urandom(600).hex()
    conn.executemany("INSERT INTO docs VALUES (?, ?)", ((i, body) for i in range(20_000)))
    conn.commit()
    conn.close()


def sqlite_config(home: Path) -> Config:
    big_sqlite(home / "big.db")
    return use_target(home, f"sqlite:///{home / 'big.db'}")


# Each server's way to keep a dump, or a restore, waiting: a lock the test holds.


@contextlib.contextmanager
def pg_dump_waits(url: str) -> Iterator[None]:
    """pg_dump locks every table it dumps, in every schema; the test holds one of them."""
    with engine(url).connect() as conn:
        conn.execute(text("CREATE SCHEMA held; CREATE TABLE held.t (id integer)"))
    holder = create_engine(url).connect()
    try:
        holder.begin()
        holder.execute(text("LOCK TABLE held.t IN ACCESS EXCLUSIVE MODE"))
        yield
    finally:
        holder.rollback()
        holder.close()
        holder.engine.dispose()


@contextlib.contextmanager
def mysql_dump_waits(url: str, table: str = "a") -> Iterator[None]:
    holder = create_engine(url, isolation_level="AUTOCOMMIT").connect()
    try:
        holder.execute(text(f"LOCK TABLES {table} WRITE"))
        yield
    finally:
        holder.execute(text("UNLOCK TABLES"))
        holder.close()
        holder.engine.dispose()


def populate(url: str) -> None:
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))"))
        # One executemany for the 50 rows, not 50 round trips.
        rows = [{"i": i, "v": f"value {i}"} for i in range(50)]
        conn.execute(text("INSERT INTO a VALUES (:i, :v)"), rows)


def slow_pg_restore(url: str) -> None:
    """A check that sleeps, only in aishell's scratch databases: restoring its rows for
    validation takes 100 s, while the dump does not evaluate it. Far longer than the
    test takes to see pg_restore and kill aishell, on however busy a machine: a restore
    that ended first would leave its scratch database dropped by the validation itself."""
    with engine(url).connect() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION slow_in_scratch(i integer) RETURNS boolean LANGUAGE sql AS $$ "
                "SELECT CASE WHEN pg_catalog.current_database() LIKE 'aishell\\_verify\\_%' "
                "THEN (SELECT true FROM pg_catalog.pg_sleep(0.05)) ELSE true END $$"
            )
        )
        conn.execute(
            text("CREATE TABLE slow (id integer PRIMARY KEY CHECK (public.slow_in_scratch(id)))")
        )
        conn.execute(text("INSERT INTO slow SELECT generate_series(1, 2000)"))


@contextlib.contextmanager
def mysql_restore_waits(url: str) -> Iterator[tuple[Callable[[], Any], Callable[[], Any]]]:
    """A view over a table of another database: a restore creating the view waits while
    the test holds a write lock on that table. Yields (hold, release)."""
    other = f"aishell_hold_{uuid.uuid4().hex[:10]}"
    admin = engine(url)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{other}`"))
        conn.execute(text(f"CREATE TABLE `{other}`.t (id INTEGER)"))
        conn.execute(text(f"CREATE VIEW v AS SELECT id FROM `{other}`.t"))
    holder = admin.connect()
    try:
        yield (
            lambda: holder.execute(text(f"LOCK TABLES `{other}`.t WRITE")),
            lambda: holder.execute(text("UNLOCK TABLES")),
        )
    finally:
        holder.execute(text("UNLOCK TABLES"))
        holder.close()
        with admin.connect() as conn:
            conn.execute(text("DROP VIEW IF EXISTS v"))
            conn.execute(text(f"DROP DATABASE `{other}`"))
        admin.dispose()


def assert_nothing_left(home: Path, url: str | None, databases: list[str], kids: list[int]):
    assert debris(home / "backups") == []
    assert scratch_entries(home) == []
    for name in databases:
        assert url is not None and not server_database_exists(url, name), name
    assert [pid for pid in kids if running(pid)] == []


# --- SIGKILL mid-dump -----------------------------------------------------------------------


def test_sqlite_killed_mid_copy_leaves_nothing_once_doctor_cleans(home):
    sqlite_config(home)
    kill_once_seen(home, "*.partial")
    assert debris(home / "backups"), "nothing was left to clean"
    assert [kind for kind, _, _ in scratch_entries(home)].count("file") == 1

    code, found = doctor("--target", "db")
    assert code == 0 and {e["kind"] for e in found["leftovers"]} >= {"file"}
    code, cleaned = doctor("--clean")
    assert code == 0, cleaned
    assert any(e["name"].endswith(".partial") for e in cleaned["removed"])
    assert_nothing_left(home, None, [], [])


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_server_dump_killed_midway_dies_with_aishell_and_doctor_cleans(dialect, home, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    populate(url)
    use_target(home, url)
    program = "pg_dump" if dialect == "postgresql" else "mariadb-dump"
    waits = pg_dump_waits if dialect == "postgresql" else mysql_dump_waits
    with waits(url):
        proc = start(home, "run", "backup", "--type", "full", "--json")
        dump = wait_for(
            f"{program} waiting on the held lock",
            lambda: (
                [p for p, name in children(proc.pid).items() if name in (program, "mysqldump")]
                if debris(home / "backups")
                and any("pid" in d for kind, _, d in scratch_entries(home) if kind == "process")
                else None
            ),
            proc,
            every=STEADY,
        )
        kill(proc)
        # The kernel kills the dump with aishell: it does not go on writing.
        wait_for(
            f"{program} ending with aishell",
            lambda: not any(running(p) for p in dump),
            every=STEADY,
        )
    recorded = [d["pid"] for kind, _, d in scratch_entries(home) if kind == "process"]
    assert recorded == dump
    assert len(debris(home / "backups")) == 1

    code, cleaned = doctor("--clean")
    assert code == 0, cleaned
    # The partial dump, and the private file that gave the dump its login.
    assert [e["kind"] for e in cleaned["removed"]] == ["file", "file"]
    login_files = [Path(e["name"]) for e in cleaned["removed"] if "aishell-login-" in e["name"]]
    assert len(login_files) == 1 and not login_files[0].exists()
    assert not login_files[0].parent.exists()  # its private folder too
    assert_nothing_left(home, url, [], dump)


def fill_for_a_long_dump(url: str) -> None:
    """A table whose dump takes a moment, and one dumped after it. On PostgreSQL the
    dump is caught while it streams a_big: 150,000 rows (19 MB) keep pg_dump writing
    for a second or so, hundreds of the test's looks. On MariaDB the dump waits for
    b_held once a_big is written: a_big need only be well past the pipe's and the
    client's buffers (20,000 rows, 2.7 MB) to be seen in the file."""
    if url.startswith("postgresql"):
        sql = (
            "CREATE TABLE a_big AS SELECT g AS id, repeat(md5(g::text), 4) AS v "
            "FROM generate_series(1, 150000) g"
        )
    else:
        sql = "CREATE TABLE a_big AS SELECT seq AS id, REPEAT(MD5(seq), 4) AS v FROM seq_1_to_20000"
    with engine(url).connect() as conn:
        conn.execute(text(sql))
        conn.execute(text("CREATE TABLE b_held (id INTEGER)"))


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_dump_killed_while_it_streams_leaves_no_file_and_no_manifest(dialect, home, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    fill_for_a_long_dump(url)
    config = use_target(home, url)
    folder = home / "backups" / "db"
    program = "pg_dump" if dialect == "postgresql" else "mariadb-dump"
    finished: list[Path] = []  # backups a dump finished before it could be killed

    def streaming() -> list[int] | None:
        written = [p for p in folder.glob("*.partial") if p.exists() and p.stat().st_size]
        dumps = [p for p, name in children(os.getpid()).items() if name in (program, "mysqldump")]
        return dumps if written and dumps else None

    with contextlib.ExitStack() as stack:
        if dialect == "mysql":
            # The dump writes a_big, then waits for b_held: it is caught mid-file.
            stack.enter_context(mysql_dump_waits(url, "b_held"))
        for _attempt in range(3):
            outcome: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda o=outcome: o.update(
                    result=commands.run_job(config, "backup", {"type": "full", "verify": False})
                )
            )
            thread.start()
            dumps = wait_for(
                f"{program} writing the backup",
                lambda t=thread: streaming() or (None if t.is_alive() else []),
            )
            for pid in dumps:
                os.kill(pid, signal.SIGKILL)
            thread.join()
            result = outcome["result"]
            if dumps:
                break
            finished.append(Path(result.steps[1].output["backup_path"]))
        else:
            pytest.fail(f"every {program} finished before it could be killed")
    step = result.steps[1]
    assert result.status == "failed" and step.status == "failed"
    assert step.error.startswith(f"{program} failed: "), step.error
    # Only the backups finished before are there, each with its manifest.
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted(n for p in finished for n in (p.name, f"{p.name}.manifest.json"))
    assert [b["path"] for b in commands.list_backups(config)] == [str(p) for p in finished][::-1]
    assert_nothing_left(home, url, [], dumps)


# --- SIGKILL mid-validation -----------------------------------------------------------------


def test_sqlite_killed_mid_validation_leaves_nothing_after_the_next_run(home):
    config = sqlite_config(home)
    kill_once_seen(home, "*.verify-*")
    assert any(".verify-" in name for name in debris(home / "backups"))

    # The next run of any kind removes what the killed one left.
    after = commands.run_job(config, "backup", {"type": "full", "verify": False})
    assert after.status == "completed", after.error
    assert_nothing_left(home, None, [], [])
    cleaned = [e for e in commands.show_run(config, after.run_id)["events"]]
    assert any(e["kind"] == "scratch_cleaned" for e in cleaned)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_server_validation_killed_midway_leaves_nothing_after_the_next_run(dialect, home, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    populate(url)
    config = use_target(home, url)
    program = "pg_restore" if dialect == "postgresql" else "mariadb"
    with contextlib.ExitStack() as stack:
        release: Callable[[], Any] | None = None
        if dialect == "postgresql":
            slow_pg_restore(url)
            proc = start(home, "run", "backup", "--type", "full", "--json")
        else:
            hold, release = stack.enter_context(mysql_restore_waits(url))
            taken = commands.run_job(config, "backup", {"type": "full", "verify": False})
            assert taken.status == "completed", taken.error
            hold()
            proc = start(home, "run", "backup", "--type", "drill", "--json")
        restore = wait_for(
            f"{program} restoring into the scratch database",
            lambda: [p for p, name in children(proc.pid).items() if name in (program, "mysql")],
            proc,
            every=STEADY,
        )
        [scratch_db] = [name for kind, name, _ in scratch_entries(home) if kind == "database"]
        assert server_database_exists(url, scratch_db)
        kill(proc)
        wait_for(
            f"{program} ending with aishell",
            lambda: not any(running(p) for p in restore),
            every=STEADY,
        )
        if release is not None:
            release()
        assert server_database_exists(url, scratch_db)

        after = commands.run_job(config, "backup", {"type": "full", "verify": False})
        assert after.status == "completed", after.error
    assert_nothing_left(home, url, [scratch_db], restore)


# --- stopped or out of time while a dump waits ----------------------------------------------


def test_sigterm_while_pg_dump_waits_stops_it_and_leaves_nothing(home, pg_url):
    populate(pg_url)
    use_target(home, pg_url)
    with pg_dump_waits(pg_url):
        proc = start(home, "run", "backup", "--type", "full", "--json")
        dump = wait_for(
            "pg_dump waiting on the held lock",
            lambda: [p for p, name in children(proc.pid).items() if name == "pg_dump"],
            proc,
            every=STEADY,
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, out
    assert json.loads(out)["status"] == "interrupted"
    assert_nothing_left(home, pg_url, [], dump)


def test_a_dump_past_the_step_time_limit_is_killed(home, mysql_url, edit_config):
    populate(mysql_url)
    use_target(home, mysql_url)
    # Two seconds: the dump starts and is seen waiting well within them.
    config = edit_config(backup={"default_config": {"max_execution_time": 2}})
    outcome: dict[str, Any] = {}
    with mysql_dump_waits(mysql_url):
        thread = threading.Thread(
            target=lambda: outcome.update(
                result=commands.run_job(config, "backup", {"type": "full"})
            )
        )
        thread.start()
        dump = wait_for(
            "mariadb-dump waiting on the held lock",
            lambda: [
                p
                for p, name in children(os.getpid()).items()
                if name in ("mariadb-dump", "mysqldump")
            ],
            every=STEADY,
        )
        thread.join()
    step = outcome["result"].steps[1]
    assert outcome["result"].status == "failed" and step.status == "failed"
    assert "time limit" in step.error, step.error
    assert commands.list_backups(config) == []
    assert_nothing_left(home, mysql_url, [], dump)


def test_a_postgresql_restart_mid_backup_is_named_and_resume_completes(home, edit_config):
    with private_postgresql() as (url, stop_server, start_server):
        populate(url)
        use_target(home, url)
        # Reconnects are tried a few times with backoff; short here, to keep the test short.
        config = edit_config(backup={"default_config": {"retry_backoff_seconds": 0.2}})
        with engine(url).connect() as conn:
            conn.execute(text("CREATE SCHEMA held; CREATE TABLE held.t (id integer)"))
        holder = create_engine(url).connect()
        holder.begin()
        holder.execute(text("LOCK TABLE held.t IN ACCESS EXCLUSIVE MODE"))
        outcome: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: outcome.update(
                result=commands.run_job(config, "backup", {"type": "full"})
            )
        )
        thread.start()
        dump = wait_for(
            "pg_dump waiting on the held lock",
            lambda: [p for p, name in children(os.getpid()).items() if name == "pg_dump"],
            every=STEADY,
        )
        stop_server()  # an immediate shutdown: what a crash looks like to its clients
        thread.join(120)
        holder.invalidate()
        holder.engine.dispose()
        result = outcome["result"]
        step = result.steps[1]
        assert result.status == "failed" and step.status == "failed"
        assert "\n" not in (step.error or "") and "internal error" not in (step.error or "")
        assert step.error.startswith("lost the connection to target 'db' ("), step.error
        assert f"`aishell resume {result.run_id}` once the server is back" in step.error
        assert commands.list_backups(config) == []
        assert_nothing_left(home, None, [], dump)
        start_server()
        resumed = commands.resume_run(config, result.run_id)
        assert resumed.status == "completed", resumed.error
        [backup] = commands.list_backups(config)
        assert backup["verified_at"] is not None
        assert_nothing_left(home, None, [], [])


# --- a full disk ---------------------------------------------------------------------------


def test_a_disk_filling_during_a_sqlite_backup_is_named(home, tmp_path, edit_config, monkeypatch):
    sqlite_config(home)
    with small_disk(tmp_path, 64) as disk:
        config = edit_config({"backup_dir": str(disk)})
        folder = disk / "db"
        named = take.destination
        filled: list[Path] = []

        def destination_then_fill(*args: Any, **kwargs: Any) -> Path:
            # The disk fills after the free-space check has passed and before the copy
            # starts: a copy of a few tens of milliseconds cannot outrun the filler.
            final = named(*args, **kwargs)
            fill(disk)
            filled.append(final)
            return final

        monkeypatch.setattr(take, "destination", destination_then_fill)
        result = commands.run_job(config, "backup", {"type": "full"})
        assert filled and shutil.disk_usage(disk).free < 1 << 20
        error = result.steps[1].error or ""
        assert result.steps[1].status == "failed", result.steps[1].status
        assert error.startswith("No space left on device: the file system at "), error
        assert str(disk) in error and "bytes free) while" in error
        assert commands.list_backups(config) == []
        assert debris(disk) == [] and [p.name for p in folder.iterdir()] == []
        assert scratch_entries(home) == []


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_disk_filling_during_a_dump_is_named(dialect, home, tmp_path, edit_config, request):
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    populate(url)
    use_target(home, url)
    waits = pg_dump_waits if dialect == "postgresql" else mysql_dump_waits
    with small_disk(tmp_path, 16) as disk:
        config = edit_config({"backup_dir": str(disk)})
        outcome: dict[str, Any] = {}
        with waits(url):
            thread = threading.Thread(
                target=lambda: outcome.update(
                    result=commands.run_job(config, "backup", {"type": "full"})
                )
            )
            thread.start()
            # The dump has opened its file and waits on the lock: the disk fills now.
            wait_for("the dump's file", lambda: debris(disk), every=STEADY)
            fill(disk)
        thread.join()
        step = outcome["result"].steps[1]
        assert step.status == "failed"
        assert step.error.startswith("No space left on device: the file system at "), step.error
        assert f"{disk}/db/" in step.error and ".partial" in step.error
        assert commands.list_backups(config) == []
        assert debris(disk) == [] and list((disk / "db").iterdir()) == []
        assert scratch_entries(home) == []


def _validate_on_a_full_disk(
    home: Path, tmp_path: Path, edit_config: Any, dialect: str, writing: str
) -> str:
    """Back up the default target `db` onto a small disk, fill the disk, validate: the
    full disk is named with what was being written, and the backup stays unverified."""
    with small_disk(tmp_path, 2) as disk:
        config = edit_config({"backup_dir": str(disk)})
        taken = commands.run_job(config, "backup", {"type": "full", "verify": False})
        assert taken.status == "completed", taken.error
        path = taken.steps[1].output["backup_path"]
        fill(disk)
        plan = one_step_plan("backup", "db", dialect, "validate_backup", {"backup_path": path})
        checked = commands.apply_plan(config, plan)
        error = checked.steps[0].error
        assert checked.status == "failed"
        assert error.startswith(f"No space left on device: the file system at {disk} is full")
        assert f"while writing {writing}" in error
        assert "says nothing about the backup, which stays unverified" in error
        [listed] = commands.list_backups(config)
        assert listed["verified_at"] is None and listed["verification"] is None
        assert debris(disk) == [] and scratch_entries(home) == []
        return error


def test_a_disk_full_during_sqlite_validation_is_not_blamed_on_the_backup(
    home, tmp_path, edit_config
):
    conn = sqlite3.connect(home / "small.db")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, "x" * 200) for i in range(3000)))
    conn.commit()
    conn.close()
    use_target(home, f"sqlite:///{home / 'small.db'}")
    error = _validate_on_a_full_disk(home, tmp_path, edit_config, "sqlite", "the scratch copy")
    assert ".verify-" in error


def test_a_mysql_validation_needs_no_disk_of_its_own(home, tmp_path, edit_config, mysql_url):
    """The restored copy is dumped again to be measured: read as it streams, written
    nowhere, so a full backup disk does not keep a backup from being validated."""
    populate(mysql_url)
    use_target(home, mysql_url)
    with small_disk(tmp_path, 2) as disk:
        config = edit_config({"backup_dir": str(disk)})
        taken = commands.run_job(config, "backup", {"type": "full", "verify": False})
        assert taken.status == "completed", taken.error
        path = taken.steps[1].output["backup_path"]
        fill(disk)
        plan = one_step_plan("backup", "db", "mysql", "validate_backup", {"backup_path": path})
        checked = commands.apply_plan(config, plan)
        assert checked.status == "completed", checked.steps[0].error
        assert checked.steps[0].output["verified_backup"]["ok"] is True
        assert debris(disk) == [] and scratch_entries(home) == []


def test_a_server_disk_full_during_postgresql_validation_is_not_blamed_on_the_backup(
    home, tmp_path, edit_config
):
    # A private server whose new databases live on a small tablespace of their own (a
    # tmpfs; its WAL and control files stay on the data disk, so the server carries on):
    # the restore into the scratch database fills it.
    mount = Path(tempfile.mkdtemp(prefix="aishell-pgdisk-"))  # the server's account
    mount.chmod(0o755)  # may not enter tmp_path
    with tmpfs(mount / "disk", "48m") as disk, private_postgresql() as (url, _stop, _start):
        shutil.chown(disk, "postgres")
        admin = engine(url)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE TABLESPACE small LOCATION '{disk}'"))
            conn.execute(text("ALTER DATABASE template0 SET TABLESPACE small"))
            conn.execute(text("CREATE TABLE big (id integer PRIMARY KEY, v text)"))
            conn.execute(
                text(
                    "INSERT INTO big SELECT i, md5(i::text) || repeat('x', 200) "
                    "FROM generate_series(1, 60000) i"
                )
            )
        use_target(home, url)
        config = edit_config({"backup_dir": str(tmp_path / "backups")})
        taken = commands.run_job(config, "backup", {"type": "full", "verify": False})
        assert taken.status == "completed", taken.error
        path = taken.steps[1].output["backup_path"]
        # Room for the scratch database itself, not for the rows restored into it.
        spare = 12 * 1024 * 1024
        (disk / "filler").write_bytes(b"\0" * max(shutil.disk_usage(disk).free - spare, 0))
        plan = one_step_plan("backup", "db", "postgresql", "validate_backup", {"backup_path": path})
        checked = commands.apply_plan(config, plan)
        error = checked.steps[0].error or ""
        assert checked.status == "failed"
        assert error.startswith("The server of target 'db' ran out of disk space"), error
        assert "restoring into the scratch database aishell_verify_" in error, error
        assert "says nothing about the backup, which stays unverified" in error
        [listed] = commands.list_backups(config)
        assert listed["verified_at"] is None and listed["verification"] is None
        assert debris(tmp_path / "backups") == []
        # The full server may not even drop the scratch database: then the ledger keeps
        # its name for the next run, which the error asks for once there is room.
        kept = scratch_entries(home)
        assert all(kind == "database" for kind, _name, _details in kept), kept
        (disk / "filler").unlink()
        # With room again, the same backup validates.
        again = commands.apply_plan(config, plan)
        assert again.status == "completed", again.steps[0].error
        assert again.steps[0].output["ok"] is True
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname LIKE 'aishell%'")
            ).scalar()
        assert left == 0
        assert scratch_entries(home) == []
        admin.dispose()
    shutil.rmtree(mount, ignore_errors=True)


# --- what doctor never touches ---------------------------------------------------------------


def _in_a_process_that_ends(work: Callable[[], None]) -> None:
    """Run work in a forked process of its own, which then ends: what it records is a
    dead process's."""
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(60)
    assert child.exitcode == 0


def _record_and_exit(home: Path, kind: str, name: str, **details: Any) -> None:
    """A real process records a scratch entry, then ends: its entries are a dead run's."""

    def record() -> None:
        with StateStore(f"sqlite:///{home / 'state.db'}") as store:
            store.record_scratch(kind, name, run_id="gone", target="db", details=details)

    _in_a_process_that_ends(record)


def _orphan_and_exit(home: Path, tmp_path: Path) -> int:
    """A real process starts a child in its own process group (as a dump runs), records
    it, and ends without it: the child lives on, an orphan. Returns the child's pid."""
    told = tmp_path / "orphan.pid"

    def orphan() -> None:
        quiet = subprocess.DEVNULL
        child = subprocess.Popen(
            ["sleep", "300"], start_new_session=True, stdin=quiet, stdout=quiet, stderr=quiet
        )
        told.write_text(str(child.pid))
        details = {"pid": child.pid, "pgid": child.pid, "started": process_started(child.pid)}
        with StateStore(f"sqlite:///{home / 'state.db'}") as store:
            store.record_scratch("process", "sleep", run_id="gone", target="db", details=details)

    _in_a_process_that_ends(orphan)
    return int(told.read_text())


def test_doctor_kills_an_orphaned_child_process_group(home, tmp_path):
    orphan = _orphan_and_exit(home, tmp_path)
    try:
        assert running(orphan)
        code, found = doctor()
        assert [(e["kind"], e["pid"]) for e in found["leftovers"]] == [("process", orphan)]
        code, cleaned = doctor("--clean")
        assert code == 0, cleaned
        assert cleaned["removed"][0]["done"] == f"killed process group {orphan}"
        wait_for("the orphan ending", lambda: not running(orphan), every=STEADY)
        assert scratch_entries(home) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan, signal.SIGKILL)


def test_doctor_touches_only_what_dead_processes_of_this_host_left(home, pg_url, tmp_path):
    config = use_target(home, pg_url)
    real_database = pg_url.rsplit("/", 1)[1]  # a database aishell did not make
    live_file = tmp_path / "live.partial"
    foreign_file = tmp_path / "foreign.partial"
    dead_file = tmp_path / "dead.partial"
    for path in (live_file, foreign_file, dead_file):
        path.write_text("x")
    _record_and_exit(home, "database", real_database)
    _record_and_exit(home, "file", str(dead_file))
    _record_and_exit(home, "file", str(foreign_file))
    # A dead run's child whose pid now belongs to another process (this test's own).
    _record_and_exit(home, "process", "pg_dump", pid=os.getpid(), pgid=os.getpid(), started="1")
    with StateStore(config.state_url) as store:
        store.record_scratch("file", str(live_file), run_id="live", target="db")
    conn = sqlite3.connect(home / "state.db")
    conn.execute("UPDATE scratch SET hostname = 'elsewhere' WHERE name = ?", (str(foreign_file),))
    conn.commit()
    conn.close()

    code, found = doctor("--target", "db")
    assert code == (1 if found["problems"] else 0)  # the scratch database may lack amcheck
    assert sorted(e["name"] for e in found["leftovers"]) == sorted([real_database, str(dead_file)])
    code, cleaned = doctor("--clean")
    assert code == 1, cleaned
    assert [e["name"] for e in cleaned["removed"]] == [str(dead_file)]
    [kept] = cleaned["kept"]
    assert (
        kept["why"]
        == f"'{real_database}' is not a name aishell gives scratch databases; not dropped"
    )
    assert server_database_exists(pg_url, real_database)
    assert live_file.exists() and foreign_file.exists() and not dead_file.exists()
    assert running(os.getpid())  # still here to tell


def test_doctor_says_so_when_nothing_was_left(home, demo_db, tmp_path):
    runner = CliRunner()
    quiet = runner.invoke(cli, ["doctor"])
    assert quiet.exit_code == 0, quiet.output
    assert "\nNothing left behind by killed runs.\nNo problems found.\n" in quiet.output
    left = tmp_path / "x.sqlite.partial"
    left.write_text("x")
    _record_and_exit(home, "file", str(left))
    found = runner.invoke(cli, ["doctor"])
    assert found.exit_code == 0
    assert found.output.endswith(
        f"\nleft by run gone: file {left}\nRemove it with `aishell doctor --clean`.\n"
        "No problems found.\n"
    )
    cleaned = runner.invoke(cli, ["doctor", "--clean"])
    assert cleaned.exit_code == 0 and cleaned.output == f"deleted: file {left}\n"
    assert not left.exists()
