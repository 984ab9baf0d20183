"""Run the MySQL/MariaDB tests several times in a row while another process runs the
same tests on the same server at the same time: the same target names, the same
`test` database, the same GET_LOCK namespace. Every run must pass.

    python -m tests.beside [--runs 5] [--select "mysql or mariadb"]

Prints one line per run and exits 1 if any failed. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pytest_command(select: str, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
        *("-n", str(workers), "-k", select, "tests"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--select", default="mysql or mariadb")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "AISHELL_REQUIRE_SERVICES": "1"}
    command = pytest_command(args.select, args.workers)
    quiet = subprocess.DEVNULL
    stop = Path(tempfile.mkdtemp(prefix="aishell-beside-")) / "stop"
    # The other process: the same tests in a loop, for as long as the runs last; it
    # ends after its current round, so that its tests clean up after themselves.
    other = subprocess.Popen(
        ["bash", "-c", 'until [ -e "$0" ]; do "$@" >/dev/null 2>&1; done', str(stop), *command],
        cwd=REPO,
        env=env,
        stdout=quiet,
        stderr=quiet,
    )
    failed = 0
    try:
        for number in range(1, args.runs + 1):
            began = time.monotonic()
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
            lines = (done.stdout or "").strip().splitlines()
            summary = lines[-1] if lines else done.stderr.strip()[-200:]
            seconds = time.monotonic() - began
            print(
                f"run {number}/{args.runs}: exit {done.returncode} in {seconds:.0f}s: {summary}",
                flush=True,
            )
            if done.returncode != 0:
                failed += 1
                print(done.stdout[-4000:], file=sys.stderr)
    finally:
        stop.touch()
        print("waiting for the other process to finish its round", flush=True)
        other.wait()
        stop.unlink()
        stop.parent.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
