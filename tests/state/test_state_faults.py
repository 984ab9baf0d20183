"""Faults of the state store are errors, not crashes; and the store keeps its secrets.

- A state store that is locked by another process, damaged, read-only or on a full
  disk gives one line naming the store's path and what to do, with StateError's exit
  code, from every command that opens it; nothing is half-written, and once the fault
  is gone the same store works.
- The store is in WAL mode with synchronous=FULL, and its busy timeout is the config's.
- Ctrl-D at the prompt for a drafted plan declines the plan (at the approval prompt:
  tests/cli/test_terminal.py).
- A state store on PostgreSQL takes its password from state.password_env; no password
  appears in state rows, errors or --json output, and every printed URL masks it.
- tests/services.py: only a server that does not answer may skip a test.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import EXIT_DENIED, ConfigError, StateError
from aishell.state.store import StateStore
from tests import services
from tests.cli.test_cli import in_terminal, read_until
from tests.fake_ollama import Script, fake_ollama
from tests.helpers import closed_port, tmpfs

BUSY_TIMEOUT_MS = 200


def edit_main(home: Path, **changes: Any) -> Config:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def strict(home: Path) -> None:
    path = home / "config" / "agents" / "maintenance.yaml"
    path.write_text(path.read_text().replace("safety_level: moderate", "safety_level: strict"))


def state_at(home: Path, path: Path) -> Config:
    """The config with the state store at `path` and a short busy timeout."""
    state = {"url": f"sqlite:///{path}", "busy_timeout_ms": BUSY_TIMEOUT_MS}
    return edit_main(home, state=state)


def waiting_run(config: Config) -> str:
    """A run left waiting for approval (strict safety level, nobody to ask)."""
    result = commands.run_job(config, "maintenance", {"type": "full", "tables": ["users"]})
    assert result.status == "waiting_approval", result.error
    return result.run_id


def commands_on(run_id: str) -> list[list[str]]:
    """Every kind of command that opens the store: reads, a new run, and decisions."""
    return [
        ["runs", "list"],
        ["runs", "show", run_id],
        ["backups", "list"],
        ["run", "maintenance", "--type", "quick", "--non-interactive"],
        ["resume", run_id, "--non-interactive"],
        ["approve", run_id],
        ["deny", run_id],
        ["stop", run_id],
    ]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_error_line(result: Result, *needles: str) -> str:
    """The command failed with StateError's exit code and one line holding the needles."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == StateError.exit_code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "internal error" not in lines[0] and "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(path: Path) -> list[tuple[Any, ...]]:
    """Runs, steps and approvals as the file holds them. Read as a writer would, so
    closing it leaves no -wal and -shm files behind (a read-only connection does, and
    with them a read-only store could still be read)."""
    conn = sqlite3.connect(path)
    try:
        return [
            *conn.execute("SELECT run_id, status FROM runs ORDER BY run_id"),
            *conn.execute("SELECT run_id, idx, status FROM steps ORDER BY run_id, idx"),
            *conn.execute("SELECT run_id, step_idx, decision FROM approvals ORDER BY id"),
        ]
    finally:
        conn.close()


# --- durability --------------------------------------------------------------------------


