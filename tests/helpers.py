"""Small helpers shared by tests: file digests, raw SQLite looks, damage on purpose."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

from aishell.cli.logs import ROOT, attached
from aishell.config.models import Config, load_config
from aishell.plan.model import Plan, Step
from aishell.terminal import printable
from tests.services import scratch_server, unavailable


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(path: Path, sql: str, *args: object) -> list[tuple]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def corrupt_index(path: Path, table: str = "ledger", rows: int = 400) -> None:
    """A table whose index disagrees with its rows: what integrity_check reports as
    'row N missing from index', made by rewriting the index's definition in place."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER)")
    conn.execute(f"CREATE INDEX {table}_a ON {table} (a)")
    conn.executemany(
        f"INSERT INTO {table} VALUES (?, ?, ?)", [(i, i, rows - i) for i in range(rows)]
    )
    conn.commit()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_schema SET sql = ? WHERE name = ?",
        (f"CREATE INDEX {table}_a ON {table} (b)", f"{table}_a"),
    )
    conn.commit()
    conn.close()


def read_yaml(path: Path) -> Any:
    """A config file's data, read by libyaml: the pure-Python loader takes about 3 ms
    for the shipped config, which hundreds of tests edit."""
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.dump(data, Dumper=yaml.CSafeDumper))


def one_step_plan(agent: str, target: str, dialect: str, tool: str, params: dict) -> Plan:
    """A plan of a single step, to run one tool through the whole executor."""
    return Plan(agent, target, dialect, {"type": tool}, (Step("step_0", tool, params),))


def use_target(home: Path, url: str, **others: str) -> Config:
    """The config with `url` as the default target `db` (and other targets by name)."""
    path = home / "config" / "aishell.yaml"
    data = read_yaml(path)
    data["targets"]["db"] = {"url": url, "environment": "test"}
    for name, other in others.items():
        data["targets"][name] = {"url": other, "environment": "test"}
    data["default_target"] = "db"
    write_yaml(path, data)
    return load_config(home=home)


@contextmanager
def scratch_target(dialect: str, home: Path) -> Iterator[tuple[Config, str]]:
    """A target of the dialect configured under home, made for the test: a new SQLite
    file there, or a new database on the local server, dropped afterwards; yields the
    config and the target's URL."""
    if dialect == "sqlite":
        sqlite3.connect(home / "target.db").close()
        url = f"sqlite:///{home / 'target.db'}"
        yield use_target(home, url), url
        return
    with scratch_server(dialect) as url:
        yield use_target(home, url), url


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of its own at path (made here): a real file system that fills up. One that
    cannot be mounted fails the test (or skips it: see tests/services.unavailable)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# Reads that keep the server busy for seconds without any volatile function.
SLOW_READ = {
    "postgresql": (
        "SELECT count(*) AS n FROM generate_series(1, 40000) a, generate_series(1, 2000) b "
        "WHERE a + b > CAST(:floor AS integer)"
    ),
    "mysql": (
        "SELECT count(*) AS n FROM seq_1_to_40000 a, seq_1_to_3000 b WHERE a.seq + b.seq > :floor"
    ),
}
MARKER = {"postgresql": "generate_series", "mysql": "seq_1_to_40000"}


def slow_read_tool(home: Path, *, idempotent: bool = True, scale: int = 1) -> Config:
    """The home's config with a site tool `long_count` that reads for seconds (times
    `scale`) without writing or calling a volatile function."""
    folder = home / "site_tools"
    folder.mkdir(exist_ok=True)
    tool: dict[str, Any] = {
        "name": "long_count",
        "description": "Counts pairs for a while; a test tool for lost connections.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 120 * scale,
        "idempotent": idempotent,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"floor": {"type": "integer", "description": "Lower bound."}},
            "required": ["floor"],
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"floor": 0}}],
        "implementations": {
            dialect: {"sql": sql.replace("40000", str(40000 * scale))}
            for dialect, sql in SLOW_READ.items()
        },
        # It reads no table of the target.
        "locks": {dialect: [] for dialect in SLOW_READ},
    }
    (folder / "long_count.yaml").write_text(yaml.safe_dump(tool))
    path = home / "config" / "aishell.yaml"
    data = read_yaml(path)
    data["catalog_paths"] = ["site_tools"]
    write_yaml(path, data)
    return load_config(home=home)


