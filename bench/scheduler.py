"""The scheduler's own overhead: from a trigger's due time to the run's first step,
against the time from calling `aishell run` (commands.run_job) by hand to its first step.

Both start the same job (quick maintenance of a small demo database); the first
step's start is read from the state store in both cases. Median of N (default 7).

    python bench/scheduler.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.state.store import StateStore
from aishell.targets.demo import create_demo

REPO = Path(__file__).resolve().parent.parent
JOB = {"type": "quick", "tables": None, "rebuild_indexes": True}


def first_step_at(config: Config, run_id: str) -> datetime:
    with StateStore(config.state_url) as store:
        steps = store.get_run(run_id)["steps"]
    return datetime.fromisoformat(steps[0]["started_at"])


def by_hand(config: Config) -> float:
    called = datetime.now(UTC)
    result = commands.run_job(config, "maintenance", JOB)
    return (first_step_at(config, result.run_id) - called).total_seconds()


def scheduled(config: Config, runs: int) -> list[float]:
    """One schedule firing every 3 seconds; each run's first step against its due time."""
    commands.add_schedule(
        config,
        "bench",
        "*/3 * * * * *",
        "UTC",
        ["maintenance", "--type", "quick"],
        "maintenance",
        JOB,
        None,
        {},
    )
    stop = threading.Event()
    lines: list[str] = []
    server = threading.Thread(target=commands.serve_schedules, args=(config, lines.append, stop))
    server.start()
    try:
        deadline = time.monotonic() + 3 * runs + 30
        while time.monotonic() < deadline:
            with StateStore(config.state_url) as store:
                done = [r for r in store.schedule_runs("bench", 100) if r["finished_at"]]
            if len(done) >= runs:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        server.join(60)
    latencies = []
    for run in done[:runs]:
        started = first_step_at(config, run["run_id"])
        # The due time: the 3-second mark the trigger fired for.
        due = started.replace(microsecond=0)
        while due.second % 3:
            due -= timedelta(seconds=1)
        latencies.append((started - due).total_seconds())
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shutil.copytree(REPO / "config", home / "config")
        create_demo(home / "demo.db", log_rows=5_000, users=500, orders=2_000)
        config = load_config(home=home)
        by_hand(config)  # warm caches, as the scheduler's first run is not measured apart
        hand = [by_hand(config) for _ in range(args.runs)]
        trig = scheduled(config, args.runs)
    hand_ms, trig_ms = statistics.median(hand) * 1000, statistics.median(trig) * 1000
    print(f"first step after the call, by hand (median of {len(hand)}): {hand_ms:8.1f} ms")
    print(f"first step after the trigger's due time (median of {len(trig)}): {trig_ms:8.1f} ms")
    print(f"scheduler overhead: {trig_ms - hand_ms:+.1f} ms ({trig_ms / hand_ms:.2f}x)")


if __name__ == "__main__":
    main()
