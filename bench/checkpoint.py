"""What checkpointing every step costs: the state store against no store at all.

Runs the same plan of N one-statement steps twice in this process, for a step that
reads (count_table_rows on a small table) and for one that writes
(update_table_statistics: ANALYZE of it):
  baseline  the tools called directly, one after another, on one connection;
  aishell   the executor with its state store (WAL, synchronous=FULL, asserted on
            the store's own connection), twice:
            - each step's end committed before the next step begins (its start and
              its statements' audit rows with it): steps.RIDE_SECONDS set to 0;
            - as aishell runs them: these quick steps (a read, a repeatable write on
              a small table) are replayable, and their ends ride with the next
              commit within steps.RIDE_SECONDS;
and prints the per-step overhead in milliseconds and the ratio, and the store's
commits per step (counted); the runs alternate. It also times a run of one step (what
a run costs whatever its length) and the store's commits alone, so the fsync cost of
this disk is visible, and a checkpoint of a step's progress durable (a purge's) against
one that may be redone (a shared step's table done: synchronous=NORMAL for it alone),
and, with --pg-store URL (an empty PostgreSQL database), the same two on a state store
there (synchronous_commit off for the redoable one's transaction alone).
The process's cyclic collector is set as the `aishell` command sets it
(aishell.cli.collect_less).

    python bench/checkpoint.py [--steps N] [--repeat N] [--pg-store URL]
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

from sqlalchemy import event
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.cli import collect_less
from aishell.config.models import load_config
from aishell.plan.model import Plan, Step
from aishell.state import steps as state_steps
from aishell.state.store import StateStore
from aishell.state.values import new_run_id
from aishell.targets.engines import open_target
from aishell.tool.context import ToolContext

KINDS = {"read": "count_table_rows", "write": "update_table_statistics"}
# How each step's end commits: before the next step begins, or riding (the default).
ENDS = {"each end committed": 0.0, "ends riding": state_steps.RIDE_SECONDS}


def make_plan(steps: int, tool: str = "count_table_rows") -> Plan:
    return Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "bench"},
        tuple(Step(f"step_{i}", tool, {"table": "t"}) for i in range(steps)),
    )


def baseline(config, plan: Plan) -> float:
    registry = commands.load_catalog(config)
    target = open_target(config, None)
    conn = target.connect()
    ctx = ToolContext(conn, "sqlite", "demo", quote_identifier=target.quote)
    impl = registry.get(plan.steps[0].tool).implementation("sqlite")
    started = time.perf_counter()
    for step in plan.steps:
        # A tool's answers are cached per step (handlers.cached), as the executor does:
        # one context shared by every step would count the table only once.
        ctx.step_cache = {}
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


def durability(url: str) -> str:
    """The store's journal mode and synchronous setting, as its connection has them;
    refuses to measure anything less than durable."""
    with StateStore(url) as store:
        mode = store._conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = store._conn.exec_driver_sql("PRAGMA synchronous").scalar()
        store._conn.rollback()
    assert mode == "wal" and sync == 2, f"journal_mode={mode}, synchronous={sync}: not durable"
    return "WAL, synchronous=FULL (asserted)"


def commits_per_step(config, steps: int, tool: str) -> float:
    """The store's commits per step, counted as sqlite sees them (COMMIT statements on
    the store's connections): a run of `steps` + 1 steps against a run of one."""
    state_file = config.state_url.removeprefix("sqlite:///")
    counted: list[str] = []

    def trace(dbapi, _record) -> None:
        if not isinstance(dbapi, sqlite3.Connection):
            return
        if dbapi.execute("PRAGMA database_list").fetchall()[0][2] == state_file:
            dbapi.set_trace_callback(lambda sql: counted.append(sql) if sql == "COMMIT" else None)

    event.listen(Engine, "connect", trace)
    try:
        with_store(config, make_plan(1, tool))
        one = len(counted)
        with_store(config, make_plan(steps + 1, tool))
        return (len(counted) - 2 * one) / steps
    finally:
        event.remove(Engine, "connect", trace)


def commits_alone(url: str, count: int) -> float:
    """Seconds per durable commit of one small row, as the store makes them."""
    with StateStore(url) as store:
        run_id = new_run_id()
        started = time.perf_counter()
        for i in range(count):
            store.record_event(run_id, i, "bench", {})
        return (time.perf_counter() - started) / count


