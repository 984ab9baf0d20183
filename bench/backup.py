"""aishell's full backup against the bare dump tool on the same database, on PostgreSQL
(`pg_dump -Fc`) and MariaDB (`mariadb-dump` with the flags aishell uses), in one run;
and its validation against a bare restore.

Builds a database of about --megabytes MB on each server (aishell_backup_<pid>, dropped
at the end), dumps it once to warm the caches, then times alternating pairs:
  aishell     run backup --no-verify, in this process: plan, free-space check, the dump
              streamed into its file with the sha256 and row counts read on the way,
              fsync, rename, manifest
  baseline    the bare tool writing a file of the same database
(the first pair aishell first, the next the baseline first, ...), and prints each pair,
the median of the ratios and the median times. pg_dump syncs its file to disk before it
exits (its default, --no-sync turns it off), as aishell does; mariadb-dump only writes
to its stdout. So on MariaDB the baseline's file is then synced (fsync) and timed
apart: the pairs are printed against the dump made durable (like for like) and against
the bare dump alone. Then, once each:
  validation  validate_backup (sha256, restore into a scratch database, counts and
              checksums compared)
  baseline    the bare restore of the baseline's file into a new database

    python bench/backup.py [--megabytes 300] [--pairs 5] [--engines postgresql,mariadb]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.plan.model import Plan, Step

REPO = Path(__file__).resolve().parent.parent
NAME = f"aishell_backup_{os.getpid()}"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
MY = ["-h", "127.0.0.1", "-P", "3306", "--protocol=TCP", "-u", "root"]
MY_DUMP = ["mariadb-dump", "--single-transaction", "--routines", "--triggers", "--events"]
BYTES_PER_ROW = 160
T = TypeVar("T")


@contextmanager
def database(admin_url: str, name: str) -> Iterator[str]:
    """A new database of this name, dropped afterwards; yields its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    pg = admin_url.startswith("postgresql")
    quoted = f'"{name}"' if pg else f"`{name}`"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}{' WITH (FORCE)' if pg else ''}"))
        admin.dispose()


def build(url: str, megabytes: float) -> int:
    """An events table of about `megabytes` and a small one; returns the data's size."""
    rows = int(megabytes * 1e6 / BYTES_PER_ROW)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if url.startswith("postgresql"):
            conn.execute(
                text("CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, body text)")
            )
            conn.execute(
                text(
                    "INSERT INTO events SELECT g, now() - g * interval '1 second', "
                    "md5(g::text) || md5((g * 7)::text) || repeat('x', 60) "
                    f"FROM generate_series(1, {rows}) g"
                )
            )
            conn.execute(text("CREATE TABLE small (id int PRIMARY KEY, name text)"))
            conn.execute(
                text("INSERT INTO small SELECT g, 'n' || g FROM generate_series(1, 1000) g")
            )
            conn.execute(text("VACUUM ANALYZE"))
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        else:
            conn.execute(
                text("CREATE TABLE events (id bigint PRIMARY KEY, at datetime, body text)")
            )
            for low in range(1, rows + 1, 200_000):
                high = min(rows, low + 199_999)
                conn.execute(
                    text(
                        "INSERT INTO events SELECT seq, now() - INTERVAL seq SECOND, "
                        "CONCAT(MD5(seq), MD5(seq * 7), REPEAT('x', 60)) "
                        f"FROM seq_{low}_to_{high}"
                    )
                )
            conn.execute(text("CREATE TABLE small (id int PRIMARY KEY, name text)"))
            conn.execute(text("INSERT INTO small SELECT seq, CONCAT('n', seq) FROM seq_1_to_1000"))
            conn.execute(text("ANALYZE TABLE events, small"))
            size = conn.execute(
                text(
                    "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()"
                )
            ).scalar()
    engine.dispose()
    return int(size or 0)


