"""Unattended nights: no wait on a server and no run is unbounded.

Faults are real: a listener that accepts and never answers, a proxy in front of the real
server that stops forwarding in the middle of a step, a statement past its limit, a lock
held by another session, a run past its time limit.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import ConfigError
from aishell.policy.approvers import PreApproved
from aishell.targets.catalog import user_tables
from aishell.targets.engines import open_target
from aishell.targets.limits import TargetSilent
from tests.fake_ollama import Script, fake_ollama
from tests.faultproxy import Proxy, Silent, through
from tests.helpers import MARKER, one_step_plan, slow_read_tool, use_target
from tests.services import engine

HANG = 60  # seconds: a hang detector, never a timing assertion

SITE_TOOLS = {
    "sleep_read.yaml": {
        "name": "sleep_read",
        "description": "Sleep on the server; a test tool for time limits.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 600,
        "idempotent": True,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "required": ["seconds"],
            "properties": {"seconds": {"type": "number", "description": "How long."}},
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"seconds": 1}}],
        "implementations": {
            "postgresql": {"sql": "SELECT pg_sleep(:seconds) AS slept", "result": "one"},
            "mysql": {"sql": "SELECT SLEEP(:seconds) AS slept", "result": "one"},
        },
        "locks": {"postgresql": [], "mysql": []},
    },
    "count_locked.yaml": {
        "name": "count_locked",
        "description": "Count the rows of the table the test locks.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 600,
        "idempotent": True,
        "params": {"type": "object", "properties": {}},
        "returns": {"type": "object"},
        "examples": [{"params": {}}],
        "implementations": {
            "postgresql": {"sql": "SELECT count(*) AS n FROM locked", "result": "one"},
            "mysql": {"sql": "SELECT count(*) AS n FROM locked", "result": "one"},
        },
        "locks": {
            "postgresql": [{"lock": "ACCESS SHARE", "object": "table", "held": "while counted"}],
            "mysql": [{"lock": "SHARED_READ", "object": "table", "held": "while counted"}],
        },
    },
}


# --- faults ---------------------------------------------------------------------------------


@pytest.fixture
def silent() -> Iterator[Silent]:
    listener = Silent()
    yield listener
    listener.close()


def in_thread(call: Callable[[], Any]) -> Any:
    """call() on a thread, so that a hang fails the test instead of stopping the suite."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG)
    assert not worker.is_alive(), f"still waiting after {HANG}s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def silence_when(url: str, query_start: str, proxy: Proxy) -> threading.Thread:
    """Silence the proxy as soon as the real server runs a statement starting so."""
    pg = url.startswith("postgresql")
    database = url.rsplit("/", 1)[1]
    if pg:
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND state = 'active' "
            "AND query LIKE :q"
        )
    else:
        sql = "SELECT count(*) FROM information_schema.processlist WHERE db = :db AND info LIKE :q"

    def watch() -> None:
        admin = engine(url)
        with admin.connect() as conn:
            for _ in range(600):
                if conn.execute(text(sql), {"db": database, "q": query_start + "%"}).scalar():
                    proxy.silent.set()
                    break
                time.sleep(0.05)
        admin.dispose()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


# --- config helpers ---------------------------------------------------------------------


