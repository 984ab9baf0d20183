"""A verified backup's validation on a PostgreSQL database of many small objects, against
a bare pg_restore of the same archive into a new database, and (with --before) against
an earlier checkout's validation, in one run.

Builds a database (aishell_validation_<pid>, dropped at the end) of --tables tables, each
with a primary key, an index and a few rows: several objects a table, each of which
pg_restore restores and commits on its own. Then alternates, --rounds times:
  aishell   python -m aishell --home H run backup --target db --json (verified: the
            dump, then its validation, which restores it into a scratch database of its
            own and measures it); the validation step's seconds, from the run's JSON
  before    the same with the --before checkout's code (its own home), if given
  bare      pg_restore of that archive into a new database, as a DBA checks a dump
and prints each round, the medians and the ratios of the medians.

    python bench/validation.py [--tables 1500] [--rounds 3] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backup import PG, PG_ADMIN, Aishell, configure, database

NAME = f"aishell_validation_{os.getpid()}"


def build(url: str, tables: int) -> int:
    """`tables` tables of five rows, each with a primary key and an index; how many
    objects the archive's table of contents holds."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text(
                "DO $$ BEGIN FOR i IN 1.." + str(int(tables)) + " LOOP "
                "EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); "
                "EXECUTE format('CREATE INDEX t%s_v ON t%s (v)', i, i); "
                "EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) "
                "FROM generate_series(1, 5) g', i); END LOOP; END $$"
            )
        )
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return tables * 4


def bare_restore(admin: str, archive: Path) -> float:
    with database(admin, f"{NAME}_bare"):
        started = time.perf_counter()
        subprocess.run(
            ["pg_restore", *PG, "--no-owner", "-d", f"{NAME}_bare", str(archive)],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="an earlier checkout: its validation in the rounds too")
    args = parser.parse_args()
    with database(PG_ADMIN, NAME) as url, tempfile.TemporaryDirectory() as tmp:
        objects = build(url, args.tables)
        members = {"aishell": Aishell(Path(tmp) / "now", None)}
        if args.before:
            members["before"] = Aishell(Path(tmp) / "before", None, Path(args.before))
        for member in members.values():
            member.home.mkdir()
            configure(member.home, url)
        archive = Path(tmp) / "plain.dump"
        subprocess.run(
            ["pg_dump", *PG, "-Fc", "-f", str(archive), NAME], check=True, capture_output=True
        )
        print(f"{args.tables} tables, about {objects} objects restored", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in [*members, "bare"]}
        for round_ in range(args.rounds):
            order = [*members, "bare"]
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for name in order:
                if name == "bare":
                    seconds[name].append(bare_restore(PG_ADMIN, archive))
                else:
                    _, steps = members[name].run(verify=True)
                    step = next(v for k, v in steps.items() if k.endswith("validate_backup"))
                    seconds[name].append(step)
            print(
                f"  round {round_ + 1}: "
                + "   ".join(f"{name} {seconds[name][-1]:.2f} s" for name in seconds),
                flush=True,
            )
    medians = {name: statistics.median(found) for name, found in seconds.items()}
    print("\nmedians: " + ", ".join(f"{name} {value:.2f} s" for name, value in medians.items()))
    for name in members:
        print(
            f"{name}'s validation step against the bare restore: "
            f"{medians[name] / medians['bare']:.3f}x"
        )
    if "before" in medians:
        print(f"aishell against before: {medians['aishell'] / medians['before']:.3f}x")


if __name__ == "__main__":
    main()
