"""Planning maintenance of PostgreSQL databases of many tables: round trips, time and
memory of `aishell plan maintenance --type TYPE` (and of a dry run), against the
smallest database and against one bare catalog query, measured in the same run.

For each size (default 200, 2,000 and 10,000 tables of 100 rows, each with a primary
key, analyzed as a database in service is; `--keyless`: without one, so that each table
is one relation) and each maintenance type (default full,
standard, emergency, quick), `aishell plan maintenance --type TYPE` runs in a child
process (planning, every step's preview and estimate, the table drawn 200 columns
wide): its round trips to the target (statements counted in psycopg's cursors, the
guard's included), its time after start-up (and the CPU time it used meanwhile, which
other processes on the machine disturb less) and its peak RSS (VmHWM, the interpreter
and libraries included). Round trips and time are printed against the smallest size's,
and time against one bare psycopg query of every table's name, row estimate and pages.
Each plan is measured --repeat times (default 2): the spread is printed.

`--dry-run-sizes` (default 200,1000) also runs `run maintenance --type full --dry-run`
in a child: its round trips split into the steps' own statements (the run's statement
audit: the corruption check reading each table is the check itself) and all the others
(catalog, estimates, privileges, state), which must not grow with the tables.

`--extensions` installs pgstattuple and amcheck in the database first (the estimates are
then pgstattuple_approx's, the check amcheck's). Needs the local PostgreSQL
(127.0.0.1:5432, trust auth). Creates aishell_fullplan_<pid> and drops it at the end.

    python bench/full_plan.py [--sizes 200,2000,10000] [--types full,standard,emergency,quick]
        [--dry-run-sizes 200,1000] [--repeat 2] [--extensions] [--keyless]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.scale import (  # noqa: E402
    add_tables,
    bare_catalog,
    configure,
    counted,
    database,
    dsn,
    peak_rss_kib,
)


def plan_child(home: str, name: str, kind: str) -> None:
    """In the child: `aishell plan maintenance --type KIND`, its statements counted."""
    with counted(name) as sent:
        took, cpu = timed_plan(home, kind)
    print(json.dumps({"seconds": took, "cpu": cpu, "rss_kib": peak_rss_kib(), "sent": len(sent)}))


def timed_plan(home: str, kind: str) -> tuple[float, float]:
    """`aishell plan maintenance --type KIND` through the entry point the `aishell`
    command calls, with its process-wide settings, its output dropped: its time after
    start-up and the CPU it used meanwhile."""
    from aishell.cli import main

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    sys.argv = ["aishell", "--home", home, "plan", "maintenance", "--type", kind]
    started, cpu = time.perf_counter(), time.process_time()
    try:
        main()
    except SystemExit as done:
        if done.code:
            raise
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    sys.stdout = sys.__stdout__
    return took, cpu


def dry_run_child(home: str, name: str, kind: str) -> None:
    """In the child: a dry run of KIND maintenance as `run --dry-run` makes it."""
    with counted(name) as sent:
        figures = dry_run(home, kind, lambda: len(sent))
    print(json.dumps(figures))


def dry_run(home: str, kind: str, sent: Callable[[], int]) -> dict[str, Any]:
    """A dry run of KIND maintenance as `run --dry-run` makes it: its time, peak RSS, the
    statements `sent()` counts, the steps' own (its statement audit), steps, status."""
    from aishell import commands
    from aishell.config.models import load_config
    from aishell.policy.approvers import PreApproved

    config = load_config(home=Path(home))
    started = time.perf_counter()
    result = commands.run_job(
        config, "maintenance", {"type": kind}, approver=PreApproved(), dry_run=True
    )
    took = time.perf_counter() - started
    count = sent()
    own = len(commands.run_statements(config, result.run_id))
    return {
        "seconds": took,
        "rss_kib": peak_rss_kib(),
        "sent": count,
        "own": own,
        "steps": len(result.steps),
        "status": result.status,
    }


def dry_runs_shown(dries: dict[int, dict[str, Any]], said: str = "round trips") -> None:
    """Each dry run's statements besides the steps' own, and whether they are the same
    at every size."""
    for size, d in dries.items():
        others = d["sent"] - d["own"]
        print(
            f"run maintenance --type full --dry-run, {size:,} tables ({d['steps']:,} steps, "
            f"{d['status']}): {d['sent']:,} {said} = {d['own']:,} the steps' own "
            f"({d['own'] / size:.2f} per table) + {others} others; {d['seconds']:.2f} s, "
            f"{d['rss_kib'] / 1024:.0f} MiB"
        )
    if len(dries) > 1:
        others = {s: d["sent"] - d["own"] for s, d in dries.items()}
        same = "the same" if len(set(others.values())) == 1 else "NOT the same"
        print(f"    dry run {said} besides the steps' own: {others}: {same}")