def configure(
    home: Path, url: str, agent: dict[str, Any] | None = None, load: bool = True, **target: Any
) -> Any:
    """Target `db` at url with the given target keys, the test tools, and maintenance
    agent settings (no retries unless asked)."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", **target}
    data["default_target"] = "db"
    site = home / "site_tools"
    site.mkdir(exist_ok=True)
    for name, tool in SITE_TOOLS.items():
        (site / name).write_text(yaml.safe_dump(tool))
    data["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(data))
    agent_path = home / "config" / "agents" / "maintenance.yaml"
    agent_data = yaml.safe_load(agent_path.read_text())
    agent_data["maintenance_agent"]["default_config"].update({"max_retries": 0, **(agent or {})})
    agent_path.write_text(yaml.safe_dump(agent_data))
    return load_config(home=home) if load else None


def dialect_of(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "mysql"


def one_step(config: Any, url: str, tool: str, params: dict[str, Any]) -> Any:
    plan = one_step_plan("maintenance", "db", dialect_of(url), tool, params)
    return commands.apply_plan(config, plan, approver=PreApproved())


def make_locked_table(url: str) -> None:
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE locked (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO locked VALUES (1), (2), (3)"))


class HeldLock:
    """Another session holding a lock on the table `locked` until released."""

    def __init__(self, url: str) -> None:
        self.engine = engine(url)
        self.conn = self.engine.connect()
        if url.startswith("postgresql"):
            self.conn.execute(text("BEGIN"))
            self.conn.execute(text("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE"))
        else:
            self.conn.execute(text("LOCK TABLES locked WRITE"))

    def release(self) -> None:
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(text("ROLLBACK"))
        else:
            self.conn.execute(text("UNLOCK TABLES"))
        self.conn.close()
        self.engine.dispose()


# --- a server that never answers --------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    ["mysql+pymysql://root", "postgresql+psycopg://postgres"],
    ids=["mysql", "postgresql"],
)
def test_a_silent_server_ends_the_run_with_one_line_naming_the_setting(home, silent, scheme):
    """The listener takes the TCP connection and never sends the greeting."""
    url = f"{scheme}@127.0.0.1:{silent.port}/shop"
    configure(home, url, connect_timeout_seconds=2, read_timeout_seconds=2)
    done = subprocess.run(
        [sys.executable, "-m", "aishell", "run", "maintenance", "--non-interactive"],
        env={**os.environ, "AISHELL_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == (
        f"Error: Cannot connect to target 'db': 127.0.0.1:{silent.port} did not answer "
        "within 2 s (targets.db.connect_timeout_seconds)"
    )


def test_a_server_silent_between_steps_is_cut_off_after_the_read_timeout(home, server_url):
    """Connected and answering, then silent: a catalog read outside any step ends."""
    real = 5432 if server_url.startswith("postgresql") else 3306
    proxy = Proxy(real)
    try:
        config = configure(home, through(proxy.port, server_url), read_timeout_seconds=1)
        target = open_target(config, "db")
        conn = target.connect()
        assert user_tables(conn) == []
        proxy.silent.set()
        with pytest.raises(TargetSilent) as err:
            in_thread(lambda: user_tables(conn))
        assert str(err.value) == (
            "Target 'db' did not answer within 1 s (targets.db.read_timeout_seconds)"
        )
        assert err.value.exit_code == 1
        conn.close()
        target.close()
    finally:
        proxy.close()


def test_a_server_silent_in_the_middle_of_a_step_fails_the_step(home, server_url):
    """The proxy forwards the connect, the lock and the step's statement, then nothing:
    neither the server's own timeout error nor an answer to the cancel gets through."""
    real = 5432 if server_url.startswith("postgresql") else 3306
    proxy = Proxy(real)
    try:
        config = configure(
            home,
            through(proxy.port, server_url),
            agent={"max_execution_time": 1},
            read_timeout_seconds=1,
            # MariaDB's cancel is a KILL QUERY over a new connection, which waits this
            # long on the silent proxy before the step may end.
            connect_timeout_seconds=1,
        )
        sleep = "SELECT pg_sleep" if server_url.startswith("postgresql") else "SELECT SLEEP"
        watcher = silence_when(server_url, sleep, proxy)
        result = in_thread(lambda: one_step(config, server_url, "sleep_read", {"seconds": 30}))
        watcher.join(HANG)
        assert proxy.silent.is_set()
    finally:
        proxy.close()
    assert result.status == "failed"
    assert result.steps[0].status == "failed"
    assert result.steps[0].error == (
        "step_0 (sleep_read) exceeded its time limit of 1 s (max_execution_time); target "
        "'db' did not answer for 1 s more (targets.db.read_timeout_seconds), so its "
        "connection was closed"
    )


# --- limits a live server enforces --------------------------------------------------------------


