"""Purging half of a log table: aishell's batches against one DELETE and pt-archiver.

A table of ROWS rows (default 5,000,000; ids in time order, as a log table fills),
half of them older than the retention. Each trial starts from an identical fresh
copy of the table and purges the same rows:

- aishell: `run log_cleanup`, timed whole (from the call: start-up, planning, the
  estimates before and after, the purge and the report) and its delete_old_records
  step alone;
- a single `DELETE FROM logs WHERE created_at < cutoff`;
- a bare batch loop: the statements aishell's purge step sent, read back from its
  statement audit with their parameters, replayed by the driver (psycopg, PyMySQL) in
  one session at the isolation level aishell's batches run (READ COMMITTED; on MySQL
  again at REPEATABLE READ, as the loop ran before the twentieth boot), committing
  after each DELETE as aishell's batches do. Against it, aishell's step shows its own
  cost (checkpoints, sizing, progress, the guard and the audit); against the single
  DELETE, the batch loop shows what deleting in committed batches costs the server;
- on MariaDB, pt-archiver --purge --bulk-delete --commit-each, with --limit equal to
  aishell's mean batch (the same batch size), and again with --limit 1000.
  pt-archiver works on MySQL only: on PostgreSQL the comparison is not made, and the
  output says so.

On PostgreSQL aishell's run keeps its VACUUM (ANALYZE) after the purge, and the single
DELETE is followed by one VACUUM (ANALYZE), timed apart: the whole run is also printed
against the two together. aishell runs with the job's default walk (`walk: auto`: key
ranges there, the ids following the pages' order); each trial also runs it with `walk:
pages`, the page walk (PostgreSQL 14+), for its purge step's rows per second. Printed
too: the page walk's look for old rows left past its pages (timed from the statement
audit) and its step without it, the longest batch, and the writer's p99 over the whole
run. --date-index indexes created_at; --timestamp makes it a TIMESTAMP on MySQL (the
cutoff then read in the session's time zone, which each batch reads again).

Printed, each against its baseline measured in the same run: the whole run / one
DELETE (time), the purge step / one DELETE (rows per second), the purge step / the
bare batch loop and the batch loop / one DELETE (rows per second), what is not the purge
(start-up, planning, estimates, report; on PostgreSQL its VACUUM too) as a share of the
purge step, and pt-archiver
/ aishell (time). The scratch database is aishell_purge_<pid>, dropped at the end.

During aishell's purge, the batch loop and the single DELETE a second session, in a
process of its own as an application's is, writes to the same table in a loop (insert
a new row, update a random row that is kept) and every write's latency is recorded.
Each trial (TRIALS, default 3) runs the three, each on its fresh copy, the first of
them in turn; medians are printed, and beside the ratios of the medians, each trial's
own ratios (its three runs follow each other within a minute, where the server's speed
drifts between trials) and their median.

    python bench/purge.py [--rows N] [--trials T] [--only postgresql|mysql] [--date-index]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from aishell import commands
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MYSQL_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"
RETENTION_DAYS = 30
# The older half of the rows is 31 to 60 days old, the newer half 0 to 29 days: the
# same rows are older than the cutoff however long the benchmark takes.
PAYLOAD = "GET /api/v1/orders?page=17 200 12ms user=4711 trace=0af7651916cd43dd8448eb211c80319c"


@contextmanager
def scratch(dialect: str) -> Iterator[str]:
    name = f"aishell_purge_{os.getpid()}"
    admin_url = PG_ADMIN if dialect == "postgresql" else MYSQL_ADMIN
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        quoted = f'"{name}"' if dialect == "postgresql" else f"`{name}`"
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if dialect == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        admin.dispose()


def build_source(
    engine: Engine, rows: int, date_index: bool = False, timestamp: bool = False
) -> None:
    """logs_src: ids in time order, the older half past the retention (with
    `date_index`, an index on created_at, which the fresh copies take; with `timestamp`,
    on MySQL created_at is a TIMESTAMP, read in the session's time zone, not a DATETIME)."""
    half = rows // 2
    age = {"half": half, "step": 29 * 86_400 / half, "gap": (RETENTION_DAYS + 1) * 86_400}
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE TABLE logs_src (id bigint PRIMARY KEY, created_at timestamp NOT "
                    "NULL, level text NOT NULL, message text NOT NULL)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO logs_src SELECT g, localtimestamp - make_interval(secs => "
                    "CASE WHEN g <= :half THEN :gap + (:half - g) * :step "
                    "ELSE (:rows - g) * :step + 60 END), "
                    "(ARRAY['INFO','WARN','DEBUG','ERROR'])[1 + g % 4], :payload "
                    "FROM generate_series(1, :rows) g"
                ),
                {"rows": rows, "payload": PAYLOAD, **age},
            )
        else:
            conn.execute(
                text(
                    "CREATE TABLE logs_src (id bigint PRIMARY KEY, created_at "
                    + ("timestamp(6)" if timestamp else "datetime(6)")
                    + " NOT NULL, level varchar(8) NOT NULL, message varchar(200) NOT NULL) "
                    "ENGINE=InnoDB"
                )
            )
            conn.execute(text("SET SESSION max_recursive_iterations = 100000000"))
            step = 100_000
            for start in range(1, rows + 1, step):
                conn.execute(
                    text(
                        "INSERT INTO logs_src WITH RECURSIVE s(g) AS (SELECT :a UNION ALL "
                        "SELECT g + 1 FROM s WHERE g < :b) SELECT g, NOW(6) - INTERVAL "
                        "(CASE WHEN g <= :half THEN :gap + (:half - g) * :step "
                        "ELSE (:rows - g) * :step + 60 END) SECOND, "
                        "ELT(1 + g % 4, 'INFO', 'WARN', 'DEBUG', 'ERROR'), :payload FROM s"
                    ),
                    {
                        "a": start,
                        "b": min(start + step - 1, rows),
                        "rows": rows,
                        "payload": PAYLOAD,
                        **age,
                    },
                )

    if date_index:
        with engine.begin() as conn:
            conn.execute(text("CREATE INDEX logs_src_created_at ON logs_src (created_at)"))


