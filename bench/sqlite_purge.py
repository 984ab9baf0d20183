"""Purging half of a SQLite log table: aishell's run against one DELETE.

A file of ROWS rows (default 3,000,000; ids in time order, created_at ISO text as
SQLite's datetime() writes it, no index on it), half older than the retention. Each
trial starts from an identical copy of the file and purges the same rows:

- aishell: `run log_cleanup` in this process, timed whole (planning, the count, the
  purge, the report) and its delete_old_records step alone;
- one `DELETE FROM logs WHERE created_at < cutoff` in one transaction;
- the reads a purge makes before it deletes, each alone on the file: `count(*)` of the
  old rows (the count step's) and the read of every value's kind
  (targets.catalog.sqlite_value_kinds: a column of more than one kind is refused,
  since SQLite sorts every number before any text), which the purge makes when it is
  planned and again before its first batch.

Printed, each against its baseline measured in the same run: the whole run / one DELETE
(time), the purge step / one DELETE (rows per second), and the kinds' read / the count.
Trials alternate which goes first; medians and each trial's ratios are printed.

    python bench/sqlite_purge.py [--rows N] [--trials T]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from purge import configure

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.targets.catalog import sqlite_value_kinds

RETENTION_DAYS = 30


def build(path: Path, rows: int) -> None:
    """ROWS rows over 60 days, the oldest first: half older than RETENTION_DAYS."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, msg TEXT)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO logs (id, created_at, msg) SELECT i, "
        "datetime('now', printf('-%d seconds', (? - i) * ? / ?)), 'event ' || i FROM n",
        (rows - 1, rows, 60 * 86400, rows),
    )
    conn.commit()
    conn.close()


def run_aishell(home: Path, path: Path) -> dict[str, Any]:
    config = configure(home, f"sqlite:///{path}")
    job = {"table": "logs", "date_column": "created_at", "retention_days": RETENTION_DAYS}
    started = time.perf_counter()
    result = commands.run_job(config, "log_cleanup", job, approver=PreApproved(how="bench"))
    total = time.perf_counter() - started
    if result.status != "completed":
        raise SystemExit(f"aishell run {result.run_id} ended {result.status}: {result.error}")
    purge = next(s for s in result.steps if s.tool == "delete_old_records")
    return {
        "run_seconds": total,
        "seconds": purge.seconds or 0.0,
        "deleted": int(purge.output["rows_deleted"]),
    }


def run_delete(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    conn.execute("BEGIN")
    deleted = conn.execute(
        "DELETE FROM logs WHERE created_at < datetime('now', ?)", (f"-{RETENTION_DAYS} days",)
    ).rowcount
    conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "deleted": deleted}


def reads(path: Path) -> dict[str, float]:
    """The count step's count and the kinds' read, each timed alone on a warm file."""
    conn = sqlite3.connect(path)
    started = time.perf_counter()
    conn.execute(
        "SELECT count(*) FROM logs WHERE created_at < datetime('now', ?)",
        (f"-{RETENTION_DAYS} days",),
    ).fetchone()
    count = time.perf_counter() - started
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as sa:
        started = time.perf_counter()
        kinds = sqlite_value_kinds(sa, "logs", "created_at")
        kinds_seconds = time.perf_counter() - started
    engine.dispose()
    assert kinds == {"text"}, kinds
    return {"count": count, "kinds": kinds_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aishell_sqlite_purge_") as tmp:
        source = Path(tmp) / "source.db"
        started = time.perf_counter()
        build(source, args.rows)
        print(
            f"SQLite {sqlite3.sqlite_version}, {args.rows:,} rows built in "
            f"{time.perf_counter() - started:.1f} s; Python {sys.version.split()[0]}"
        )
        ours: list[dict[str, Any]] = []
        single: list[dict[str, Any]] = []
        read: list[dict[str, float]] = []
        for trial in range(args.trials):
            order = ["aishell", "DELETE"] if trial % 2 == 0 else ["DELETE", "aishell"]
            for which in order:
                copy = Path(tmp) / f"{which}-{trial}.db"
                shutil.copyfile(source, copy)
                if which == "aishell":
                    with tempfile.TemporaryDirectory(dir=tmp) as home:
                        ours.append(run_aishell(Path(home), copy))
                else:
                    read.append(reads(copy))
                    single.append(run_delete(copy))
                copy.unlink()
            # The cutoff follows the clock: the later of the two may take a row or two
            # more (rows are 60 days / ROWS apart); more than that is another purge.
            if abs(ours[-1]["deleted"] - single[-1]["deleted"]) > max(10, args.rows // 10_000):
                raise SystemExit(
                    f"aishell deleted {ours[-1]['deleted']:,} rows, the DELETE "
                    f"{single[-1]['deleted']:,}: not the same rows"
                )
            print(
                f"trial {trial + 1}: aishell run {ours[-1]['run_seconds']:.2f} s, step "
                f"{ours[-1]['seconds']:.2f} s; DELETE {single[-1]['seconds']:.2f} s; count "
                f"{read[-1]['count']:.2f} s, kinds {read[-1]['kinds']:.2f} s"
            )
        _report(ours, single, read)


def _report(
    ours: list[dict[str, Any]], single: list[dict[str, Any]], read: list[dict[str, float]]
) -> None:
    def median(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    ours_rate = statistics.median(o["deleted"] / o["seconds"] for o in ours)
    single_rate = statistics.median(s["deleted"] / s["seconds"] for s in single)
    run_s, delete_s = median(ours, "run_seconds"), median(single, "seconds")
    count_s, kinds_s = median(read, "count"), median(read, "kinds")
    pairs = list(zip(ours, single, strict=True))
    each_run = ", ".join(f"{o['run_seconds'] / s['seconds']:.3f}x" for o, s in pairs)
    each_step = ", ".join(
        f"{(o['deleted'] / o['seconds']) / (s['deleted'] / s['seconds']):.3f}x" for o, s in pairs
    )
    each_read = ", ".join(f"{r['kinds'] / r['count']:.2f}x" for r in read)
    print(f"{ours[0]['deleted']:,} rows deleted by aishell; medians of {len(ours)} trials:")
    print(
        f"  whole run / one DELETE (time): {run_s:.2f} s / {delete_s:.2f} s = "
        f"{run_s / delete_s:.3f}x ({each_run})"
    )
    print(
        f"  purge step / one DELETE (rows per second): {ours_rate:,.0f} / {single_rate:,.0f} "
        f"= {ours_rate / single_rate:.3f}x ({each_step})"
    )
    print(
        f"  the kinds' read / the count: {kinds_s:.2f} s / {count_s:.2f} s = "
        f"{kinds_s / count_s:.2f}x ({each_read})"
    )


if __name__ == "__main__":
    main()
