"""What checkpointing every step costs: the state store against no store at all.

Runs the same plan of N one-statement steps (count_table_rows on a small table)
twice in this process:
  baseline  the tools called directly, one after another, on one connection;
  aishell   the executor with its state store (WAL, synchronous=FULL): a
            durable commit when each step starts and ends, and the audit row of
            each statement written before it runs and completed after;
and prints the per-step overhead in milliseconds and the ratio. It also times
the store's commits alone, so the fsync cost of this disk is visible.

    python bench/checkpoint.py [--steps N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aishell import commands
from aishell.config import load_config
from aishell.plan import Plan, Step
from aishell.registry import ToolContext
from aishell.state import StateStore, new_run_id
from aishell.targets import open_target


def make_plan(steps: int) -> Plan:
    return Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "bench"},
        tuple(Step(f"step_{i}", "count_table_rows", {"table": "t"}) for i in range(steps)),
    )


def baseline(config, plan: Plan) -> float:
    registry = commands.load_catalog(config)
    target = open_target(config, None)
    conn = target.connect()
    ctx = ToolContext(conn, "sqlite", "demo", quote_identifier=target.quote)
    impl = registry.get("count_table_rows").implementation("sqlite")
    started = time.perf_counter()
    for step in plan.steps:
        impl.run(step.params, ctx)
    took = time.perf_counter() - started
    conn.close()
    target.close()
    return took


def with_store(config, plan: Plan) -> float:
    started = time.perf_counter()
    result = commands.apply_plan(config, plan)
    took = time.perf_counter() - started
    assert result.status == "completed", result.error
    return took


def commits_alone(url: str, count: int) -> float:
    """Seconds per durable commit of one small row, as the store makes them."""
    with StateStore(url) as store:
        run_id = new_run_id()
        started = time.perf_counter()
        for i in range(count):
            store.record_event(run_id, i, "bench", {})
        return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["AISHELL_HOME"] = tmp
        conn = sqlite3.connect(home / "demo.db")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        conn.commit()
        conn.close()
        config = load_config(home=home)
        plan = make_plan(args.steps)
        with_store(config, make_plan(3))  # warm up: imports, schema creation
        base = [baseline(config, plan) for _ in range(args.repeat)]
        ours = [with_store(config, plan) for _ in range(args.repeat)]
        commit = commits_alone(config.state_url, 500)
    b, o = statistics.median(base), statistics.median(ours)
    per_step = (o - b) / args.steps * 1000
    print(
        f"{args.steps} steps, median of {args.repeat}; state store: SQLite "
        f"{sqlite3.sqlite_version}, WAL, synchronous=FULL; Python {sys.version.split()[0]}"
    )
    print(f"baseline (no store): {b * 1000:8.1f} ms  ({b / args.steps * 1000:.3f} ms/step)")
    print(f"with the store:      {o * 1000:8.1f} ms  ({o / args.steps * 1000:.3f} ms/step)")
    print(f"overhead per step:   {per_step:8.3f} ms   ratio {o / b:.1f}x")
    print(
        f"one durable commit:  {commit * 1000:8.3f} ms "
        "(2 per one-statement step: its start with the audit row, its end)"
    )


if __name__ == "__main__":
    main()
