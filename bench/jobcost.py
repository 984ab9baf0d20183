"""What one job costs end to end, whatever its work: `aishell run maintenance --type quick
--target T --json` on a tiny SQLite target (two tables of 200 rows), as a new process,
against a bare Python start, and where the difference goes.

Each run is a new process (the bytecode cache warm, as after installing), and each
figure is the minimum of --runs runs:
  baseline  python -c pass
  command   python -m aishell --home H run maintenance --type quick --target T --json
  probe     a script that makes the command's calls itself (commands.run_job's path:
            plan_and_start, build_plan, start_run; then the JSON and the summary) with a
            clock between the phases:
              imports      aishell's CLI and every module the command goes on to use
              config       load_config: the YAML files and their models
              catalog      the tool catalog (tools/*.yaml, checked)
              state store  the signed state store opened (schema checked, key read)
              connect      the target opened and its first connection
              plan         the rules' plan, made on the target's catalog
              run          the steps, each checkpointed in state.db
              report       the run's JSON on stdout and its summary on stderr
              exit         the probe's wall time less its phases and the baseline:
                           the interpreter's finalization (its collections over every
                           object the command made)
and the probe again with gc.freeze() as its last line (finalization then skips the
collections). One run of `python -X importtime` of the command then lists the packages
whose modules took longest to import (their own time, summed).

The environment sets PYTHONDONTWRITEBYTECODE=1: by default every start compiles what it
imports, as the other start-up figures here do. With --bytecode-cache every process
reads and writes a bytecode cache of its own (PYTHONPYCACHEPREFIX in a temporary
folder), as an installed wheel's compiled modules are read.

    python bench/jobcost.py [--runs N] [--bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.backup import child_env  # noqa: E402

PHASES = ("imports", "config", "catalog", "state store", "connect", "plan", "run", "report")
FREEZE = "\nimport gc\ngc.freeze()\n"

PROBE = """
import time
clock = [time.perf_counter()]
import json, sys
from pathlib import Path
from aishell import render
from aishell.cli import cli
from aishell.cli.output import emit_json
from aishell.commands.planner import build_plan
from aishell.commands.starting import circuit_breaker, start_run
from aishell.state.store import signed_store
from aishell.commands.tools import load_catalog
from aishell.config.models import load_config
from aishell.executor import Executor
from aishell.policy.approvers import NonInteractive
from aishell.render import machine
from aishell.targets.engines import open_target
clock.append(time.perf_counter())
home, target = Path(sys.argv[1]), sys.argv[2]
config = load_config(home=home)
clock.append(time.perf_counter())
registry = load_catalog(config)
clock.append(time.perf_counter())
with signed_store(config) as store, circuit_breaker(config, store, target):
    clock.append(time.perf_counter())
    handle = open_target(config, target)
    planning = handle.reading()
    planning.connect().close()
    clock.append(time.perf_counter())
    plan = build_plan(config, registry, planning, "maintenance", {"type": "quick"})
    clock.append(time.perf_counter())
    result = start_run(config, store, registry, plan, handle=handle, approver=NonInteractive())
    clock.append(time.perf_counter())
assert result.status == "completed", result.error
emit_json(machine.run_json(result.to_dict()))
render.run_summary(render.console(True), result)
clock.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(clock, clock[1:])]), file=sys.stderr)
"""


def tiny_home(root: Path) -> tuple[Path, str]:
    """A home with the shipped config and one SQLite target of two 200-row tables."""
    home = root / "home"
    shutil.copytree(REPO / "config", home / "config")
    db = home / "tiny.db"
    conn = sqlite3.connect(db)
    for table in ("orders", "events"):
        conn.execute(f"CREATE TABLE {table} (id integer primary key, note text)")
        conn.executemany(f"INSERT INTO {table} VALUES (?, 'x')", [(i,) for i in range(200)])
    conn.commit()
    conn.close()
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"] = {"tiny": {"url": f"sqlite:///{db}", "environment": "test"}}
    data["default_target"] = "tiny"
    path.write_text(yaml.safe_dump(data))
    return home, "tiny"


def wall(command: list[str], cache: Path | None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        command, env=child_env(cache), capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... failed: {done.stderr[-2000:]}")
    return took, done.stderr


def heaviest_imports(command: list[str], cache: Path | None, top: int) -> list[tuple[str, float]]:
    """The top-level packages whose modules took longest to import, each module's own
    time (not its imports') summed per package (-X importtime)."""
    _, stderr = wall([command[0], "-X", "importtime", *command[1:]], cache)
    spent: dict[str, float] = {}
    for line in stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if found:
            name = found.group(2).split(".")[0]
            spent[name] = spent.get(name, 0.0) + int(found.group(1)) / 1e6
    return sorted(spent.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bytecode-cache", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "pycache" if args.bytecode_cache else None
        home, target = tiny_home(Path(tmp))
        baseline = [sys.executable, "-c", "pass"]
        command = [sys.executable, "-m", "aishell", "--home", str(home), "run", "maintenance"]
        command += ["--type", "quick", "--target", target, "--json"]
        probe = [sys.executable, "-c", PROBE, str(home), target]
        frozen = [sys.executable, "-c", PROBE + FREEZE, str(home), target]
        wall(command, cache)  # the state store made (and the cache written), as a first run
        times: dict[str, list[float]] = {"base": [], "command": [], "probe": [], "frozen": []}
        phases: list[list[float]] = []
        for _ in range(args.runs):  # alternating, so a slow moment of the machine hits all
            times["base"].append(wall(baseline, cache)[0])
            times["command"].append(wall(command, cache)[0])
            took, stderr = wall(probe, cache)
            times["probe"].append(took)
            phases.append(json.loads(stderr.strip().splitlines()[-1]))
            times["frozen"].append(wall(frozen, cache)[0])
        heavy = heaviest_imports(command, cache, 8)
    b, c = min(times["base"]), min(times["command"])
    least = {name: min(run[i] for run in phases) for i, name in enumerate(PHASES)}
    # Per run, not from the minima: a slow moment in one phase would otherwise show here.
    least["exit"] = min(t - sum(run) for t, run in zip(times["probe"], phases, strict=True)) - b
    print(
        f"min of {args.runs} new processes each, alternating; Python "
        f"{sys.version.split()[0]}; {os.cpu_count()} CPUs; "
        + ("a bytecode cache" if cache else "no bytecode cache: every start compiles")
    )

    def line(name: str, values: list[float]) -> str:
        least, median = min(values) * 1000, statistics.median(values) * 1000
        return f"{name:<28}{least:8.1f} ms  (median {median:.1f})"

    print(line("python -c pass", times["base"]))
    print(line("the command", times["command"]) + f"  {c / b:.1f}x, +{(c - b) * 1000:.1f} ms")
    print(line("the probe", times["probe"]))
    print(line("the probe, gc.freeze() last", times["frozen"]))
    print("the probe's phases past the baseline (min of each; share of the command's extra):")
    for name, spent in least.items():
        print(f"  {name:<14}{spent * 1000:8.1f} ms  {spent / (c - b):6.1%}")
    print("slowest imports of the command (modules' own time per package, one run):")
    for name, spent in heavy:
        print(f"  {name:<20}{spent * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
