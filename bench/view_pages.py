"""What each page of the web view, and `runs list` and `runs show`, cost on a big state
store: one run of 100,000 steps (its first 600 waiting for approval) among 10,000 runs,
and a backup catalog of 50,000 signed rows under 1,000 target names. Each page is asked
for through starlette's TestClient in a process of its own, which prints the page's
time (the least of --rounds) and the peak of Python's allocations while it was made
(tracemalloc), and the process's peak resident size (getrusage). `runs list` is the
first page (50 runs) and `runs list --after` the page after the 4,530th run; `runs
show` is the big run as the command shows it (its first page of steps where the
checkout pages them, else every step).

    python bench/view_pages.py [--rounds N] [--compare CHECKOUT]

--compare measures another checkout (the code before a change) on a home it makes, and
this checkout on a copy of that home, which it upgrades where its schema is newer (the
checkout before would refuse a store this one made or upgraded); it prints each page's
ratio of its time and memory to this checkout's, "n/a" where it has no such page.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUGE_RUN = "h1huge000000"
STEPS = 100_000
RUNS = 10_000
WAITING = 600
BACKUPS = 50_000
BACKUP_TARGETS = 1_000
PAGES = (
    "/",
    "/runs",
    f"/runs/{HUGE_RUN}",
    "/approvals",
    "/backups",
    "runs list",
    "runs list --after",
    "runs show",
)
# The run `runs list --after` goes on from: one of make_home's, the 4,530th listed.
MIDDLE_RUN = f"r{4999:011x}"
# What a checkout without the page prints instead of its figures.
MISSING = 3
# Run in each process: the page asked for once to warm the imports and the store's
# open, then timed; the peak of allocations is of the last round.
PROBE = """
import json, resource, sys, time, tracemalloc
from aishell.config.models import load_config
path, rounds, MISSING = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])
config = load_config(None)
if path.startswith("runs list"):
    from aishell.commands.listings import list_runs
    after = {"after": sys.argv[3]} if path.endswith("--after") else {}
    try:
        ask = lambda: list_runs(config, limit=50, **after)
        ask()
    except TypeError:  # a checkout without --after
        sys.exit(MISSING)
elif path == "runs show":
    from aishell.commands.runs import show_run
    try:  # the first page, where `runs show` pages a run
        from aishell.cli.run_control import STEPS_SHOWN
        ask = lambda: show_run(config, sys.argv[4], limit=STEPS_SHOWN)
    except ImportError:  # every step
        ask = lambda: show_run(config, sys.argv[4])
else:
    from starlette.testclient import TestClient
    from aishell.view.web import make_app
    view = TestClient(make_app(config, None), base_url="http://127.0.0.1:8765",
                      client=("127.0.0.1", 50000))
    def ask():
        answer = view.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        return answer
ask()
best = None
for _ in range(rounds):
    tracemalloc.start()
    started = time.perf_counter()
    answer = ask()
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    best = took if best is None else min(best, took)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = len(answer.content) if hasattr(answer, "content") else len(json.dumps(answer, default=str))
print(json.dumps({"seconds": best, "peak": peak, "rss": rss, "bytes": size}))
"""


def env(checkout: Path, home: Path) -> dict[str, str]:
    found = {**os.environ, "PYTHONPATH": str(checkout), "AISHELL_HOME": str(home)}
    found["AISHELL_SYSTEM_DIR"] = str(home / "no-system-config")
    found.pop("AISHELL_CONFIG", None)
    return found


def initialized_home(home: Path, checkout: Path = REPO) -> dict[str, str]:
    """A new home of the shipped config (`aishell init`), and the environment of a
    process of `checkout` in it."""
    environ = env(checkout, home)
    home.mkdir()
    subprocess.run(
        [sys.executable, "-m", "aishell", "init"],
        env=environ,
        cwd=home,
        check=True,
        capture_output=True,
    )
    return environ


def make_home(home: Path, checkout: Path = REPO) -> None:
    """A home of the shipped config whose store holds the big run and RUNS others, made
    by `checkout` (at its schema)."""
    environ = initialized_home(home, checkout)
    script = f"""
from aishell.config.models import load_config
from aishell.state.signing import load_key
from aishell.state.store import StateStore
config = load_config(None)
with StateStore(config.state_url, key=load_key(config.home)) as store:
    store.create_run(run_id={HUGE_RUN!r}, agent="maintenance", target="demo",
        dialect="sqlite", job={{"type": "quick"}}, plan={{}}, plan_hash="0" * 64,
        tool_fingerprints={{}}, dry_run=False, safety_level="strict",
        step_rows=[{{"index": i, "step_id": f"step_{{i}}", "tool": "analyze_tables",
            "risk_level": "high", "params": {{"tables": ["t"] * 20}}}} for i in range({STEPS})])
    for index in range({WAITING}):
        store.set_step_status({HUGE_RUN!r}, index, "waiting_approval", "a person's yes")
    store.finish_run({HUGE_RUN!r}, "waiting_approval", "waits")