def fresh_copy(engine: Engine) -> None:
    """logs: an identical, freshly written copy of logs_src."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS logs"))
        if engine.dialect.name == "postgresql":
            conn.execute(text("CREATE TABLE logs (LIKE logs_src INCLUDING ALL)"))
            conn.execute(text("INSERT INTO logs SELECT * FROM logs_src"))
        else:
            conn.execute(text("CREATE TABLE logs LIKE logs_src"))
            conn.execute(text("INSERT INTO logs SELECT * FROM logs_src"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE logs" if _pg(engine) else "ANALYZE TABLE logs"))
        if _pg(engine):
            conn.execute(text("CHECKPOINT"))


def _pg(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class Writer:
    """A session writing to logs in a loop, in a process of its own as an application
    is (so it takes no share of this process's interpreter lock): one insert of a new
    row, one update of a random kept row; each write's latency in milliseconds."""

    def __init__(self, url: str, rows: int) -> None:
        self.latencies: list[float] = []
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=_write_in_a_loop,
            args=(url, rows, self._stop, self._ready, self._results),
            daemon=True,
        )

    def __enter__(self) -> Writer:
        self._process.start()
        if not self._ready.wait(60):
            self._process.kill()
            raise SystemExit("the writer process did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.latencies = self._results.get(timeout=60)
        self._process.join(timeout=60)

    def p99(self) -> float:
        return percentile(self.latencies, 99)

    def worst(self) -> float:
        return max(self.latencies, default=float("nan"))


def _write_in_a_loop(url: str, rows: int, stop: Any, ready: Any, results: Any) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    now = "localtimestamp" if engine.dialect.name == "postgresql" else "NOW(6)"
    insert = text(f"INSERT INTO logs VALUES (:id, {now}, 'INFO', 'written during purge')")
    update = text("UPDATE logs SET level = 'WARN' WHERE id = :id")
    rng = random.Random(7)
    next_id = rows  # new rows take the next ids, as from a sequence
    latencies: list[float] = []
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        ready.set()
        while not stop.is_set():
            next_id += 1
            for statement, values in (
                (insert, {"id": next_id}),
                (update, {"id": rng.randint(rows // 2 + 1, rows)}),
            ):
                t0 = time.perf_counter()
                conn.execute(statement, values)
                latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)
    engine.dispose()
    results.put(latencies)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def cutoff(engine: Engine) -> Any:
    now = "localtimestamp" if _pg(engine) else "NOW(6)"
    with engine.connect() as conn:
        return conn.execute(
            text(
                f"SELECT {now} - INTERVAL '{RETENTION_DAYS} days'"
                if _pg(engine)
                else f"SELECT {now} - INTERVAL {RETENTION_DAYS} DAY"
            )
        ).scalar_one()


def remaining_old(engine: Engine, limit: Any) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM logs WHERE created_at < :c"), {"c": limit}
            ).scalar_one()
        )


def run_aishell(home: Path, url: str, rows: int, walk: str | None = None) -> dict[str, Any]:
    """`walk`: the job's walk; None: its default."""
    config = configure(home, url)
    job: dict[str, Any] = {
        "table": "logs",
        "date_column": "created_at",
        "retention_days": RETENTION_DAYS,
    }
    if walk is not None:
        job["walk"] = walk
    if not url.startswith("postgresql"):
        job["statistics_after_rows"] = 10**12  # MySQL: the purge alone
    # PostgreSQL: the run's VACUUM (ANALYZE) after the purge too, against one DELETE
    # and one VACUUM (ANALYZE).
    with Writer(url, rows) as writer:
        started = time.perf_counter()
        result = commands.run_job(config, "log_cleanup", job, approver=PreApproved(how="bench"))
        total = time.perf_counter() - started
    if result.status != "completed":
        raise SystemExit(f"aishell run {result.run_id} ended {result.status}: {result.error}")
    purge = result.steps[1]
    sent = driver_statements(home, result.run_id, purge.index)
    return {
        "statements": sent,
        "deleted": purge.output["rows_deleted"],
        "seconds": purge.seconds,
        "run_seconds": total,
        "estimated": result.steps[0].output["older_rows"],
        "how": result.steps[0].output.get("how", "counted"),
        "batches": purge.output["batches"],
        # The step's statements a batch, as its audit holds them (no COMMIT).
        "sent_per_batch": len(sent) / max(purge.output["batches"], 1),
        "longest_batch_ms": purge.output["longest_batch_ms"],
        "walk": purge.output.get("walk", "keys"),
        "look_seconds": look_seconds(sent),
        "vacuum_seconds": sum(s.seconds or 0 for s in result.steps[3:]),
        "median_batch_ms": purge.output["median_batch_ms"],
        "p99_ms": writer.p99(),
        "worst_ms": writer.worst(),
        "writes": len(writer.latencies),
    }


def driver_statements(home: Path, run_id: str, index: int) -> list[dict[str, Any]]:
    """The step's statements as aishell handed them to the driver (`%(name)s`), with
    their values, from the run's statement audit in the state store."""
    store = sqlite3.connect(f"{(home / 'state.db').as_uri()}?mode=ro", uri=True)
    try:
        rows = store.execute(
            "SELECT sql, parameters, started_at, finished_at FROM statements "
            "WHERE run_id = ? AND step_idx = ? AND error IS NULL ORDER BY id",
            (run_id, index),
        ).fetchall()
    finally:
        store.close()
    return [
        {
            "sql": sql,
            "parameters": json.loads(p) if p else None,
            "seconds": _seconds(started, finished),
        }
        for sql, p, started, finished in rows
    ]


def _seconds(started: str | None, finished: str | None) -> float:
    if not started or not finished:
        return 0.0
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def look_seconds(statements: list[dict[str, Any]]) -> float:
    """The page walk's look for old rows left past its pages (a read of the table)."""
    return sum(
        s["seconds"]
        for s in statements
        if s["sql"].startswith('SELECT "id" FROM "logs" WHERE "created_at"')
    )


def run_delete(url: str, rows: int) -> dict[str, Any]:
    engine = create_engine(url)
    limit = cutoff(engine)
    vacuum = 0.0
    with Writer(url, rows) as writer:
        started = time.perf_counter()
        with engine.begin() as conn:
            deleted = conn.execute(
                text("DELETE FROM logs WHERE created_at < :c"), {"c": limit}
            ).rowcount
        seconds = time.perf_counter() - started
        if _pg(engine):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                started = time.perf_counter()
                conn.execute(text("VACUUM (ANALYZE) logs"))
                vacuum = time.perf_counter() - started
    engine.dispose()
    return {
        "deleted": deleted,
        "seconds": seconds,
        "vacuum_seconds": vacuum,
        "p99_ms": writer.p99(),
        "worst_ms": writer.worst(),
        "writes": len(writer.latencies),
    }


def _driver_connection(url: str) -> Any:
    """A plain driver session on the scratch database, committing only when told."""
    database = url.rsplit("/", 1)[1]
    if url.startswith("postgresql"):
        return psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", database=database)


def run_batch_loop(
    url: str, rows: int, statements: list[dict[str, Any]], isolation: str = "READ COMMITTED"
) -> dict[str, Any]:
    """aishell's purge step's statements, replayed in one session at the isolation level
    its batches run (READ COMMITTED; on MySQL also REPEATABLE READ, the driver's default,
    which the loop ran before the twentieth boot): a commit after each DELETE, as each of
    aishell's batches commits."""
    conn = _driver_connection(url)
    deleted = 0
    try:
        cursor = conn.cursor()
        if url.startswith("mysql"):
            cursor.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
        with Writer(url, rows) as writer:
            started = time.perf_counter()
            for statement in statements:
                if '"logs"' not in statement["sql"] and "`logs`" not in statement["sql"]:
                    continue  # the catalog's (the guard's, the walk's sizes): not a batch's
                cursor.execute(statement["sql"], statement["parameters"] or None)
                if statement["sql"].lstrip().upper().startswith(("DELETE", "WITH")):
                    deleted += cursor.rowcount
                    conn.commit()
            conn.commit()
            seconds = time.perf_counter() - started
    finally:
        conn.close()
    return {"deleted": deleted, "seconds": seconds, "writes": len(writer.latencies)}


def run_pt_archiver(url: str, limit_rows: int) -> dict[str, Any]:
    engine = create_engine(url)
    limit = cutoff(engine)
    before = remaining_old(engine, limit)
    database = url.rsplit("/", 1)[1]
    command = [
        "pt-archiver",
        "--source",
        f"h=127.0.0.1,P=3306,u=root,D={database},t=logs",
        "--purge",
        "--where",
        f"created_at < '{limit:%Y-%m-%d %H:%M:%S.%f}'",
        "--bulk-delete",
        "--limit",
        str(limit_rows),
        "--commit-each",
        "--no-check-charset",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    deleted = before - remaining_old(engine, limit)
    engine.dispose()
    return {"deleted": deleted, "seconds": seconds, "limit": limit_rows}


def configure(home: Path, url: str) -> Any:
    repo = Path(__file__).resolve().parent.parent / "config"
    if not (home / "config").exists():
        shutil.copytree(repo, home / "config")
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test"}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    # Half the table goes, and its estimate may come out a little over half: past the
    # default max_share (50%), which no flag approves. The benchmark allows 60%.
    agent = home / "config" / "agents" / "log_cleanup.yaml"
    settings = yaml.safe_load(agent.read_text())
    settings["log_cleanup_agent"]["safety_constraints"] = [
        {"type": "purge_limits", "min_retention_days": 7, "max_share": 0.6}
    ]
    agent.write_text(yaml.safe_dump(settings))
    return load_config(home=home)


def median_of(trials: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(t[key]) for t in trials)


def paired(
    ours: list[dict[str, Any]], loops: list[dict[str, Any]], single: list[dict[str, Any]]
) -> None:
    """Each trial's ratios, from runs next to each other in time, and their medians."""
    whole = [a["run_seconds"] / d["seconds"] for a, d in zip(ours, single, strict=True)]
    step = [d["seconds"] / a["seconds"] for a, d in zip(ours, single, strict=True)]
    loop = [d["seconds"] / b["seconds"] for b, d in zip(loops, single, strict=True)]

    def shown(values: list[float]) -> str:
        each = ", ".join(f"{v:.3f}x" for v in values)
        return f"median {statistics.median(values):.3f}x ({each})"

    print(f"  each trial's own: whole run against the DELETE {shown(whole)}")
    print(f"  each trial's own: purge step rows/s against the DELETE's {shown(step)}")
    print(f"  each trial's own: bare batch loop rows/s against the DELETE's {shown(loop)}")


def walks_compared(
    ours: list[dict[str, Any]],
    paged: list[dict[str, Any]],
    single: list[dict[str, Any]],
    deleted: int,
) -> None:
    """PostgreSQL: the default walk against one DELETE plus one VACUUM (ANALYZE), and the
    page walk's purge step beside it, each trial's own ratios and their medians."""

    def shown(values: list[float]) -> str:
        each = ", ".join(f"{v:.3f}x" for v in values)
        return f"median {statistics.median(values):.3f}x ({each})"

    pairs = list(zip(ours, single, strict=True))
    base = [d["seconds"] + d["vacuum_seconds"] for d in single]
    print(
        f"  one DELETE + one VACUUM (ANALYZE) {statistics.median(base):8.2f} s (VACUUM "
        f"{median_of(single, 'vacuum_seconds'):.2f} s); aishell's VACUUM (ANALYZE) step "
        f"{median_of(ours, 'vacuum_seconds'):.2f} s"
    )
    whole = [a["run_seconds"] / (d["seconds"] + d["vacuum_seconds"]) for a, d in pairs]
    print(f"  whole run against one DELETE + one VACUUM: {shown(whole)} (at most 1.3)")
    step = [d["seconds"] / a["seconds"] for a, d in pairs]
    walked = "/".join(sorted({a["walk"] for a in ours}))
    print(
        f"  the default walk's ({walked}) purge step rows/s against the DELETE's: {shown(step)} "
        "(at least 0.95)"
    )
    on_pages = list(zip(paged, single, strict=True))
    pages = [d["seconds"] / p["seconds"] for p, d in on_pages]
    print(
        f"  page walk's purge step (walk: pages, same run) {median_of(paged, 'seconds'):.2f} s, "
        f"{deleted / median_of(paged, 'seconds'):,.0f} rows/s; against the DELETE's: "
        f"{shown(pages)}; longest batch {max(p['longest_batch_ms'] for p in paged):.1f} ms"
    )
    looks = [p["look_seconds"] for p in paged]
    without = [d["seconds"] / (p["seconds"] - p["look_seconds"]) for p, d in on_pages]
    print(
        f"  the look for old rows left past the pages (a read of the table): "
        f"{statistics.median(looks):.2f} s (each trial: {', '.join(f'{v:.2f}' for v in looks)}); "
        f"the page walk's step without it against the DELETE's rows/s: {shown(without)}"
    )
    longest = [a["longest_batch_ms"] for a in ours]
    p99 = [a["p99_ms"] for a in ours]
    print(
        f"  default walk: longest batch {max(longest):.1f} ms (each trial: "
        f"{', '.join(f'{v:.1f}' for v in longest)}; at most 250), writers' p99 over the "
        f"whole run {max(p99):.1f} ms (each trial: {', '.join(f'{v:.1f}' for v in p99)}; "
        "at most 50)"
    )


def bench(
    dialect: str,
    rows: int,
    trials: int,
    say: Callable[[str], None],
    date_index: bool = False,
    timestamp: bool = False,
) -> None:
    with scratch(dialect) as url, tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(url)
        say(f"{dialect}: building {rows:,} rows")
        build_source(engine, rows, date_index, timestamp)
        ours: list[dict[str, Any]] = []
        paged: list[dict[str, Any]] = []
        single: list[dict[str, Any]] = []
        loops: list[dict[str, Any]] = []
        statements: list[dict[str, Any]] = []
        repeatable: list[dict[str, Any]] = []
        order = ["aishell", "batch loop", "DELETE"]
        if dialect == "mysql":
            order.append("batch loop RR")  # the loop at REPEATABLE READ, as before
        if dialect == "postgresql":
            order.append("aishell pages")  # the page walk, in the same run
        for trial in range(trials):
            # Each in turn goes first: what the one before leaves the server doing
            # (flushing, purging undo) falls on each alike. A batch loop that comes
            # before aishell's run replays the statements of the one before.
            turn = trial % len(order)
            for which in order[turn:] + order[:turn]:
                fresh_copy(engine)
                if which == "aishell":
                    ours.append(run_aishell(Path(tmp), url, rows))
                    statements = ours[-1].pop("statements")
                elif which == "aishell pages":
                    paged.append(run_aishell(Path(tmp), url, rows, walk="pages"))
                    paged[-1].pop("statements")
                elif which == "batch loop":
                    loops.append(run_batch_loop(url, rows, statements))
                elif which == "batch loop RR":
                    repeatable.append(run_batch_loop(url, rows, statements, "REPEATABLE READ"))
                else:
                    single.append(run_delete(url, rows))
            say(
                f"{dialect} trial {trial + 1}: aishell {ours[-1]}; batch loop {loops[-1]}; "
                f"DELETE {single[-1]}"
            )
        for a, b, d in zip(ours, loops, single, strict=True):
            if not a["deleted"] == b["deleted"] == d["deleted"]:
                raise SystemExit(
                    f"aishell deleted {a['deleted']:,} rows, the batch loop {b['deleted']:,}, "
                    f"the DELETE {d['deleted']:,}"
                )
        deleted = ours[0]["deleted"]
        ours_s, single_s = median_of(ours, "seconds"), median_of(single, "seconds")
        run_s = median_of(ours, "run_seconds")
        loop_s = median_of(loops, "seconds")
        column = "TIMESTAMP" if timestamp and dialect == "mysql" else "a date without zone"
        print(
            f"\n{dialect}: purge {deleted:,} of {rows:,} rows (created_at {column}), "
            f"median of {trials}"
        )
        print(f"  single DELETE        {single_s:8.2f} s  {deleted / single_s:12,.0f} rows/s")
        print(
            f"  aishell purge step   {ours_s:8.2f} s  {deleted / ours_s:12,.0f} rows/s  "
            f"rows/s against the DELETE {single_s / ours_s:.3f}x (at least 0.95)"
        )
        print(
            f"  bare batch loop      {loop_s:8.2f} s  {deleted / loop_s:12,.0f} rows/s  "
            f"rows/s against the DELETE {single_s / loop_s:.3f}x; aishell's step against "
            f"it {loop_s / ours_s:.3f}x"
        )
        print(
            f"  aishell whole run    {run_s:8.2f} s  against the DELETE "
            f"{run_s / single_s:.3f}x (at most 1.3)"
        )
        paired(ours, loops, single)
        if repeatable:
            rr_s = median_of(repeatable, "seconds")
            each = [b["seconds"] / a["seconds"] for a, b in zip(ours, repeatable, strict=True)]
            print(
                f"  bare batch loop at REPEATABLE READ (the loop before the twentieth boot) "
                f"{rr_s:.2f} s, {deleted / rr_s:,.0f} rows/s, against the DELETE "
                f"{single_s / rr_s:.3f}x; aishell's step against it {rr_s / ours_s:.3f}x "
                f"(each trial: {', '.join(f'{v:.3f}x' for v in each)})"
            )
        each = [b["seconds"] / a["seconds"] for a, b in zip(ours, loops, strict=True)]
        print(
            f"  each trial's own: aishell's step against the bare batch loop "
            f"{', '.join(f'{v:.3f}x' for v in each)} (at least 0.95)"
        )
        if dialect == "postgresql":
            walks_compared(ours, paged, single, deleted)
        # Within each trial (the medians of runs and of steps come from different trials).
        besides = statistics.median(a["run_seconds"] - a["seconds"] for a in ours)
        share = statistics.median((a["run_seconds"] - a["seconds"]) / a["seconds"] for a in ours)
        print(
            f"  not the purge step (start-up, planning, estimates, report) "
            f"{besides:.2f} s, {share:.1%} of the purge step (medians of the trials' own)"
        )
        print(
            f"  estimated before the purge: {median_of(ours, 'estimated'):,.0f} rows older "
            f"(deleted {deleted:,}), from {ours[0]['how']}"
        )
        print(
            f"  batches {median_of(ours, 'batches'):,.0f}, median batch "
            f"{median_of(ours, 'median_batch_ms'):.1f} ms, longest batch (worst of "
            f"{trials}) {max(t['longest_batch_ms'] for t in ours):.1f} ms, "
            f"{median_of(ours, 'sent_per_batch'):.2f} statements a batch in the step's audit"
        )
        print(
            f"  concurrent writes p99: during aishell {median_of(ours, 'p99_ms'):.1f} ms "
            f"({median_of(ours, 'writes'):,.0f} writes; {median_of(loops, 'writes'):,.0f} "
            f"during the batch loop), during the DELETE "
            f"{median_of(single, 'p99_ms'):.1f} ms ({median_of(single, 'writes'):,.0f} writes)"
        )
        print(
            f"  slowest single write: during aishell {median_of(ours, 'worst_ms'):.1f} ms, "
            f"during the DELETE {median_of(single, 'worst_ms'):.1f} ms (median of {trials})"
        )
        if dialect != "mysql":
            print("  pt-archiver: not compared (it works on MySQL only, not on PostgreSQL)")
        elif shutil.which("pt-archiver") is None:
            print("  pt-archiver: not installed (apt-get install percona-toolkit)")
        else:
            mean = round(deleted / median_of(ours, "batches"))
            for limit_rows in (mean, 1000):
                runs = []
                for _ in range(trials):
                    fresh_copy(engine)
                    runs.append(run_pt_archiver(url, limit_rows))
                    if runs[-1]["deleted"] != deleted:
                        raise SystemExit(f"pt-archiver deleted {runs[-1]['deleted']:,} rows")
                pt_s = median_of(runs, "seconds")
                same = " (aishell's mean batch)" if limit_rows == mean else ""
                print(
                    f"  pt-archiver --purge --bulk-delete --limit {limit_rows}{same} "
                    f"{pt_s:8.2f} s  {deleted / pt_s:12,.0f} rows/s; aishell's whole run is "
                    f"{pt_s / run_s:.2f}x as fast, its purge step {pt_s / ours_s:.2f}x"
                    + (" (at least 2)" if same else "")
                )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--only", choices=["postgresql", "mysql"])
    parser.add_argument(
        "--date-index", action="store_true", help="index created_at, as many log tables do"
    )
    parser.add_argument(
        "--timestamp",
        action="store_true",
        help="MySQL: created_at a TIMESTAMP (its cutoff read in the session's time zone)",
    )
    args = parser.parse_args()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for dialect in ("postgresql", "mysql"):
        if args.only in (None, dialect):
            bench(dialect, args.rows, args.trials, say, args.date_index, args.timestamp)


if __name__ == "__main__":
    main()