def test_a_statement_past_the_step_limit_is_cancelled(home, server_url):
    config = configure(home, server_url, agent={"max_execution_time": 1})
    result = in_thread(lambda: one_step(config, server_url, "sleep_read", {"seconds": 30}))
    assert result.status == "failed"
    assert result.steps[0].error == (
        "step_0 (sleep_read) exceeded its time limit of 1 s (max_execution_time) and was "
        "interrupted"
    )


def test_a_held_lock_ends_in_a_lock_timeout_per_config(home, server_url):
    make_locked_table(server_url)
    config = configure(home, server_url, agent={"max_execution_time": 60}, lock_timeout_ms=1000)
    held = HeldLock(server_url)
    try:
        result = in_thread(lambda: one_step(config, server_url, "count_locked", {}))
    finally:
        held.release()
    assert result.status == "failed"
    error = result.steps[0].error
    assert "lock timeout" in error or "Lock wait timeout exceeded" in error, error
    assert "the lock was still held by" in error


def test_a_sqlite_target_waits_for_a_locked_file_as_configured(home, demo_db):
    """The library waits a slice at a time (targets/sqlitewait.py); the whole wait is
    busy_timeout_ms's, give or take one slice."""
    config = configure(home, "sqlite:///demo.db", busy_timeout_ms=1234)
    target = open_target(config, "db")
    holder = sqlite3.connect(demo_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with target.connect() as conn:
            started = time.monotonic()
            with pytest.raises(DBAPIError, match="database is locked"):
                conn.execute(text("CREATE TABLE waited (id INTEGER)"))
            waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        target.close()
    assert 1.234 <= waited < 1.234 + HANG, waited


# --- the run's own time limit ---------------------------------------------------------------


def test_a_run_past_its_time_limit_stops_resumably_and_resume_completes_it(home, pg_url):
    make_locked_table(pg_url)
    configure(home, pg_url, lock_timeout_ms=60_000)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    # The limit counts planning too: long enough that a loaded machine has begun the
    # step, waiting on the held lock, when it comes.
    data["defaults"] = {"max_run_seconds": 5}
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    held = HeldLock(pg_url)
    try:
        result = in_thread(lambda: one_step(config, pg_url, "count_locked", {}))
    finally:
        held.release()
    assert result.status == "interrupted"
    assert result.error == (
        f"interrupted by the run-time limit of 5 s (defaults.max_run_seconds in {path}); "
        f"continue with `aishell resume {result.run_id}`"
    )
    assert result.steps[0].status == "interrupted"
    resumed = in_thread(lambda: commands.resume_run(config, result.run_id))
    assert resumed.status == "completed", resumed.error
    assert resumed.steps[0].output == {"n": 3}


def test_the_run_time_limit_comes_from_schedule_then_agent_then_defaults(home):
    config = configure(home, "sqlite:///demo.db", agent={"max_run_seconds": 600})
    agent_file = home / "config" / "agents" / "maintenance.yaml"
    assert config.run_limit("maintenance") == (
        600,
        f"maintenance_agent.default_config.max_run_seconds in {agent_file}",
    )
    assert config.run_limit("backup") == (
        4 * 3600,
        f"defaults.max_run_seconds in {home / 'config' / 'aishell.yaml'}",
    )
    assert config.run_limit("maintenance", 90, "the schedule") == (90, "the schedule")


def test_a_schedule_keeps_its_own_run_time_limit_and_its_next_run_resumes(home, pg_url):
    # The resume must finish within the same limit, its connects included: long enough
    # for a quick run of one table on a loaded machine.
    make_locked_table(pg_url)
    config = configure(home, pg_url, lock_timeout_ms=60_000)
    result = CliRunner().invoke(
        cli,
        [
            *("schedule", "add", "nightly", "--cron", "0 2 * * *", "--max-run-time", "3s"),
            *("--", "maintenance", "--type", "quick"),
        ],
    )
    assert result.exit_code == 0, result.output
    (schedule,) = commands.list_schedules(config)
    assert schedule["options"]["max_run_seconds"] == 3
    # Reads go on; ANALYZE waits for the lock until the run's time is up.
    blocker = engine(pg_url).connect()
    blocker.execute(text("BEGIN"))
    blocker.execute(text("LOCK TABLE locked IN SHARE MODE"))
    try:
        stopped = in_thread(lambda: commands.run_schedule(config, "nightly"))
    finally:
        blocker.execute(text("ROLLBACK"))
        blocker.close()
    assert stopped.status == "interrupted", stopped.error
    assert stopped.error.startswith(
        "interrupted by the run-time limit of 3 s (the schedule's --max-run-time); "
    )
    again = in_thread(lambda: commands.run_schedule(config, "nightly"))
    first = commands.show_run(config, stopped.run_id)
    assert first["status"] == "completed", first["error"]
    assert again.status == "completed", again.error


# --- config errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("read_timeout_seconds", 0, "input should be greater than or equal to 1 (got 0)"),
        ("write_timeout_seconds", -5, "input should be greater than or equal to 1 (got -5)"),
        ("read_timeout_seconds", float("nan"), "input should be a finite number (got nan)"),
        ("connect_timeout_seconds", 0, "input should be greater than or equal to 1 (got 0)"),
        ("busy_timeout_ms", -1, "input should be greater than or equal to 1 (got -1)"),
    ],
)
def test_a_bad_timeout_is_one_line_naming_the_key(home, key, value, expected):
    configure(home, "sqlite:///demo.db", load=False, **{key: value})
    result = CliRunner().invoke(cli, ["targets", "list"])
    assert result.exit_code == 2
    path = home / "config" / "aishell.yaml"
    assert result.output == f"Error: {path}: targets.db.{key}: {expected}\n"


