"""What `aishell metrics --textfile` costs on a big state store: the last run holds
100,000 steps (every tenth a purge, its output counting the rows it deleted; its first
600 waiting for approval) among 10,000 runs. Each measure is a process of its own,
which prints the least time of --rounds and the peak of Python's allocations while the
metrics were made (tracemalloc), and the process's peak resident size (getrusage).

    python bench/metrics_textfile.py [--rounds N] [--compare CHECKOUT]

--compare measures another checkout (the code before a change) on the same home, prints
the ratio of its time and memory to this checkout's, and whether both wrote the same
text (but the oldest approval's wait, which moves with the clock).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.view_pages import env, initialized_home  # noqa: E402

HUGE_RUN = "h1huge000000"
STEPS = 100_000
RUNS = 10_000
WAITING = 600
# Run in each process: the metrics made once to warm the imports, then timed; the peak
# of allocations is of the last round.
PROBE = """
import json, resource, sys, time, tracemalloc
from pathlib import Path
from aishell import commands
from aishell.config.models import load_config
config, rounds, out = load_config(None), int(sys.argv[1]), Path(sys.argv[2])
commands.metrics(config, out)
best = None
for _ in range(rounds):
    tracemalloc.start()
    started = time.perf_counter()
    commands.metrics(config, out)
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    best = took if best is None else min(best, took)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": best, "peak": peak, "rss": rss}))
"""
# The one series whose value moves between two measures.
MOVING = "aishell_approval_oldest_wait_seconds{"


def make_home(home: Path) -> None:
    """A home of the shipped config whose store holds the big run and RUNS others."""
    environ = initialized_home(home)
    script = f"""
from sqlalchemy import insert, select, update, bindparam
from aishell.config.models import load_config
from aishell.state.schema import runs, steps
from aishell.state.seals import seal, step_seal
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.state.values import dumps
config = load_config(None)
key = load_key(config.home)
tools = ["delete_old_records"] + ["analyze_tables"] * 9
with StateStore(config.state_url, key=key) as store:
    store.create_run(run_id={HUGE_RUN!r}, agent="maintenance", target="demo",
        dialect="sqlite", job={{"type": "quick"}}, plan={{}}, plan_hash="0" * 64,
        tool_fingerprints={{}}, dry_run=False, safety_level="strict",
        step_rows=[{{"index": i, "step_id": f"step_{{i}}", "tool": tools[i % 10],
            "risk_level": "high", "params": {{"tables": ["t"] * 20}}}} for i in range({STEPS})])
    for index in range({WAITING}):
        store.set_step_status({HUGE_RUN!r}, index, "waiting_approval", "a person's yes")
    store.finish_run({HUGE_RUN!r}, "waiting_approval", "waits")
    engine = store.engine
with engine.begin() as conn:
    # The steps' ends, and RUNS older runs of 50 targets and 3 agents, written at once
    # and signed with the home's key as the store signs them.
    done = []
    for i in range({WAITING}, {STEPS}):
        out = dumps({{"rows_deleted": i}} if i % 10 == 0 else {{"tables": 20}})
        done.append({{"b_idx": i, "b_out": out,
            "b_os": step_seal(key, {HUGE_RUN!r}, i, "output", out),
            "b_ss": step_seal(key, {HUGE_RUN!r}, i, "status", "completed")}})
    conn.execute(update(steps).where((steps.c.run_id == {HUGE_RUN!r})
        & (steps.c.idx == bindparam("b_idx"))).values(status="completed",
        status_seal=bindparam("b_ss"), output=bindparam("b_out"),
        output_seal=bindparam("b_os")), done)
    row = dict(conn.execute(select(runs)).one()._mapping)
    row["plan"] = dumps({{"steps": [{{"tool": "analyze_tables"}}] * 200}})
    copies = []
    for i in range({RUNS}):
        copy = {{**row, "run_id": f"r{{i:011x}}", "status": "completed",
            "agent": ("maintenance", "backup", "logs")[i % 3], "target": f"db{{i % 50}}",
            "created_at": f"2026-10-{{1 + i % 28:02d}}T02:{{i % 60:02d}}:{{i % 59:02d}}.000+00:00"}}
        copy["seal"] = seal(key, "run", copy["run_id"], copy)
        copies.append(copy)
    conn.execute(insert(runs), copies)
"""
    subprocess.run([sys.executable, "-c", script], env=environ, cwd=home, check=True)


def measure(checkout: Path, home: Path, rounds: int) -> tuple[dict[str, float], list[str]]:
    """The checkout's figures, and the lines of the text it wrote but the moving one."""
    out = home / f"metrics-{abs(hash(str(checkout)))}.prom"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(rounds), str(out)],
        env=env(checkout, home),
        cwd=home,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"metrics failed in {checkout}:\n{done.stderr}")
    lines = [line for line in out.read_text().splitlines() if not line.startswith(MOVING)]
    return json.loads(done.stdout.splitlines()[-1]), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout, measured as well")
    parser.add_argument("--home", type=Path, help="a home this script made before, kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = args.home or Path(folder) / "home"
        if not home.exists():
            make_home(home)
        now, text = measure(REPO, home, args.rounds)
        print(
            f"after:  {now['seconds'] * 1000:9.1f} ms  peak {now['peak'] / 2**20:8.2f} MB  "
            f"rss {now['rss'] / 2**20:7.1f} MB  ({len(text)} lines)"
        )
        if args.compare:
            then, before = measure(args.compare.resolve(), home, args.rounds)
            print(
                f"before: {then['seconds'] * 1000:9.1f} ms  peak {then['peak'] / 2**20:8.2f} MB  "
                f"rss {then['rss'] / 2**20:7.1f} MB  ({len(before)} lines)"
            )
            print(
                f"ratio before/after: time {then['seconds'] / now['seconds']:.1f}x, "
                f"peak memory {then['peak'] / now['peak']:.1f}x, "
                f"rss {then['rss'] / now['rss']:.1f}x; same text: {before == text}"
            )


if __name__ == "__main__":
    main()