def configure(home: Path, url: str) -> Config:
    (home / "config").mkdir(parents=True, exist_ok=True)
    for source in (REPO / "config").rglob("*"):
        if source.is_file():
            copy = home / "config" / source.relative_to(REPO / "config")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def timed(work: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    done = work()
    return time.perf_counter() - started, done


def bare(argv: list[str], out: Path | None = None) -> float:
    """Run the tool (into out, if given); the seconds an fsync of out then takes."""
    if out is None:
        subprocess.run(argv, check=True, capture_output=True)
        return 0.0
    with out.open("wb") as handle:
        subprocess.run(argv, check=True, stdout=handle, stderr=subprocess.PIPE)
        started = time.perf_counter()
        os.fsync(handle.fileno())
        return time.perf_counter() - started


def pairs(
    engine: str, config: Config, baseline: Callable[[Path], float], tmp: Path, count: int
) -> tuple[list[float], list[float], list[float], str]:
    """Alternating pairs of aishell's backup and the baseline; the baseline's times with
    its file synced, and without (the bare tool's alone); the last backup's path."""
    ours: list[float] = []
    theirs: list[float] = []
    unsynced: list[float] = []
    kept = ""
    for i in range(count):
        plain = tmp / f"plain-{i}"

        def backup() -> str:
            result = commands.run_job(config, "backup", {"type": "full", "verify": False})
            assert result.status == "completed", result.error
            return str(result.steps[1].output["backup_path"])

        order = ("aishell", "baseline") if i % 2 == 0 else ("baseline", "aishell")
        for which in order:
            if which == "aishell":
                seconds, path = timed(backup)
                ours.append(seconds)
                if kept:
                    Path(kept).unlink(missing_ok=True)
                    Path(kept + ".manifest.json").unlink(missing_ok=True)
                kept = str(path)
            else:
                seconds, synced = timed(partial(baseline, plain))
                theirs.append(seconds)
                unsynced.append(seconds - synced)
                plain.unlink(missing_ok=True)
        bare_tool = (
            f"   (bare tool {unsynced[-1]:.3f} s, ratio {ours[-1] / unsynced[-1]:.3f}x)"
            if unsynced[-1] != theirs[-1]
            else ""
        )
        print(
            f"  {engine} pair {i + 1} ({order[0]} first): aishell {ours[-1]:7.3f} s   "
            f"baseline {theirs[-1]:7.3f} s   ratio {ours[-1] / theirs[-1]:.3f}x{bare_tool}",
            flush=True,
        )
    return ours, theirs, unsynced, kept


def _ratios(ours: list[float], theirs: list[float]) -> str:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return (
        f"median ratio {statistics.median(ratios):.3f}x (pairs: "
        + ", ".join(f"{r:.3f}x" for r in ratios)
        + ")"
    )


def validation(config: Config, dialect: str, path: str) -> float:
    plan = Plan(
        "backup",
        "db",
        dialect,
        {"type": "validate"},
        (Step("step_0", "validate_backup", {"backup_path": path}),),
    )
    seconds, checked = timed(lambda: commands.apply_plan(config, plan))
    assert checked.status == "completed", checked.error
    return seconds


def run_engine(engine: str, megabytes: float, count: int) -> list[str]:
    pg = engine == "postgresql"
    admin = PG_ADMIN if pg else MY_ADMIN
    lines: list[str] = []
    with database(admin, NAME) as url, tempfile.TemporaryDirectory() as tmp:
        size = build(url, megabytes)
        config = configure(Path(tmp) / "home", url)
        if pg:
            tool = "pg_dump -Fc (which syncs its file)"

            def baseline(out: Path) -> float:
                return bare(["pg_dump", "-Fc", *PG, "-f", str(out), NAME])
        else:
            tool = "mariadb-dump, its file then synced"

            def baseline(out: Path) -> float:
                return bare([*MY_DUMP, "--hex-blob", *MY, NAME], out)

        warm = Path(tmp) / "warm"
        baseline(warm)  # the caches warm, for both alike
        warm.unlink()
        ours, theirs, unsynced, path = pairs(engine, config, baseline, Path(tmp), count)
        lines.append(
            f"{engine}: {size / 2**20:.0f} MiB of data; backup: "
            f"aishell {statistics.median(ours):.2f} s, "
            f"{tool} {statistics.median(theirs):.2f} s (medians of {count}); "
            + _ratios(ours, theirs)
        )
        if not pg:
            lines.append(
                f"{engine}: against the bare mariadb-dump, its file not synced "
                f"{statistics.median(unsynced):.2f} s: " + _ratios(ours, unsynced)
            )
        print("\n".join(lines), flush=True)
        checked = validation(config, "postgresql" if pg else "mysql", path)
        plain = Path(tmp) / "plain"
        baseline(plain)
        with database(admin, f"{NAME}_restore") as _restored:
            if pg:
                restore = ["pg_restore", *PG, "-d", f"{NAME}_restore", str(plain)]
                restored, _ = timed(lambda: bare(restore))
                how = "pg_restore"
            else:
                with plain.open("rb") as dump:
                    restored, _ = timed(
                        lambda: subprocess.run(
                            ["mariadb", *MY, f"{NAME}_restore"],
                            stdin=dump,
                            check=True,
                            capture_output=True,
                        )
                    )
                how = "mariadb < dump"
        lines.append(
            f"{engine}: validation: aishell {checked:.2f} s, {how} {restored:.2f} s, "
            f"ratio {checked / restored:.3f}x"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=300)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--engines", default="postgresql,mariadb")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; {args.pairs} alternating pairs per engine", flush=True)
    lines: list[str] = []
    for engine in args.engines.split(","):
        lines += run_engine(engine, args.megabytes, args.pairs)
    print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
