"""What starting the command line costs: `aishell --help` against a bare Python start.

Each run is a new process (nothing imported yet; the bytecode cache is warm, as after
installing), alternating between
  baseline  python -c pass
  aishell   python -m aishell --help (what the `aishell` script runs: aishell.cli:main)
and prints the minimum and median of each, the difference, and the ratio. It also lists
the heavy libraries a --help process imported (none is the aim).

    python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = (
    "sqlalchemy",
    "ollama",
    "prometheus_client",
    "sqlglot",
    "pydantic",
    "rich",
    "yaml",
    "tenacity",
    "httpx",
)
BASELINE = [sys.executable, "-c", "pass"]
AISHELL = [sys.executable, "-m", "aishell", "--help"]


def env() -> dict[str, str]:
    # This checkout's aishell, whatever is installed.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env(), stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


PROBE = """
import json, sys
from aishell.cli import cli
try:
    cli(["--help"], prog_name="aishell")
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))))
"""


def heavy_imports() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY)],
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    once(AISHELL)  # compile this checkout's bytecode once, as an install does
    base: list[float] = []
    ours: list[float] = []
    for _ in range(args.runs):
        base.append(once(BASELINE))
        ours.append(once(AISHELL))
    b, o = min(base), min(ours)
    print(f"{args.runs} runs each, alternating; Python {sys.version.split()[0]}")
    print(
        f"baseline `python -c pass`:         min {b * 1000:7.1f} ms  "
        f"median {statistics.median(base) * 1000:7.1f} ms"
    )
    print(
        f"`python -m aishell --help` (cold): min {o * 1000:7.1f} ms  "
        f"median {statistics.median(ours) * 1000:7.1f} ms"
    )
    print(f"aishell over the bare start:       {(o - b) * 1000:7.1f} ms   ratio {o / b:.1f}x")
    print(f"heavy libraries --help imported:   {', '.join(heavy_imports()) or 'none'}")


if __name__ == "__main__":
    main()