def test_the_store_is_wal_with_synchronous_full_and_the_configs_busy_timeout(home: Path) -> None:
    config = state_at(home, home / "state.db")
    with StateStore(config.state_url) as store:
        pragma = store._conn.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
        assert pragma("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS
        store._conn.rollback()
    # WAL is the file's own mode: any other connection finds it.
    conn = sqlite3.connect(home / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


# --- a locked store --------------------------------------------------------------------------

HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def held_exclusively(path: Path) -> Iterator[None]:
    """Another process holding SQLite's exclusive lock on the file until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_locked_store_is_one_line_and_reads_still_work(home: Path, demo_db: Path) -> None:
    strict(home)
    path = home / "state.db"
    config = state_at(home, path)
    run_id = waiting_run(config)
    before = snapshot(path)
    writers = [c for c in commands_on(run_id) if c[0] not in ("runs", "backups", "stop")]
    with held_exclusively(path):
        for args in writers:
            one_error_line(
                invoke(*args),
                f"The state store {path} is locked by another process",
                "state.busy_timeout_ms",
            )
        # WAL lets readers in while another process writes.
        assert invoke("runs", "show", run_id).exit_code == 0
        assert invoke("runs", "list").exit_code == 0
    assert snapshot(path) == before
    # The lock gone, the same store takes the decision.
    assert invoke("approve", run_id).exit_code == 0
    assert commands.show_run(config, run_id)["approvals"]


# --- a damaged store -------------------------------------------------------------------------


def test_a_file_of_garbage_is_a_damaged_store(home: Path, demo_db: Path) -> None:
    path = home / "state.db"
    state_at(home, path)
    path.write_bytes(os.urandom(64 * 1024))
    garbage = path.read_bytes()
    for args in commands_on("0123456789ab"):
        one_error_line(invoke(*args), f"The state store {path} is damaged", "move it aside")
    assert path.read_bytes() == garbage  # never "repaired" over


def test_a_store_with_damaged_pages_is_a_damaged_store(home: Path, demo_db: Path) -> None:
    strict(home)
    path = home / "state.db"
    config = state_at(home, path)
    run_id = waiting_run(config)
    size = path.stat().st_size
    assert not Path(f"{path}-wal").exists()  # all of it in the file, WAL checkpointed
    with path.open("r+b") as handle:  # every page after the header's, overwritten
        for offset in range(4096, size, 4096):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    for args in commands_on(run_id):
        one_error_line(invoke(*args), f"The state store {path} is damaged", "malformed")


# --- a read-only store -----------------------------------------------------------------------


def test_a_read_only_store_is_one_line(home: Path, demo_db: Path, tmp_path: Path) -> None:
    strict(home)
    with tmpfs(tmp_path / "ro", "4m") as folder:
        path = folder / "state.db"
        config = state_at(home, path)
        run_id = waiting_run(config)
        before = snapshot(path)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        for args in commands_on(run_id):
            one_error_line(invoke(*args), f"The state store {path} is read-only", "writable")
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        assert snapshot(path) == before


def test_a_read_only_store_file_in_a_writable_folder(
    home: Path, demo_db: Path, tmp_path: Path
) -> None:
    """The file alone read-only (a read-only bind mount over it): root cannot write it."""
    strict(home)
    path = home / "state.db"
    config = state_at(home, path)
    run_id = waiting_run(config)
    before = snapshot(path)
    done = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        for args in [["approve", run_id], ["run", "maintenance", "--type", "quick"]]:
            one_error_line(invoke(*args), f"The state store {path} is read-only")
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
    assert snapshot(path) == before


# --- a full disk -----------------------------------------------------------------------------


def fill(folder: Path) -> Path:
    """Fill the disk holding `folder`, as far as it goes."""
    filler = folder / "filler"
    with suppress(OSError), filler.open("wb") as handle:
        handle.write(b"\0" * (shutil.disk_usage(folder).total + 1))
    assert shutil.disk_usage(folder).free < 64 * 1024
    return filler


def test_a_store_on_a_full_disk_is_one_line_and_works_once_there_is_space(
    home: Path, demo_db: Path, tmp_path: Path
) -> None:
    strict(home)
    with tmpfs(tmp_path / "small", "2m") as folder:
        path = folder / "state.db"
        config = state_at(home, path)
        run_id = waiting_run(config)
        before = snapshot(path)
        filler = fill(folder)
        for args in commands_on(run_id):
            one_error_line(invoke(*args), f"The disk holding the state store {path} is full")
        filler.unlink()
        assert snapshot(path) == before
        assert invoke("approve", run_id).exit_code == 0
    # A new store on a full disk: the same line.
    with tmpfs(tmp_path / "tiny", "256k") as folder:
        fill(folder)
        path = folder / "state.db"
        state_at(home, path)
        one_error_line(invoke("runs", "list"), f"The disk holding the state store {path} is full")


def test_a_missing_folder_is_named(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "state.db"
    state_at(home, path)
    one_error_line(invoke("runs", "list"), f"its folder {path.parent} does not exist")


# --- Ctrl-D at the plan prompt ---------------------------------------------------------


def test_end_of_input_at_the_plan_prompt_declines_the_plan(home: Path, demo_db: Path) -> None:
    answer = {
        "agent": "maintenance",
        "summary": "statistics",
        "steps": [
            {"tool": "update_table_statistics", "params": {"table": "users"}, "rationale": "asked"}
        ],
    }
    with fake_ollama(Script(answers=[answer])) as host:
        edit_main(home, planner={"llm": {"host": host, "model": "planner-test", "tries": 1}})
        args = ("run", "maintenance", "--type", "quick", "--planner", "llm")
        with in_terminal(*args) as (proc, leader):
            read_until(leader, "Run this plan?")
            os.write(leader, b"\x04")
            rest = read_until(leader, "not run")
            code = proc.wait(timeout=60)
    assert "Aborted" not in rest and "Traceback" not in rest and "internal error" not in rest
    assert code == EXIT_DENIED
    assert commands.list_runs(load_config(home=home)) == []  # nothing started


# --- secrets -------------------------------------------------------------------------------


@pytest.fixture
def pg_role() -> Iterator[tuple[str, str, str]]:
    """A role with a password and a database it owns on the shared PostgreSQL:
    (role, password, database)."""
    suffix = uuid.uuid4().hex[:10]
    role, password, database = f"aishell_r{suffix}", f"pw-{uuid.uuid4().hex}", f"aishell_s{suffix}"
    admin = services.admin_engine(services.PG_ADMIN, "PostgreSQL")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"CREATE DATABASE {database} OWNER {role}"))
    try:
        yield role, password, database
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def every_value(url: str) -> str:
    """Every row of every table in a database, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
            dumped = [repr(conn.execute(text(f'SELECT * FROM "{t}"')).all()) for t in list(tables)]
    finally:
        engine.dispose()
    return "\n".join(dumped)


def test_a_state_store_on_postgresql_takes_its_password_from_the_environment(
    home: Path, demo_db: Path, pg_role: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    role, password, database = pg_role
    variable = f"AISHELL_TEST_STATE_PASSWORD_{uuid.uuid4().hex[:8].upper()}"
    url = f"postgresql+psycopg://{role}@127.0.0.1:5432/{database}"
    with_password = f"postgresql+psycopg://{role}:{password}@127.0.0.1:5432/{database}"
    strict(home)
    config = edit_main(
        home,
        state={"url": url, "password_env": variable},
        targets={
            "demo": {"url": "sqlite:///demo.db"},
            "inline": {"url": with_password, "environment": "test"},
            "refused": {"url": f"postgresql+psycopg://{role}:{password}@127.0.0.1:1/x"},
        },
    )

    # Not set: one line naming the variable, nothing else.
    with pytest.raises(ConfigError, match=variable):
        commands.list_runs(config)
    missing = invoke("runs", "list")
    assert missing.exit_code == ConfigError.exit_code and variable in missing.output
    assert len(missing.output.strip().splitlines()) == 1

    monkeypatch.setenv(variable, password)
    assert password in config.state_url and password not in config.state_location
    outputs = [
        invoke("run", "maintenance", "--type", "full", "--tables", "users", "--json"),
        invoke("runs", "list", "--json"),
        invoke("targets", "list", "--json"),
        invoke("targets", "check", "inline", "--json"),
        invoke("targets", "check", "refused"),
    ]
    run = json.loads(outputs[0].stdout)
    assert outputs[0].exit_code == 3 and run["status"] == "waiting_approval", outputs[0].output
    assert run["run_id"] in outputs[1].stdout
    outputs += [
        invoke("approve", run["run_id"], "--json"),
        invoke("resume", run["run_id"], "--json"),
        invoke("runs", "show", run["run_id"], "--json"),
        invoke("runs", "show", "ffffffffffff"),
    ]
    assert outputs[-2].exit_code == 0 and json.loads(outputs[-2].stdout)["status"] == "completed"
    masked = f"postgresql+psycopg://{role}:***@127.0.0.1:5432/{database}"
    assert outputs[-1].exit_code == 2 and masked in outputs[-1].output, outputs[-1].output
    listed = {t["name"]: t for t in json.loads(outputs[2].stdout)["targets"]}
    assert listed["inline"]["location"] == masked
    assert outputs[3].exit_code == 0, outputs[3].output
    assert outputs[4].exit_code != 0 and outputs[4].output.startswith("Error: ")
    for result in outputs:
        assert password not in result.output, result.output

    # The store was written (this is where the run lives), and holds no password.
    stored = every_value(with_password)
    assert run["run_id"] in stored
    assert password not in stored


def test_a_failing_state_store_url_masks_its_password(home: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    edit_main(home, state={"url": f"postgresql+psycopg://someone:{password}@127.0.0.1:1/x"})
    line = one_error_line(invoke("runs", "list"), "postgresql+psycopg://someone:***@127.0.0.1:1/x")
    assert password not in line and "Connection refused" in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test?bogus_option=1",
        "mysql+pymysql://root@127.0.0.1:3306/test?bogus_option=1",
    ],
)
def test_a_state_store_url_with_an_option_the_driver_lacks_is_one_line(
    home: Path, url: str
) -> None:
    """An option of state.url the driver does not know fails the connect (psycopg's
    ProgrammingError, PyMySQL's TypeError): the store's fault, said in one line."""
    edit_main(home, state={"url": url})
    result = invoke("runs", "list")
    assert result.exit_code == StateError.exit_code, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "internal error" not in line, line
    assert "bogus_option" in line and "state.url" in line, line


def test_a_failing_state_store_with_password_env_masks_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("AISHELL_TEST_STATE_PW", password)
    edit_main(
        home,
        state={
            "url": "postgresql+psycopg://who@127.0.0.1:1/x",
            "password_env": "AISHELL_TEST_STATE_PW",
        },
    )
    line = one_error_line(invoke("run", "maintenance", "--type", "quick"), "who:***@127.0.0.1:1/x")
    assert password not in line


# --- tests/services.py: only an unreachable server skips -------------------------------------


@pytest.mark.parametrize("scratch", [services.scratch_postgresql, services.scratch_mysql])
def test_an_unreachable_server_fails_unless_skipping_was_asked_for(
    scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    admin = (
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        if scratch is services.scratch_postgresql
        else f"mysql+pymysql://root@127.0.0.1:{port}/test"
    )
    # By default a missing server fails the test, naming the way to skip instead.
    monkeypatch.delenv("AISHELL_REQUIRE_SERVICES", raising=False)
    monkeypatch.delenv("AISHELL_SKIP_SERVICES", raising=False)
    failed = pytest.raises(pytest.fail.Exception, match="not reachable.*AISHELL_SKIP_SERVICES=1")
    with failed, scratch(admin_url=admin):
        pass
    # Skipping is opt-in ...
    monkeypatch.setenv("AISHELL_SKIP_SERVICES", "1")
    with pytest.raises(pytest.skip.Exception, match="not reachable"), scratch(admin_url=admin):
        pass
    # ... and CI forbids it.
    monkeypatch.setenv("AISHELL_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="not reachable"), scratch(admin_url=admin):
        pass


@pytest.mark.parametrize("scratch", [services.scratch_postgresql, services.scratch_mysql])
def test_a_set_up_error_on_a_reachable_server_fails_never_skips(
    scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CREATE DATABASE of a name that exists fails on the server: that is an error."""
    monkeypatch.delenv("AISHELL_REQUIRE_SERVICES", raising=False)
    with scratch() as url:
        taken = url.rsplit("/", 1)[1]
        with pytest.raises(ProgrammingError), scratch(name=taken):
            pass
        # The failed attempt dropped nothing: the first scratch database is still there.
        engine = services.engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()
