"""Previews of PostgreSQL maintenance while another session holds some of its tables:
`aishell plan maintenance --type TYPE` and `aishell run maintenance --type full
--dry-run`, with --held of the tables under ACCESS EXCLUSIVE against the same commands
with none held, measured in the same run (in this process, the statements that ended in
a lock timeout counted).

A preview waits on a held table once (the target's lock wait, 1 s as shipped): its time
over the baseline's, divided by the tables held, is printed in lock waits per table (at
least one: the table is named held only after its lock was not granted).

    python bench/held_preview.py [--tables 25] [--held 20] [--types full,standard,quick]

Needs the local PostgreSQL (127.0.0.1:5432, trust auth). Creates aishell_heldprev_<pid>
and drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.scale import add_tables, configure, database, dsn  # noqa: E402


def timed(call: Callable[[], Any]) -> tuple[float, int]:
    """call()'s seconds and the statements of this process that met a lock timeout."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.exc import DBAPIError

    from aishell.targets.lockholders import is_lock_timeout

    waits = [0]

    def seen(context: Any) -> None:
        error = context.sqlalchemy_exception
        if isinstance(error, DBAPIError) and is_lock_timeout(error):
            waits[0] += 1

    event.listen(Engine, "handle_error", seen)
    try:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started, waits[0]
    finally:
        event.remove(Engine, "handle_error", seen)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=25)
    parser.add_argument("--held", type=int, default=20)
    parser.add_argument("--types", default="full,standard,quick")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aishell-heldprev-"))
    os.environ["AISHELL_HOME"] = str(home)
    os.environ["AISHELL_SYSTEM_DIR"] = str(home / "no-system-config")
    with database(f"aishell_heldprev_{os.getpid()}") as name:
        add_tables(name, 0, args.tables, 100)
        configure(home, name)
        from aishell import commands
        from aishell.config.models import load_config

        config = load_config(home=home)
        previews: dict[str, Callable[[], Any]] = {
            f"plan --type {kind}": (
                lambda kind=kind: commands.plan_job(config, "maintenance", {"type": kind})
            )
            for kind in args.types.split(",")
        }
        previews["run --type full --dry-run"] = lambda: commands.run_job(
            config, "maintenance", {"type": "full"}, dry_run=True
        )
        print(f"{args.tables} tables of 100 rows, {args.held} held; lock wait 1 s")
        for what, call in previews.items():
            alone, _ = timed(call)
            with psycopg.connect(dsn(name)) as holder:
                for i in range(args.held):
                    holder.execute(f"LOCK TABLE t{i:05d} IN ACCESS EXCLUSIVE MODE")  # type: ignore[arg-type]
                held, waits = timed(call)
                holder.rollback()
            per_table = (held - alone) / args.held if args.held else 0.0
            print(
                f"{what:28} none held {alone:6.2f} s  {args.held} held {held:6.2f} s  "
                f"ratio {held / alone:5.2f}x  {per_table:4.2f} s a held table  "
                f"lock timeouts {waits} ({waits / max(args.held, 1):.2f} a held table)"
            )


if __name__ == "__main__":
    main()