# 0.25: below the one second --max-run-time takes; the config's bounds are the flag's.
@pytest.mark.parametrize("value", [0, -1, 0.25, float("nan")])
def test_a_bad_run_time_limit_is_one_line_naming_the_key(home, value):
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["defaults"] = {"max_run_seconds": value}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(home=home)
    message = str(err.value)
    assert message.startswith(f"{path}: defaults.max_run_seconds: input should be ")
    assert "\n" not in message


def test_the_run_time_limit_counts_planning_too(edit_config, demo_db):
    # A model that takes longer to draft than the whole run may last: the run starts
    # already out of time and stops before its first step, resumably.
    script = Script(
        answers=[
            {
                "agent": "maintenance",
                "summary": "statistics",
                "steps": [
                    {
                        "tool": "update_table_statistics",
                        "params": {"table": "users"},
                        "rationale": "as asked",
                    }
                ],
            }
        ],
        delay=1.5,
    )
    with fake_ollama(script) as host:
        config = edit_config(
            {"planner": {"llm": {"host": host, "model": "planner-test", "tries": 1}}}
        )
        result = commands.run_job(
            config,
            "maintenance",
            {"type": "quick", "tables": ["users"]},
            planner="llm",
            review=lambda _preview: True,
            approver=PreApproved(),
            max_run_seconds=1,
        )
    assert result.status == "interrupted"
    assert result.error == (
        "interrupted by the run-time limit of 1 s (--max-run-time); "
        f"continue with `aishell resume {result.run_id}`"
    )
    assert [s.status for s in result.steps] == ["pending"]
    resumed = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error


@pytest.mark.parametrize("command", [["run", "maintenance"], ["run", "backup"], ["resume", "x"]])
def test_max_run_time_is_checked_as_a_duration(home, demo_db, command):
    result = CliRunner().invoke(cli, [*command, "--max-run-time", "soon"])
    assert result.exit_code == 2
    assert "--max-run-time" in result.output and "soon" in result.output