"""
    subprocess.run([sys.executable, "-c", script], env=environ, cwd=home, check=True)
    backup_rows = [sys.executable, "-c", BACKUP_ROWS, str(BACKUPS), str(BACKUP_TARGETS)]
    subprocess.run(backup_rows, env=environ, cwd=home, check=True)
    with sqlite3.connect(home / "state.db") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        row = dict(zip(columns, conn.execute("SELECT * FROM runs").fetchone(), strict=True))
        row["plan"] = json.dumps({"steps": [{"tool": "analyze_tables"}] * 200})
        rows = [
            {
                **row,
                "run_id": f"r{i:011x}",
                "status": "completed",
                "created_at": f"2026-10-{1 + i % 28:02d}T02:{i % 60:02d}:{i % 59:02d}.000+00:00",
            }
            for i in range(RUNS)
        ]
        conn.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES "
            f"({', '.join(':' + c for c in columns)})",
            rows,
        )


# Run in the home: BACKUPS catalog rows, signed with its key as a run signs them, each
# target's rows of one file of the size they record (a stat finds it in place).
BACKUP_ROWS = """
import json, sqlite3, sys
from pathlib import Path
from aishell.config.models import load_config
from aishell.state.seals import seal
from aishell.state.signing import load_key
n, targets = int(sys.argv[1]), int(sys.argv[2])
config = load_config(None)
key = load_key(config.home)
folder = config.home / "bench-backups"
folder.mkdir()
for t in range(targets):
    (folder / f"t{t:04d}.db").write_bytes(b"x" * 4096)
rows = []
for i in range(1, n + 1):
    t = i % targets
    row = {
        "id": i, "target": f"t{t:04d}", "run_id": None, "kind": "full",
        "path": str(folder / f"t{t:04d}.db"), "sha256": "ab" * 32, "size_bytes": 4096,
        "manifest": json.dumps({"hostname": "bench", "tables": {"t": 1}}),
        "created_at": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T03:{i % 60:02d}:00.000+00:00",
        "verified_at": None, "verification": None, "deleted_at": None,
    }
    rows.append({**row, "seal": seal(key, "backup", str(i), row)})
with sqlite3.connect(config.home / "state.db") as conn:
    columns = list(rows[0])
    named = ", ".join(":" + c for c in columns)
    conn.executemany(f"INSERT INTO backups ({', '.join(columns)}) VALUES ({named})", rows)
"""


def measure(checkout: Path, home: Path, path: str, rounds: int) -> dict[str, float] | None:
    """The page's figures in `checkout`; None where the checkout has no such page."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, path, str(rounds), MIDDLE_RUN, HUGE_RUN, str(MISSING)],
        env=env(checkout, home),
        cwd=home,
        capture_output=True,
        text=True,
    )
    if done.returncode == MISSING:
        return None
    if done.returncode:
        sys.exit(f"{path} failed in {checkout}:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout, measured as well")
    parser.add_argument("--home", type=Path, help="a home this script made before, kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = args.home or Path(folder) / "home"
        before_home = home.with_name(home.name + "-before")
        if not home.exists() and args.compare:
            # Made by the checkout before, and copied: this one upgrades its copy.
            make_home(before_home, args.compare.resolve())
            shutil.copytree(before_home, home)
        elif not home.exists():
            make_home(home)
        print(f"{'page':<22} {'ms':>9} {'peak MB':>9} {'rss MB':>8} {'KB sent':>8}", end="")
        print("   before: ms, peak MB; ratio time, memory" if args.compare else "")
        for path in PAGES:
            now = measure(REPO, home, path, args.rounds)
            if now is None:
                sys.exit(f"{path}: this checkout has no such page")
            line = (
                f"{path:<22} {now['seconds'] * 1000:9.1f} {now['peak'] / 2**20:9.2f} "
                f"{now['rss'] / 2**20:8.1f} {now['bytes'] / 1024:8.1f}"
            )
            if args.compare:
                line += compared(
                    measure(args.compare.resolve(), before_home, path, args.rounds), now
                )
            print(line, flush=True)


def compared(then: dict[str, float] | None, now: dict[str, float]) -> str:
    """The figures of the checkout before, and the ratios of its time and memory."""
    if then is None:
        return f"   {'n/a':>9} {'n/a':>8}"
    faster, smaller = then["seconds"] / now["seconds"], then["peak"] / now["peak"]
    line = f"   {then['seconds'] * 1000:9.1f} {then['peak'] / 2**20:8.2f}"
    return line + f"   {faster:6.1f}x {smaller:6.1f}x"


if __name__ == "__main__":
    main()