def progress_saves(url: str, count: int, durable: bool) -> float:
    """Seconds per checkpoint of a step's progress (a shared step's table done): durable,
    as a purge's batch needs it, or redoable, as a step of VACUUMs saves it."""
    with StateStore(url) as store:
        run_id = new_run_id()
        started = time.perf_counter()
        for i in range(count):
            store.save_progress(run_id, 0, {"done": list(range(i))[-50:]}, durable=durable)
        return (time.perf_counter() - started) / count


def measure(config, steps: int, repeat: int, tool: str) -> dict[str, float]:
    plan = make_plan(steps, tool)
    base: list[float] = []
    ours: list[float] = []
    single: list[float] = []
    for _ in range(repeat):  # alternating, so that a busy moment hits both
        base.append(baseline(config, plan))
        ours.append(with_store(config, plan))
        single.append(with_store(config, make_plan(1, tool)))
    b, o, one = statistics.median(base), statistics.median(ours), statistics.median(single)
    return {
        "baseline": b,
        "ours": o,
        "one": one,
        "per_step": (o - b) / steps * 1000,
        # What each step adds once the run exists: the run's own start and end
        # (catalog, store, lock, target) are paid once, whatever its length.
        "further": (o - one) / (steps - 1) * 1000,
        "commits": commits_per_step(config, 20, tool),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg-store", help="an empty PostgreSQL database for a state store")
    args = parser.parse_args()
    # The collector as the `aishell` command sets it, for the runs made in this process.
    collect_less()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["AISHELL_HOME"] = tmp
        conn = sqlite3.connect(home / "demo.db")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        conn.commit()
        conn.close()
        config = load_config(home=home)
        with_store(config, make_plan(3))  # warm up: imports, schema creation
        durable = durability(config.state_url)
        found = {}
        for kind, tool in KINDS.items():
            for ends, ride in ENDS.items():
                state_steps.RIDE_SECONDS = ride
                found[kind, ends] = measure(config, args.steps, args.repeat, tool)
        commit = commits_alone(config.state_url, 500)
        saves = {
            durable: statistics.median(
                progress_saves(config.state_url, 200, durable) for _ in range(args.repeat)
            )
            for durable in (True, False)
        }
        on_server = {
            durable: statistics.median(
                progress_saves(args.pg_store, 200, durable) for _ in range(args.repeat)
            )
            for durable in (True, False)
            if args.pg_store
        }
    print(
        f"{args.steps} steps, median of {args.repeat}; state store: SQLite "
        f"{sqlite3.sqlite_version}, {durable}; Python {sys.version.split()[0]}"
    )
    for (kind, ends), f in found.items():
        b, o, steps = f["baseline"], f["ours"], args.steps
        print(f"one-statement steps that {kind} ({KINDS[kind]}), {ends}:")
        print(f"  baseline (no store): {b * 1000:8.1f} ms  ({b / steps * 1000:.3f} ms/step)")
        print(f"  with the store:      {o * 1000:8.1f} ms  ({o / steps * 1000:.3f} ms/step)")
        print(f"  overhead per step:   {f['per_step']:8.3f} ms   ratio {o / b:.1f}x")
        print(
            f"  a run of one step:   {f['one'] * 1000:8.1f} ms; each further step "
            f"{f['further']:.3f} ms (its overhead {f['further'] - b / steps * 1000:.3f} ms)"
        )
        print(f"  the store commits {f['commits']:g} times per step")
        # The aim is net of the disk: the overhead less the durable commits it makes.
        own = f["per_step"] - f["commits"] * commit * 1000
        print(f"  aishell's own work per step, net of its commits: {own:.3f} ms (aim 0.5 ms)")
    print(f"one durable commit:  {commit * 1000:8.3f} ms")
    durable, redoable = saves[True] * 1000, saves[False] * 1000
    print(
        f"a shared step's checkpoint of a table done: durable {durable:.3f} ms, "
        f"redoable {redoable:.3f} ms ({redoable / durable:.3f}x)"
    )
    if on_server:
        durable, redoable = on_server[True] * 1000, on_server[False] * 1000
        print(
            f"the same on a PostgreSQL state store: durable {durable:.3f} ms, "
            f"redoable {redoable:.3f} ms ({redoable / durable:.3f}x)"
        )


if __name__ == "__main__":
    main()