def at_once(
    count: int,
    work: Callable[..., Any],
    rounds: list[tuple[Any, ...]],
    context: Any = None,
) -> list[list[Any]]:
    """work(*args) in `count` processes at once, for each args of `rounds` in turn (a
    barrier lines them up before each); each round's results, in no order.

    Spawned unless another multiprocessing context is given (tests/executor/prewarmed.py
    gives its fork server's), never forked from the test process: a fork of it, with its
    threads, can hang in the child. Each process is started once for all the rounds (a
    start imports aishell), in the test's environment and working directory."""
    made = context or multiprocessing.get_context("spawn")
    barrier, results = made.Barrier(count), made.SimpleQueue()
    settle = (dict(os.environ), os.getcwd())
    children = [
        made.Process(target=_at_once_child, args=(work, rounds, barrier, results, settle))
        for _ in range(count)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    hung = [child for child in children if child.is_alive()]
    for child in hung:
        child.kill()
    assert not hung, f"{len(hung)} of {count} processes did not end"
    # A process that died (a barrier broken by another's failure) sent no result.
    failed = [child.exitcode for child in children if child.exitcode != 0]
    assert not failed, f"processes ended with exit codes {failed}"
    by_round: list[list[Any]] = [[] for _ in rounds]
    for _ in range(count * len(rounds)):
        index, result = results.get()
        by_round[index].append(result)
    return by_round


def _at_once_child(
    work: Callable[..., Any],
    rounds: list[tuple[Any, ...]],
    barrier: Any,
    results: Any,
    settle: tuple[dict[str, str], str],
) -> None:
    # A fork server's child starts with the server's environment, not the test's.
    env, cwd = settle
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for index, args in enumerate(rounds):
        barrier.wait(60)
        try:
            results.put((index, work(*args)))
        except Exception as exc:  # handed back to the test
            results.put((index, f"{type(exc).__name__}: {exc}"))


def fill_table(url: str, table: str, rows: int) -> None:
    """A table `table` (id, v) of `rows` rows in url's database."""
    made = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with made.connect() as conn:
            conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v VARCHAR(20))"))
            for i in range(rows):
                conn.execute(text(f"INSERT INTO {table} VALUES (:i, 'row')"), {"i": i})
    finally:
        made.dispose()


class _Lines(logging.Handler):
    """Each message as the serve log writes it after its time."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(printable(record.getMessage()))


@contextmanager
def logged(level: int = logging.INFO) -> Iterator[list[str]]:
    """The lines aishell's loggers pass on while the block runs, from every thread."""
    handler = _Lines()
    with attached(ROOT, handler, level):
        yield handler.lines


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (one the kernel just gave, let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_sql(url: str, *statements: str) -> None:
    """Each statement on the database at url, in autocommit, as another session would."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def config_written(home: Path, file: str, path: list[Any], written: str) -> str:
    """The error of loading the config (and the agent of an agents/ file) once the value
    at `path` in `file` is the YAML text `written`; the test fails if it loads."""
    import pytest

    from aishell.errors import ConfigError

    config_file = home / "config" / file
    data = yaml.safe_load(config_file.read_text())
    holder = data
    for part in path[:-1]:
        holder = holder[part] if isinstance(part, int) else holder.setdefault(part, {})
    holder[path[-1]] = "PLACEHOLDER"
    config_file.write_text(yaml.safe_dump(data).replace("PLACEHOLDER", written))
    with pytest.raises(ConfigError) as refused:
        config = load_config(home=home)
        config.agent(file.removeprefix("agents/").removesuffix(".yaml"))
    return str(refused.value)


@contextmanager
def state_store_busy(config: Config) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction on state.db (a row written) for the block."""
    from aishell.state.faults import sqlite_path
    from aishell.state.store import StateStore

    StateStore(config.state_url).close()
    path = sqlite_path(config.state_url)
    assert path is not None
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE fleet_jobs SET selector = selector")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def fresh_interpreter(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`script` run by a new Python with this checkout on its path, given `args`: what
    a command imports is seen there, not in this process, which has imported it all."""
    repo = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def reached(config: Config, store: Any, target: str, run_id: str = "reachedby01") -> str:
    """Record, as a run does (commands.locks.note_reached), which database `target`
    reaches now; returns it (its backup_identity), for a catalogued backup's manifest."""
    from aishell.commands.locks import note_reached
    from aishell.targets.engines import open_target
    from aishell.targets.identity import backup_identity

    handle = open_target(config, target, read_only=True)
    try:
        note_reached(store, handle, run_id)
        with handle.connect() as conn:
            return backup_identity(conn)
    finally:
        handle.close()


def stored_run(
    store: Any,
    run_id: str,
    target: str,
    tools: list[str],
    *,
    risk: Callable[[str], str] = lambda tool: "safe",
    job_type: str = "quick",
    params: Callable[[int], dict[str, Any]] = lambda index: {},
) -> None:
    """A run recorded in `store` (a StateStore) as a SQLite maintenance run with one
    pending step per tool, in order, each at the risk `risk` gives its tool and with the
    params `params` gives its index: the run the listings and pages read, without
    planning one."""
    store.create_run(
        run_id=run_id,
        agent="maintenance",
        target=target,
        dialect="sqlite",
        job={"type": job_type},
        plan={},
        plan_hash="0" * 64,
        tool_fingerprints={},
        dry_run=False,
        safety_level="strict",
        step_rows=[
            {
                "index": i,
                "step_id": f"step_{i}",
                "tool": tool,
                "risk_level": risk(tool),
                "params": params(i),
            }
            for i, tool in enumerate(tools)
        ],
    )