def child(mode: str, home: str, name: str, kind: str) -> dict[str, Any]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    env.pop("AISHELL_HOME", None)
    done = subprocess.run(
        [sys.executable, __file__, mode, home, name, kind],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} {kind} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def relations(name: str) -> int:
    """Tables and indexes in the schema (pg_class rows; TOAST tables not counted)."""
    with psycopg.connect(dsn(name)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'i')"
        ).fetchone()
    return int(row[0]) if row else 0


def compared(
    runs: list[dict[str, Any]],
    base: list[dict[str, Any]],
    first: int,
    bare: float,
    said: str = "round trips",
) -> str:
    """A size's plans against the smallest size's and one bare read of the catalog: their
    statements, time after start-up, CPU and peak memory."""
    times = [r["seconds"] for r in runs]
    sent = sorted({r["sent"] for r in runs})
    base_time = statistics.median(r["seconds"] for r in base)
    return (
        f"{said} {'/'.join(map(str, sent))} (against {base[0]['sent']} for {first:,} tables: "
        f"{sent[-1] - base[0]['sent']:+d}); {spread(times)} after start-up "
        f"(CPU {spread([r['cpu'] for r in runs])}) "
        f"({statistics.median(times) / base_time:.1f}x the {first:,}-table plan, "
        f"{statistics.median(times) / bare:.0f}x one bare catalog query of "
        f"{bare * 1000:.1f} ms); peak RSS {max(r['rss_kib'] for r in runs) / 1024:.0f} MiB"
    )


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    shown = [f"{v * scale:.2f}" for v in values]
    return f"{statistics.median(values) * scale:.2f} {unit} ({', '.join(shown)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,2000,10000")
    parser.add_argument("--types", default="full,standard,emergency,quick")
    parser.add_argument("--dry-run-sizes", default="200,1000")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--extensions", action="store_true")
    parser.add_argument("--keyless", action="store_true")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",") if n]
    dry_sizes = [int(n) for n in args.dry_run_sizes.split(",") if n]
    kinds = [k for k in args.types.split(",") if k]
    print(
        f"PostgreSQL on 127.0.0.1, tables of {args.rows} rows "
        f"{'without' if args.keyless else 'with'} a primary key, analyzed"
        f"{', pgstattuple and amcheck installed' if args.extensions else ''}; "
        f"Python {sys.version.split()[0]}"
    )
    plans: dict[tuple[str, int], list[dict[str, Any]]] = {}
    dries: dict[int, dict[str, Any]] = {}
    bare: dict[int, float] = {}
    rels: dict[int, int] = {}
    with database(f"aishell_fullplan_{os.getpid()}") as name, tempfile.TemporaryDirectory() as tmp:
        if args.extensions:
            with psycopg.connect(dsn(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pgstattuple")
                conn.execute("CREATE EXTENSION amcheck")
        home = str(configure(Path(tmp), name))
        # A home in use has its state.db: made here, not by the plan measured.
        from aishell.config.models import load_config
        from aishell.state.store import StateStore

        StateStore(load_config(home=Path(home)).state_url).close()
        made = 0
        for size in sorted(set(sizes + dry_sizes)):
            started = time.perf_counter()
            add_tables(name, made, size, args.rows, key=not args.keyless)
            with psycopg.connect(dsn(name), autocommit=True) as conn:
                conn.execute("ANALYZE")
            made = size
            rels[size] = relations(name)
            print(
                f"    ({size:,} tables, {rels[size]:,} relations, made and analyzed in "
                f"{time.perf_counter() - started:.0f} s)"
            )
            if size in sizes:
                bare[size] = min(bare_catalog(name) for _ in range(3))
                for kind in kinds:
                    plans[kind, size] = [
                        child("--plan-child", home, name, kind) for _ in range(args.repeat)
                    ]
                    p = plans[kind, size]
                    print(
                        f"    plan {kind} of {size:,} tables: {p[0]['sent']} round trips, "
                        f"{spread([r['seconds'] for r in p])}, CPU "
                        f"{spread([r['cpu'] for r in p])}, "
                        f"{max(r['rss_kib'] for r in p) / 1024:.0f} MiB"
                    )
            if size in dry_sizes:
                dries[size] = child("--dry-run-child", home, name, "full")
    first = min(sizes)
    for kind in kinds:
        for size in sizes:
            print(
                f"plan maintenance --type {kind}, {size:,} tables ({rels[size]:,} relations): "
                + compared(plans[kind, size], plans[kind, first], first, bare[size])
            )
    dry_runs_shown(dries)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--plan-child":
        plan_child(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "--dry-run-child":
        dry_run_child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
