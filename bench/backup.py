"""aishell's full backup of a PostgreSQL database against plain pg_dump -Fc, and its
validation against a bare restore, in one run.

Builds a database of about --gigabytes GB (default 1) in a scratch database, then:
  backup      aishell run backup --no-verify (pg_dump under an exported snapshot,
              row counts in the same snapshot, fsync, rename, sha256, manifest)
  baseline    pg_dump -Fc of the same database to a file
  validation  aishell's validate_backup (sha256, restore into a scratch database,
              row counts and checksums compared)
  baseline    pg_restore of the same file into a new database
and prints the times and the ratios.

    python bench/backup.py [--gigabytes G]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from aishell import commands
from aishell.plan import Plan, Step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postgresql import configure, scratch


def build(database: str, gigabytes: float) -> int:
    rows = int(gigabytes * 1e9 / 160)
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}", autocommit=True) as c:
        c.execute("CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, body text)")
        c.execute(
            "INSERT INTO events SELECT g, now() - g * interval '1 second', "
            "md5(g::text) || md5((g * 7)::text) || repeat('x', 60) "
            f"FROM generate_series(1, {rows}) g"
        )
        c.execute("CREATE TABLE small (id int PRIMARY KEY, name text)")
        c.execute("INSERT INTO small SELECT g, 'n' || g FROM generate_series(1, 1000) g")
        c.execute("VACUUM ANALYZE")
        return int(c.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    args = parser.parse_args()
    with scratch() as database, tempfile.TemporaryDirectory() as tmp:
        size = build(database, args.gigabytes)
        config = configure(Path(tmp), database)
        started = time.perf_counter()
        result = commands.run_job(config, "backup", {"type": "full", "verify": False})
        ours = time.perf_counter() - started
        assert result.status == "completed", result.error
        path = result.steps[1].output["backup_path"]
        plain = Path(tmp) / "plain.dump"
        baseline = timed(
            ["pg_dump", "-Fc", "-h", "127.0.0.1", "-U", "postgres", "-f", str(plain), database]
        )
        plan = Plan(
            "backup",
            "db",
            "postgresql",
            {"type": "validate"},
            (Step("step_0", "validate_backup", {"backup_path": path}),),
        )
        started = time.perf_counter()
        checked = commands.apply_plan(config, plan)
        validation = time.perf_counter() - started
        assert checked.status == "completed", checked.error
        with scratch() as restore_into:
            bare_restore = timed(
                ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "-d", restore_into, str(plain)]
            )
    print(f"PostgreSQL database of {size / 2**30:.2f} GiB; Python {sys.version.split()[0]}")
    print(
        f"backup:     aishell {ours:7.2f} s   pg_dump -Fc {baseline:7.2f} s   "
        f"ratio {ours / baseline:.3f}x"
    )
    print(
        f"validation: aishell {validation:7.2f} s   pg_restore  {bare_restore:7.2f} s   "
        f"ratio {validation / bare_restore:.3f}x"
    )


if __name__ == "__main__":
    main()
