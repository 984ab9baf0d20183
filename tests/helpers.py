"""Small helpers shared by tests: file digests, raw SQLite looks, damage on purpose."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from aishell.config import Config, load_config
from aishell.plan import Plan, Step


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


def one_step_plan(agent: str, target: str, dialect: str, tool: str, params: dict) -> Plan:
    """A plan of a single step, to run one tool through the whole executor."""
    return Plan(agent, target, dialect, {"type": tool}, (Step("step_0", tool, params),))


def use_target(home: Path, url: str, **others: str) -> Config:
    """The config with `url` as the default target `db` (and other targets by name)."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test"}
    for name, other in others.items():
        data["targets"][name] = {"url": other, "environment": "test"}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of its own at path (made here): a real file system that fills up. One that
    cannot be mounted skips the test, and fails it under AISHELL_REQUIRE_SERVICES=1."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("AISHELL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
