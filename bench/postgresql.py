"""aishell on PostgreSQL: what it adds to the work, and how planning scales.

(a) A full maintenance run over N tables (default 200) through aishell, against
    the very statements that run sent (read back from its statement audit, with
    their parameters) replayed by a bare psycopg loop on an identical database.
(b) Planning a full run plus the health analysis on M tables (default 10,000):
    time and the number of round trips to the server, against M/10 tables, to show
    the round trips do not grow with the number of tables.

Needs the local PostgreSQL (127.0.0.1:5432, trust auth). Creates and drops its own
scratch databases.

    python bench/postgresql.py [--tables N] [--many M]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import yaml
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from aishell.targets.engines import open_target
from aishell.tool.context import ToolContext

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch(template: str | None = None) -> Iterator[str]:
    """A new database; a copy of `template` keeps its object ids, so the statements
    recorded on one copy (oids among their parameters) replay on the other."""
    name = f"aishell_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def populate(database: str, tables: int, rows: int) -> None:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}", autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for i in range(tables):
            c.execute(
                f"CREATE TABLE t{i:05d} (id int PRIMARY KEY, k int NOT NULL, pad text NOT NULL)"
            )
            c.execute(f"CREATE INDEX t{i:05d}_k ON t{i:05d} (k)")
            if rows:
                c.execute(
                    f"INSERT INTO t{i:05d} SELECT g, (g * 7919) % {rows}, repeat('x', 80) "
                    f"FROM generate_series(1, {rows}) g"
                )
                c.execute(f"DELETE FROM t{i:05d} WHERE id % 3 = 0")


def configure(home: Path, database: str) -> object:
    (home / "config" / "agents").mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent / "config"
    data = yaml.safe_load((repo / "aishell.yaml").read_text())
    data["targets"]["db"] = {"url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"}
    data["default_target"] = "db"
    (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(data))
    agent = (repo / "agents" / "maintenance.yaml").read_text()
    (home / "config" / "agents" / "maintenance.yaml").write_text(agent)
    return load_config(home=home)


def replay(database: str, statements: list[dict]) -> float:
    """The same statements, in the same order, through psycopg with nothing around them."""
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}", autocommit=True) as c:
        started = time.perf_counter()
        for s in statements:
            c.execute(s["sql"], s["parameters"] or None)
        return time.perf_counter() - started


def overhead(tables: int, rows: int) -> None:
    with scratch() as original:
        populate(original, tables, rows)
        with scratch(original) as ours, scratch(original) as bare:
            _overhead(ours, bare, tables, rows)


def _overhead(ours: str, bare: str, tables: int, rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = configure(Path(tmp), ours)
        started = time.perf_counter()
        result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
        with_aishell = time.perf_counter() - started
        assert result.status == "completed", result.error
        statements = commands.run_statements(config, result.run_id)
        baseline = replay(bare, statements)
    print(
        f"(a) full maintenance of {tables} tables ({rows} rows each, a third deleted), "
        f"{len(result.steps)} steps, {len(statements)} statements"
    )
    print(f"    bare psycopg loop of the same statements: {baseline:8.2f} s")
    print(f"    aishell run (plan, policy, checkpoints):  {with_aishell:8.2f} s")
    print(f"    ratio {with_aishell / baseline:.3f}x")


@contextmanager
def round_trips(engine_filter: str) -> Iterator[list[int]]:
    count = [0]

    def seen(conn, *_args) -> None:
        if conn.dialect.name == engine_filter:
            count[0] += 1

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield count
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def planning(tables: int) -> tuple[float, int]:
    with scratch() as database, tempfile.TemporaryDirectory() as tmp:
        populate(database, tables, 0)
        config = configure(Path(tmp), database)
        with round_trips("postgresql") as count:
            started = time.perf_counter()
            plan = commands.make_plan(config, "maintenance", {"type": "full"})
            handle = open_target(config, None, read_only=True)
            conn = handle.connect()
            registry = commands.load_catalog(config)
            health = registry.get("analyze_database_health").implementation("postgresql")
            ctx = ToolContext(conn, "postgresql", "db", quote_identifier=handle.quote)
            output = health.run({"tables": [], "check_corruption": True}, ctx)
            took = time.perf_counter() - started
            conn.close()
            handle.close()
        assert len(output["tables"]) == tables and len(plan.steps) == 4 * tables + 2
        return took, count[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--many", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.pop("AISHELL_HOME", None)
    print(f"PostgreSQL on 127.0.0.1; Python {sys.version.split()[0]}")
    overhead(args.tables, args.rows)
    small_time, small_trips = planning(args.many // 10)
    big_time, big_trips = planning(args.many)
    print("(b) planning a full run plus the health analysis")
    print(f"    {args.many // 10:>6} tables: {small_time:6.2f} s, {small_trips} round trips")
    print(f"    {args.many:>6} tables: {big_time:6.2f} s, {big_trips} round trips")


if __name__ == "__main__":
    main()
