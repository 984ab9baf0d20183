"""What the model planner costs besides the model's own thinking.

Plans the same full maintenance job of the demo database three ways, median of N
(default 31): by the agent's rules (the baseline); by the model planner with an
answer at once from a local server speaking the Ollama API (catalog summary, prompt,
HTTP through the `ollama` client, validation); and by the model planner from the
plan cache. The model's own time is left out: a real model adds seconds to minutes,
which is what the cache saves on every night after the first.

    python bench/planner.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aishell import commands  # noqa: E402
from aishell.config.models import load_config  # noqa: E402
from aishell.state.store import StateStore  # noqa: E402
from aishell.targets.demo import create_demo  # noqa: E402
from tests.fake_ollama import Script, fake_ollama  # noqa: E402

JOB = {"type": "full"}


def median_ms(runs: int, plan: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        plan()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aishell-bench-"))
    try:
        shutil.copytree(REPO / "config", home / "config")
        create_demo(home / "demo.db", log_rows=20_000)
        rules_config = load_config(home=home)
        # The model's answer: the rules' own plan, so both validate the same steps.
        steps = commands.make_plan(rules_config, "maintenance", JOB).steps
        answer = {
            "summary": "full maintenance",
            "steps": [
                {k: v for k, v in s.to_dict().items() if k not in ("id", "always_run")}
                for s in steps
            ],
        }
        script = Script(answers=[answer] * (args.runs + 1))
        with fake_ollama(script) as host:
            path = home / "config" / "aishell.yaml"
            data = yaml.safe_load(path.read_text())
            data["planner"] = {"llm": {"host": host, "model": "planner-test"}}
            path.write_text(yaml.safe_dump(data))
            config = load_config(home=home)

            def fresh() -> None:
                with StateStore(config.state_url) as store:
                    store.forget_plans()
                commands.make_plan(config, "maintenance", JOB, planner="llm")

            rules = median_ms(args.runs, lambda: commands.make_plan(config, "maintenance", JOB))
            drafted = median_ms(args.runs, fresh)
            cached = median_ms(
                args.runs, lambda: commands.make_plan(config, "maintenance", JOB, planner="llm")
            )
        print(f"full maintenance of the demo ({len(steps)} steps), median of {args.runs}:")
        print(f"  rules (baseline)                 {rules:8.1f} ms")
        print(f"  model, answered at once          {drafted:8.1f} ms  ({drafted / rules:.2f}x)")
        print(f"  model, from the plan cache       {cached:8.1f} ms  ({cached / rules:.2f}x)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
