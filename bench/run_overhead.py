"""What aishell's orchestration costs on top of the work itself.

Runs `maintenance --type quick` and `--type full` on copies of one demo database
two ways, in this process:
  baseline  the same tools called directly on one connection (no plan, policy,
            catalog checks or state store);
  aishell   commands.run_job: planning, validation, policy, substitution, a
            checkpoint per step in state.db (WAL, synchronous=FULL);
and prints the median of each and the ratio aishell / baseline.

    python bench/run_overhead.py [--log-rows N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from aishell.targets.demo import create_demo
from aishell.targets.engines import open_target
from aishell.tool.context import ToolContext


def plan_of(config, kind: str):
    return commands.plan_job(config, "maintenance", {"type": kind}).plan


def baseline(config, kind: str, plan) -> None:
    """The plan's tools, called directly in plan order, outputs passed by hand."""
    registry = commands.load_catalog(config)
    target = open_target(config, None)
    conn = target.connect()
    ctx = ToolContext(conn, "sqlite", target.name, quote_identifier=target.quote)
    outputs = {}
    for step in plan.steps:
        tool = registry.get(step.tool)
        params = dict(step.params)
        if step.tool == "generate_maintenance_report":
            params["baseline"] = outputs["step_0"]
            params["actions"] = [
                {**a, "output": outputs[a["output"][2 : -len(".output}")]]}
                for a in params["actions"]
            ]
        for name, spec in tool.params.get("properties", {}).items():
            params.setdefault(name, spec.get("default"))
        outputs[step.id] = tool.implementation("sqlite").run(params, ctx)
    conn.close()
    target.close()


def through_aishell(config, kind: str, plan) -> None:
    result = commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved())
    assert result.status == "completed", result.error


def timed(fn, template: Path, home: Path, kind: str) -> float:
    shutil.copyfile(template, home / "demo.db")
    (home / "state.db").unlink(missing_ok=True)
    config = load_config(home=home)
    plan = plan_of(config, kind)  # planned before the clock starts; aishell plans again inside
    started = time.perf_counter()
    fn(config, kind, plan)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["AISHELL_HOME"] = tmp
        template = home / "template.db"
        create_demo(template, log_rows=args.log_rows)
        print(
            f"demo database: {template.stat().st_size / 2**20:.1f} MiB, "
            f"{args.log_rows:,} log rows; median of {args.repeat} runs; "
            f"Python {sys.version.split()[0]}"
        )
        for kind in ("quick", "full"):
            base = [timed(baseline, template, home, kind) for _ in range(args.repeat)]
            ours = [timed(through_aishell, template, home, kind) for _ in range(args.repeat)]
            b, o = statistics.median(base), statistics.median(ours)
            print(
                f"{kind:>5}: baseline {b * 1000:8.1f} ms   aishell {o * 1000:8.1f} ms   "
                f"ratio {o / b:5.2f}x   overhead {(o - b) * 1000:7.1f} ms"
            )


if __name__ == "__main__":
    main()
