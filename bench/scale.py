"""aishell on PostgreSQL databases of many tables: running and planning against baselines
measured in the same run.

(1) Quick maintenance of N tables (default 5,000 and 20,000), commands.run_job as the
    CLI calls it (planning, the catalog, policy, guard, a checkpoint per step in
    state.db), against the very statements that run sent (its statement audit, with
    their parameters) replayed by a bare psycopg loop on an identical copy of the
    database. Round trips to the target are counted in psycopg's cursors (statements
    the guard sends on a bare cursor included): the steps' own statements, and every
    other one (planning, catalog, lock, session settings), which must be the same for
    both sizes.
(2) `aishell plan maintenance --type quick` of M tables (default 10,000 and 20,000), in
    a child process (planning, preview, the table drawn 200 columns wide): its time
    after start-up, its peak RSS (VmHWM, the interpreter and libraries included)
    and the peak of Python allocations while it plans and draws (tracemalloc, in a
    second child); against one bare catalog query of the same tables by psycopg. The
    same command's wall time with start-up is printed too.

A 20-table run first warms this process up (imports, compiled statements); it is not
counted. The process's cyclic collector is set as the `aishell` command sets it
(aishell.cli.collect_less). Needs the local PostgreSQL (127.0.0.1:5432, trust auth).
Creates aishell_scale_<pid> (and copies of it) and drops them at the end. With
--pairs N, each run size is run N times, each on fresh copies, the bare loop first in
every second pair, and the median ratio is printed.

    python bench/scale.py [--run-sizes 5000,20000] [--plan-sizes 10000,20000] [--rows 100]
                          [--pairs 1]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from aishell.cli import collect_less  # noqa: E402
from bench.audited import pg_resolved  # noqa: E402

ADMIN = "host=127.0.0.1 user=postgres dbname=test"
HOME = Path(tempfile.mkdtemp(prefix="aishell_scale_home_"))
atexit.register(shutil.rmtree, HOME, True)
BATCH = 250  # tables per DO block: each CREATE TABLE holds a few locks to its commit


def dsn(database: str) -> str:
    return f"host=127.0.0.1 user=postgres dbname={database}"


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def database(name: str, template: str | None = None) -> Iterator[str]:
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    admin(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield name
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_tables(name: str, first: int, stop: int, rows: int, key: bool = True) -> None:
    """Tables t00000... with `rows` rows each (and a primary key, unless not `key`),
    BATCH to a DO block."""
    primary = " PRIMARY KEY" if key else ""
    with psycopg.connect(dsn(name), autocommit=True) as conn:
        for start in range(first, stop, BATCH):
            end = min(start + BATCH, stop) - 1
            conn.execute(
                f"""DO $$ BEGIN FOR i IN {start}..{end} LOOP
                EXECUTE format('CREATE TABLE t%s (id int{primary}, k int NOT NULL,
                                                  pad text NOT NULL)', lpad(i::text, 5, '0'));
                EXECUTE format('INSERT INTO t%s SELECT g, g %% 97, repeat(''x'', 60)
                                FROM generate_series(1, {rows}) g', lpad(i::text, 5, '0'));
                END LOOP; END $$"""  # type: ignore[arg-type]
            )
        conn.execute("CHECKPOINT")


def configure(home: Path, name: str, url: str | None = None) -> Path:
    """A home whose default target is the local PostgreSQL's database `name` (or `url`)."""
    (home / "config" / "agents").mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((REPO / "config" / "aishell.yaml").read_text())
    data["targets"]["db"] = {"url": url or f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"}
    data["default_target"] = "db"
    (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(data))
    for agent in (REPO / "config" / "agents").iterdir():
        (home / "config" / "agents" / agent.name).write_text(agent.read_text())
    return home


@contextmanager
def counted(name: str) -> Iterator[list[str]]:
    """Every statement this process sends to database `name` through psycopg."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    sent: list[str] = []

    class Counted(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append(str(query))
            return super().execute(query, params, **kwargs)

    def connected(dbapi: Any, _record: Any) -> None:
        if isinstance(dbapi, psycopg.Connection) and dbapi.info.dbname == name:
            dbapi.cursor_factory = Counted

    event.listen(Pool, "connect", connected)
    try:
        yield sent
    finally:
        event.remove(Pool, "connect", connected)


def run_quick(name: str) -> tuple[float, list[dict[str, Any]], list[str], int, float]:
    """aishell's quick maintenance of database `name`: seconds, the statements it audited,
    every statement it sent, its steps, and the seconds its steps took."""
    from aishell import commands
    from aishell.config.models import load_config
    from aishell.policy.approvers import PreApproved

    # One home for every run, as a DBA's: its state store is made (and migrated) by the
    # first run, the warm-up, not by each run measured.
    config = load_config(home=configure(HOME, name))
    with counted(name) as sent:
        started = time.perf_counter()
        result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
        took = time.perf_counter() - started
    assert result.status == "completed", result.error
    in_steps = sum(step.seconds or 0.0 for step in result.steps)
    audited = commands.run_statements(config, result.run_id)
    return took, audited, sent, len(result.steps), in_steps


def replay(name: str, statements: list[dict[str, Any]]) -> float:
    """The same statements, in the same order, through psycopg with nothing around them."""
    with psycopg.connect(dsn(name), autocommit=True) as conn:
        ready = pg_resolved(conn, statements)
        started = time.perf_counter()
        for sql, values in ready:
            conn.execute(sql, values)
        return time.perf_counter() - started


def running(original: str, tables: int, bare_first: bool = False) -> dict[str, Any]:
    """One pair: aishell's run on one copy, the bare loop of its statements on another;
    with bare_first, the loop of the pair before's statements runs first (on a fresh copy,
    the same statements: each run of quick maintenance plans the same steps)."""
    with database(f"{original}_ours", original) as ours, database(f"{original}_bare", original):
        if bare_first:
            baseline = replay(f"{original}_bare", PAIRED[tables])
        took, audited, sent, steps, in_steps = run_quick(ours)
        if not bare_first:
            baseline = replay(f"{original}_bare", audited)
        PAIRED[tables] = audited
    return {
        "tables": tables,
        "steps": steps,
        "aishell": took,
        "in_steps": in_steps,
        "baseline": baseline,
        "sent": len(sent),
        "own": len(audited),
        "catalog": sum("aishell catalog" in s for s in sent),
        # The run lock is looked at every 10 s of a run (and pooled connections pinged):
        # they follow the run's duration, not its tables.
        "alive": sum(s.strip() == "SELECT 1" for s in sent),
    }


# The statements of the last run of each size, for a pair whose bare loop goes first.
PAIRED: dict[int, list[dict[str, Any]]] = {}


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM): unlike ru_maxrss, not the parent's
    size it was forked at."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def plan_child(home: str, trace: bool) -> None:
    """In the child: plan and draw, as `aishell plan maintenance --type quick` does."""
    from aishell.cli import main

    before = peak_rss_kib()
    out = open(os.devnull, "w")  # noqa: SIM115
    sys.stdout = out
    if trace:
        import tracemalloc

        tracemalloc.start()
    # The entry point the `aishell` command calls, with its process-wide settings.
    sys.argv = ["aishell", "--home", home, "plan", "maintenance", "--type", "quick"]
    started = time.perf_counter()
    try:
        main()
    except SystemExit as done:
        if done.code:
            raise
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    sys.stdout = sys.__stdout__
    rss = peak_rss_kib()
    print(json.dumps({"seconds": took, "rss_kib": rss, "rss_start_kib": before, "peak": peak}))


def plan_figures(name: str) -> dict[str, Any]:
    from aishell.config.models import load_config
    from aishell.state.store import StateStore

    with tempfile.TemporaryDirectory() as tmp:
        home = str(configure(Path(tmp), name))
        # A home in use has its state.db: made here, not by the plan measured.
        StateStore(load_config(home=Path(home)).state_url).close()
        env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
        env.pop("AISHELL_HOME", None)

        def child(*args: str) -> dict[str, Any]:
            done = subprocess.run(
                [sys.executable, __file__, *args, home],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            return figures

        timed = child("--plan-child")
        traced = child("--plan-child-traced")
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "aishell",
                "--home",
                home,
                "plan",
                "maintenance",
                "--type",
                "quick",
            ],
            env=env,
            capture_output=True,
            check=True,
        )
        whole = time.perf_counter() - started
    return {**timed, "peak": traced["peak"], "whole": whole}


def bare_catalog(name: str) -> float:
    """One catalog query of every table's name, row estimate and pages, fetched."""
    with psycopg.connect(dsn(name)) as conn:
        started = time.perf_counter()
        rows = conn.execute(
            "SELECT c.relname, c.reltuples, c.relpages FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()"
        ).fetchall()
        took = time.perf_counter() - started
    assert rows
    return took


def report_run(r: dict[str, Any]) -> None:
    others = r["sent"] - r["own"]
    print(
        f"(1) quick maintenance of {r['tables']:,} tables ({r['steps']:,} steps): "
        f"bare psycopg loop of the same {r['own']:,} statements {r['baseline']:.2f} s, "
        f"aishell {r['aishell']:.2f} s, ratio {r['aishell'] / r['baseline']:.2f}x"
    )
    print(
        f"    outside its steps (planning, catalog, policy, store, report's reads): "
        f"{r['aishell'] - r['in_steps']:.3f} s of {r['aishell']:.2f} s (aim 0.3 s)"
    )
    print(
        f"    overhead per step {(r['aishell'] - r['baseline']) / r['steps'] * 1000:.2f} ms; "
        f"round trips to the target: {r['sent']:,} = {r['own']:,} the steps' own "
        f"({r['own'] / r['tables']:.2f} per table) + {others} others: {r['catalog']} catalog "
        f"queries, {r['alive']} liveness checks (SELECT 1: the run lock every 10 s), "
        f"{others - r['catalog'] - r['alive']} more (planning, lock, sessions)"
    )


def report_pairs(pairs: list[dict[str, Any]]) -> None:
    ratios = [p["aishell"] / p["baseline"] for p in pairs]
    each = ", ".join(f"{r:.2f}x" for r in ratios)
    outside = [p["aishell"] - p["in_steps"] for p in pairs]
    print(
        f"    {pairs[0]['tables']:,} tables, {len(pairs)} pairs (alternating which goes first): "
        f"median ratio {statistics.median(ratios):.2f}x ({each}); "
        f"bare loop median {statistics.median(p['baseline'] for p in pairs):.2f} s, aishell "
        f"{statistics.median(p['aishell'] for p in pairs):.2f} s; outside its steps, median "
        f"{statistics.median(outside):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-sizes", default="5000,20000")
    parser.add_argument("--plan-sizes", default="10000,20000")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument(
        "--pairs", type=int, default=1, help="runs of each run size, alternating which goes first"
    )
    args = parser.parse_args()
    # The collector as the `aishell` command sets it, for the runs made in this process.
    collect_less()
    run_sizes = [int(n) for n in args.run_sizes.split(",") if n]
    plan_sizes = [int(n) for n in args.plan_sizes.split(",") if n]
    print(
        f"PostgreSQL on 127.0.0.1, tables of {args.rows} rows with a primary key; "
        f"Python {sys.version.split()[0]}"
    )
    runs: list[dict[str, Any]] = []
    plans: list[tuple[int, dict[str, Any], float]] = []
    with database(f"aishell_scale_{os.getpid()}_warm") as warm:
        # A small run first warms this process up (imports, compiled statements), as
        # the bare loop needs nothing of the kind; it is not counted.
        add_tables(warm, 0, 20, args.rows)
        run_quick(warm)
    with database(f"aishell_scale_{os.getpid()}") as original:
        made = 0
        for size in sorted(set(run_sizes + plan_sizes)):
            started = time.perf_counter()
            add_tables(original, made, size, args.rows)
            print(f"    ({size:,} tables made, {time.perf_counter() - started:.0f} s)")
            made = size
            if size in plan_sizes:
                figures = plan_figures(original)
                plans.append((size, figures, bare_catalog(original)))
            if size in run_sizes:
                pairs = [running(original, size, bare_first=i % 2 == 1) for i in range(args.pairs)]
                for pair in pairs:
                    report_run(pair)
                runs.append(pairs[0])
                if len(pairs) > 1:
                    report_pairs(pairs)
    for size, p, bare in plans:
        print(
            f"(2) plan of {size:,} tables: {p['seconds']:.2f} s after start-up "
            f"({p['whole']:.2f} s with it), against one bare catalog query of them "
            f"{bare * 1000:.1f} ms ({p['seconds'] / bare:.0f}x); peak RSS "
            f"{p['rss_kib'] / 1024:.0f} MiB ({p['rss_start_kib'] / 1024:.0f} MiB after "
            f"start-up), Python allocations peak {p['peak'] / 2**20:.0f} MiB"
        )
    if len(runs) > 1:
        others = {r["tables"]: r["sent"] - r["own"] - r["alive"] for r in runs}
        same = "the same" if len(set(others.values())) == 1 else "NOT the same"
        shown = ", ".join(f"{n} for {t:,} tables" for t, n in others.items())
        print(f"    round trips besides the steps' own and the liveness checks: {shown}: {same}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--plan-child", "--plan-child-traced"):
        plan_child(sys.argv[2], sys.argv[1] == "--plan-child-traced")
    else:
        main()
