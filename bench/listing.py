"""What a listing command costs to start and answer: `targets list`, `runs list` (on a
state store of 1,000 runs) and `tools list`, each a new process, against a bare Python
start (`python -c pass`) measured in the same run.

The home is made once (`aishell init`, the runs stored), and each command run once
before measuring, so the listings' cache is warm: what every listing after the first
costs while the config and tool files stay unchanged. Runs alternate between the
baseline and the commands; it prints the minimum and median of each, the difference
and the ratio, the least CPU time (user and system) each took, and the heavy libraries a
warm listing imported (none is the aim).

    python bench/listing.py [--runs N] [--bytecode] [--compare CHECKOUT]

--bytecode keeps compiled modules in a folder of their own (PYTHONPYCACHEPREFIX), as an
installed package has them; without it the environment decides (PYTHONDONTWRITEBYTECODE
set: every start compiles aishell's modules). --compare runs another checkout's aishell
(the code before a change) on the same home, alternating with this one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from subprocess import DEVNULL

REPO = Path(__file__).resolve().parent.parent
RUNS = 1_000
COMMANDS = {
    "targets list": ["targets", "list"],
    "runs list": ["runs", "list"],
    "tools list": ["tools", "list"],
}
HEAVY = ("sqlalchemy", "pydantic", "sqlglot", "yaml", "psycopg", "pymysql", "alembic")
PROBE = """
import json, sys
from aishell.cli import cli
try:
    cli(sys.argv[2:], prog_name="aishell")
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))))
"""


def env(checkout: Path, home: Path, pycache: Path | None) -> dict[str, str]:
    found = {**os.environ, "PYTHONPATH": str(checkout), "AISHELL_HOME": str(home)}
    found["AISHELL_SYSTEM_DIR"] = str(home / "no-system-config")
    found.pop("AISHELL_CONFIG", None)
    if pycache is not None:
        found.pop("PYTHONDONTWRITEBYTECODE", None)
        found["PYTHONPYCACHEPREFIX"] = str(pycache)
    return found


# The CPU time (user and system) of each process measured, by command: on a machine
# that other work keeps busy, what a start costs itself, beside the wall time it took.
CPU: dict[str, list[float]] = {}


def once(command: list[str], environ: dict[str, str], label: str = "") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # From the home: `python -m` puts the current folder first on the path, and this one
    # may be another checkout.
    subprocess.run(command, env=environ, cwd=environ["AISHELL_HOME"], stdout=DEVNULL, check=True)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    CPU.setdefault(label, []).append(spent)
    return took


def aishell(*args: str) -> list[str]:
    return [sys.executable, "-m", "aishell", *args]


def make_home(home: Path, environ: dict[str, str]) -> None:
    """A home of the shipped config with RUNS runs in its state store."""
    home.mkdir()
    for words in (["init"], ["runs", "list"]):
        subprocess.run(aishell(*words), env=environ, cwd=home, check=True, capture_output=True)
    store = home / "state.db"
    with sqlite3.connect(store) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        values = {
            "agent": "maintenance",
            "target": "demo",
            "dialect": "sqlite",
            "job": '{"type": "quick"}',
            "plan": "{}",
            "plan_hash": "0" * 64,
            "tool_fingerprints": "{}",
            "dry_run": 0,
            "safety_level": "strict",
            "status": "completed",
            "finished_at": "2026-11-25T02:00:09.000+00:00",
            "pid": 1,
            "hostname": "bench",
            "started_by": "bench",
        }
        rows = [
            {
                **values,
                "run_id": f"{i:012x}",
                "created_at": f"2026-11-{1 + i % 25:02d}T02:{i % 60:02d}:00.000+00:00",
            }
            for i in range(RUNS)
        ]
        names = [c for c in columns if c in rows[0]]
        conn.executemany(
            f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [[row[c] for c in names] for row in rows],
        )


def heavy_imports(args: list[str], environ: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        env=environ,
        cwd=environ["AISHELL_HOME"],
        capture_output=True,
        text=True,
        check=True,
    )
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def line(label: str, times: list[float], cpu: list[float], base: float | None = None) -> str:
    low, middle = min(times), statistics.median(times)
    text = f"{label:<34} min {low * 1000:7.1f} ms  median {middle * 1000:7.1f} ms"
    if base is not None:
        text += f"   +{(low - base) * 1000:6.1f} ms  ratio {low / base:5.1f}x"
    return text + f"   CPU min {min(cpu) * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bytecode", action="store_true")
    parser.add_argument("--compare", type=Path, help="another checkout to run alternating")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aishell-listing-"))
    try:
        pycache = work / "pycache" if args.bytecode else None
        home = work / "home"
        ours = env(REPO, home, pycache)
        make_home(home, ours)
        checkouts = {"": ours}
        if args.compare is not None:
            checkouts[" (compared)"] = env(args.compare.resolve(), home, pycache)
        base: list[float] = []
        times: dict[str, list[float]] = {}
        for suffix, environ in checkouts.items():
            for name, words in COMMANDS.items():
                once(aishell(*words), environ)  # the cache warm, the bytecode compiled
                times[name + suffix] = []
        for _ in range(args.runs):
            base.append(once([sys.executable, "-c", "pass"], ours, "baseline"))
            for suffix, environ in checkouts.items():
                for name, words in COMMANDS.items():
                    times[name + suffix].append(once(aishell(*words), environ, name + suffix))
        compiled = "kept (--bytecode)" if args.bytecode else "as the environment says"
        if not args.bytecode and os.environ.get("PYTHONDONTWRITEBYTECODE"):
            compiled = "none kept (PYTHONDONTWRITEBYTECODE): every start compiles aishell"
        python = sys.version.split()[0]
        print(f"{args.runs} runs each, alternating; Python {python}; bytecode {compiled}")
        print(f"runs list: a state store of {RUNS:,} runs (the newest 50 shown)")
        print(line("baseline `python -c pass`", base, CPU["baseline"]))
        low = min(base)
        for name, measured in times.items():
            print(line(f"`aishell {name}`", measured, CPU[name], low))
        for name, words in COMMANDS.items():
            found = heavy_imports(words, ours)
            print(f"heavy libraries `{name}` imported (warm): {', '.join(found) or 'none'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