def test_the_run_time_limit_cancels_the_running_statement_on_the_server(home, server_url):
    # A read that would go on for minutes: past the run's limit the server cancels it
    # (psycopg's cancel; KILL QUERY on MariaDB), the run ends interrupted at once, and
    # nothing of it keeps running on the server.
    use_target(home, server_url)
    config = slow_read_tool(home, scale=100)
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    plan = one_step_plan("maintenance", "db", dialect, "long_count", {"floor": 1})
    # Long enough for the step to start on a loaded machine; the read lasts minutes.
    result = in_thread(
        lambda: commands.apply_plan(config, plan, approver=PreApproved(), max_run_seconds=5)
    )
    assert result.status == "interrupted"
    assert result.error.startswith("interrupted by the run-time limit of 5 s (--max-run-time)")
    assert result.steps[0].status == "interrupted"
    database = server_url.rsplit("/", 1)[1]
    busy = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND state = 'active' "
        "AND query LIKE :marker AND pid <> pg_backend_pid()"
        if dialect == "postgresql"
        else "SELECT count(*) FROM information_schema.processlist WHERE db = :db "
        "AND info LIKE :marker AND id <> CONNECTION_ID()"
    )
    marker = f"%{MARKER[dialect]}%"
    with engine(server_url).connect() as conn:
        assert conn.execute(text(busy), {"db": database, "marker": marker}).scalar() == 0


def _session(conn: Any, mariadb: bool) -> tuple[bool, float]:
    """The session's read-only flag and statement limit in seconds, as the server has them."""
    if conn.dialect.name == "postgresql":
        read_only = conn.execute(text("SHOW default_transaction_read_only")).scalar() == "on"
        ms = conn.execute(text("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"))
        return read_only, int(ms.scalar()) / 1000
    access = "tx_read_only" if mariadb else "transaction_read_only"
    limit = "max_statement_time" if mariadb else "max_execution_time"
    row = conn.execute(text(f"SELECT @@session.{access}, @@session.{limit}")).one()
    return bool(row[0]), float(row[1]) / (1 if mariadb else 1000)


def test_a_step_session_changes_only_what_changes_in_one_round_trip(server_url):
    """Read-only and the statement limit: sent only when they change, together when both
    do; the server then refuses a write in a read-only step and allows it after."""
    from sqlalchemy import event

    from aishell.targets.access import session_access

    with engine(server_url).connect() as conn:
        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
        conn.execute(text("CREATE TABLE session_probe (id int)"))
        sent: list[str] = []
        counting = [False]

        def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            if counting[0]:
                sent.append(statement)

        event.listen(conn, "before_cursor_execute", count)
        for read_only, seconds, statements in (
            (True, 5, 1),  # both change: one statement
            (True, 5, 0),  # nothing changes
            (False, 7, 1),
            (False, 9, 1),  # the limit only
            (True, 9, 1),  # read-only only
            (False, 11, 1),
        ):
            sent.clear()
            counting[0] = True
            session_access(conn, read_only, False, seconds)
            counting[0] = False
            assert len(sent) == statements, sent
            assert _session(conn, mariadb) == (read_only, seconds)
            insert = text("INSERT INTO session_probe VALUES (1)")
            if read_only:
                with pytest.raises(Exception, match="(?i)read.only"):
                    conn.execute(insert)
            else:
                conn.execute(insert)


def _silent_in_a_forked_child(home: Path, answers: Any) -> None:
    """In a forked child: a statement that outwaits the read timeout, on a new target."""
    try:
        target = open_target(load_config(home=home), "db")
        with target.connect() as conn:
            conn.execute(text("SELECT pg_sleep(20)"))
        answers.put("answered")
    except TargetSilent as exc:
        answers.put(f"silent: {exc}")
    except BaseException as exc:  # handed back to the test
        answers.put(f"{type(exc).__name__}: {exc}")


def test_statements_in_a_forked_child_are_still_bounded(home, pg_url):
    """The watchdog that bounds statements is one thread a process; a child forked
    while the parent's was running has none of its threads, and starts its own."""
    import multiprocessing

    config = configure(home, pg_url, read_timeout_seconds=1)
    target = open_target(config, "db")
    with target.connect() as conn:  # the parent's watchdog thread is running now
        conn.execute(text("SELECT 1"))
    fork = multiprocessing.get_context("fork")
    answers = fork.SimpleQueue()
    child = fork.Process(target=_silent_in_a_forked_child, args=(home, answers))
    child.start()
    child.join(HANG)
    alive = child.is_alive()
    if alive:
        child.kill()
    target.close()
    assert not alive
    answer = answers.get()
    assert answer.startswith("silent: ") and "read_timeout_seconds" in answer, answer
