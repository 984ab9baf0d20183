"""Full maintenance under concurrent writes: aishell against a bare loop of the same
statements, on PostgreSQL (pgbench writing) and MariaDB (sysbench writing).

Each pair starts from two identical databases of N tables (default 200; rows in
random key order, a different share deleted per table, then vacuumed and analyzed as
a database in service is, then a tenth of the rows updated since). aishell runs
`maintenance --type full` on one (in this process: planning, policy, checkpoints, the
audit and the report included); a bare driver loop (psycopg, PyMySQL) in the same
process replays on the other exactly the statements aishell's run sent, read back from
its statement audit with their parameters. The order alternates from pair to pair,
the first pair's statements serving the second pair's bare-first run; each ratio is
printed with the CPU time this process used in each run, then the median. Before
each timed run the server's dirty pages and the kernel's are written out (CHECKPOINT;
FLUSH TABLES ... FOR EXPORT; sync), so that neither run pays for the setup's writes or
the other's. Throughout, a writer (pgbench, sysbench; their own database) commits
transactions at a fixed rate, and its rate during each run is printed.

A three-table run first warms this process up (imports, caches) and makes the home
every run of the engine then uses (its state store, its cache); it is not counted.
The process's cyclic collector is set as the `aishell` command sets it
(aishell.cli.collect_less).
Needs the local servers (PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306), pgbench
and sysbench (`apt-get install sysbench`). Databases are named aishell_full_<pid>_*
and dropped at the end.

    python bench/full_maintenance.py [--engine postgresql|mariadb|both] [--tables N]
        [--rows R] [--pairs P] [--rate TPS]
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pymysql
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aishell import commands
from aishell.cli import collect_less
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from bench.audited import pg_resolved

T = TypeVar("T")
PREFIX = f"aishell_full_{os.getpid()}"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root"}
# Per table, which rows are deleted: half, a third, a fifth or a tenth.
DELETE_EVERY = (2, 3, 5, 10)


# --- servers --------------------------------------------------------------------------------


def pg_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(**PG, dbname="test", autocommit=True)


def pg_connect(database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(**PG, dbname=database, autocommit=True)


def my_connect(database: str | None = None) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**MY, database=database, autocommit=True)


class Postgres:
    name = "PostgreSQL"

    def __init__(self) -> None:
        self.made: list[str] = []

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"

    def create(self, database: str, template: str | None = None) -> None:
        copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        with pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{database}"{copy}')
        self.made.append(database)

    def drop_all(self) -> None:
        with pg_admin() as conn:
            for database in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def populate(self, database: str, tables: int, rows: int) -> None:
        with pg_connect(database) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            for i in range(tables):
                t = f"t{i:05d}"
                c.execute(
                    f"CREATE TABLE {t} (id int PRIMARY KEY, k int NOT NULL, pad text NOT NULL) "
                    "WITH (autovacuum_enabled = false)"
                )
                c.execute(f"CREATE INDEX {t}_k ON {t} (k)")
                c.execute(
                    f"INSERT INTO {t} SELECT g, (g * 7919) % {rows}, repeat('x', 80) "
                    f"FROM generate_series(1, {rows}) g"
                )
                c.execute(f"DELETE FROM {t} WHERE id % {DELETE_EVERY[i % 4]} = 0")
                c.execute(f"VACUUM (ANALYZE) {t}")
                c.execute(f"UPDATE {t} SET pad = repeat('y', 80) WHERE id <= {rows // 10}")

    def settle(self, databases: list[str]) -> None:
        """Dirty buffers on disk, so that a run does not pay for what came before it."""
        with pg_admin() as conn:
            conn.execute("CHECKPOINT")

    def replay(self, database: str, statements: list[dict[str, Any]]) -> float:
        with pg_connect(database) as c:
            ready = pg_resolved(c, statements)
            started = time.perf_counter()
            for sql, values in ready:
                c.execute(sql, values)
            return time.perf_counter() - started

    def writer(self, database: str, rate: int) -> list[str]:
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", "5", "-h", "127.0.0.1", "-U", "postgres", database],
            check=True,
            capture_output=True,
        )
        return [
            "pgbench", "-n", "-c", "2", "-j", "2", "-R", str(rate), "-P", "1", "-T", "86400",
            "-h", "127.0.0.1", "-U", "postgres", database,
        ]  # fmt: skip


class Mariadb:
    name = "MariaDB"

    def __init__(self) -> None:
        self.made: list[str] = []

    def url(self, database: str) -> str:
        return f"mysql+pymysql://root@127.0.0.1:3306/{database}"

    def create(self, database: str, template: str | None = None) -> None:
        with my_connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{database}`")
        self.made.append(database)

    def drop_all(self) -> None:
        with my_connect() as conn, conn.cursor() as cur:
            for database in self.made:
                cur.execute(f"DROP DATABASE IF EXISTS `{database}`")

    def populate(self, database: str, tables: int, rows: int) -> None:
        with my_connect(database) as c, c.cursor() as cur:
            for i in range(tables):
                t = f"t{i:05d}"
                cur.execute(
                    f"CREATE TABLE {t} (id int PRIMARY KEY, k int NOT NULL, "
                    "pad varchar(200) NOT NULL, KEY k (k)) ENGINE=InnoDB"
                )
                cur.execute(
                    f"INSERT INTO {t} SELECT seq, (seq * 7919) % {rows}, repeat('x', 80) "
                    f"FROM seq_1_to_{rows}"
                )
                cur.execute(f"DELETE FROM {t} WHERE id % {DELETE_EVERY[i % 4]} = 0")
                cur.execute(f"ANALYZE TABLE {t}")
                cur.fetchall()
                cur.execute(f"UPDATE {t} SET pad = repeat('y', 80) WHERE id <= {rows // 10}")

    def settle(self, databases: list[str]) -> None:
        """The databases' changed pages on disk (FLUSH TABLES ... FOR EXPORT writes a
        table's dirty pages out), so that a run does not pay for what came before it."""
        with my_connect() as conn, conn.cursor() as cur:
            for database in databases:
                cur.execute(
                    "SELECT TABLE_NAME FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
                    (database,),
                )
                names = [f"{_tick(database)}.{_tick(name)}" for (name,) in cur.fetchall()]
                if names:
                    cur.execute(f"FLUSH TABLES {', '.join(names)} FOR EXPORT")
                    cur.execute("UNLOCK TABLES")

    def replay(self, database: str, statements: list[dict[str, Any]]) -> float:
        with my_connect(database) as c, c.cursor() as cur:
            started = time.perf_counter()
            for s in statements:
                # No values: the statement as it is (a % in it is no placeholder).
                cur.execute(s["sql"], s["parameters"] or None)
                cur.fetchall()
            return time.perf_counter() - started

    def writer(self, database: str, rate: int) -> list[str]:
        common = [
            "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=3306",
            "--mysql-user=root", f"--mysql-db={database}", "--tables=2", "--table-size=50000",
        ]  # fmt: skip
        subprocess.run(
            ["sysbench", "oltp_write_only", *common, "prepare"], check=True, capture_output=True
        )
        return [
            "sysbench", "oltp_write_only", *common, "--threads=2", f"--rate={rate}",
            "--time=0", "--report-interval=1", "run",
        ]  # fmt: skip


def _tick(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# --- the writer -------------------------------------------------------------------------------

_TPS = re.compile(r"(?:progress: [\d.]+ s, ([\d.]+) tps)|(?:\] thds: \d+ tps: ([\d.]+))")


class Writer:
    """A load generator in the background; its per-second rates, by when they came."""

    def __init__(self, command: list[str]) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = _TPS.search(line)
            if match:
                self.samples.append((time.monotonic(), float(match.group(1) or match.group(2))))

    def rate(self, start: float, end: float) -> float:
        inside = [tps for when, tps in self.samples if start < when <= end + 1]
        return statistics.mean(inside) if inside else float("nan")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- one engine -------------------------------------------------------------------------------


def configure(home: Path, url: str) -> Any:
    (home / "config" / "agents").mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent / "config"
    data = yaml.safe_load((repo / "aishell.yaml").read_text())
    data["targets"]["db"] = {"url": url}
    data["default_target"] = "db"
    (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(data))
    agent = (repo / "agents" / "maintenance.yaml").read_text()
    (home / "config" / "agents" / "maintenance.yaml").write_text(agent)
    return load_config(home=home)


def run_aishell(home: Path, url: str) -> tuple[float, list[dict[str, Any]], Any]:
    """A full maintenance run in `home` (its target pointed at url), timed; the
    statements it sent; its result. One home serves every run of an engine, as a DBA's
    does night after night: its state store and its cache are made by the warm-up run,
    not by each run measured."""
    config = configure(home, url)
    started = time.perf_counter()
    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    took = time.perf_counter() - started
    if result.status != "completed":
        raise SystemExit(f"aishell's run ended {result.status}: {result.error}")
    sent = [s for s in commands.run_statements(config, result.run_id) if s["error"] is None]
    return took, sent, result


def settle(engine: Postgres | Mariadb, databases: list[str]) -> None:
    """Before each timed run: the server's and the kernel's dirty pages written out, then
    a moment, so each run starts as the other does, not behind the writes of the
    databases' setup or of the run before it."""
    engine.settle(databases)
    os.sync()
    time.sleep(1)


def settled(
    engine: Postgres | Mariadb, databases: list[str], run: Callable[[], T]
) -> tuple[T, float, float, float]:
    """`run` after settle(): what it returned, when it began and ended, and the CPU time
    this process used meanwhile (the bare loop's is the driver's; aishell's is what it
    adds besides)."""
    settle(engine, databases)
    began, cpu = time.monotonic(), time.process_time()
    out = run()
    return out, began, time.monotonic(), time.process_time() - cpu


@contextmanager
def writing(engine: Postgres | Mariadb, rate: int) -> Iterator[Writer]:
    database = f"{PREFIX}_writer"
    engine.create(database)
    writer = Writer(engine.writer(database, rate))
    try:
        time.sleep(3)  # past its start
        if not writer.alive():
            raise SystemExit(f"the writer stopped: {writer.process.returncode}")
        yield writer
    finally:
        writer.stop()


def bench(engine: Postgres | Mariadb, tables: int, rows: int, pairs: int, rate: int) -> float:
    say = print
    say(f"\n{engine.name}: full maintenance of {tables} tables of {rows:,} rows, {pairs} pairs")
    warm = f"{PREFIX}_warm"
    engine.create(warm)
    engine.populate(warm, 3, 500)
    home = Path(tempfile.mkdtemp(prefix=f"{PREFIX}_"))
    atexit.register(shutil.rmtree, home, True)
    run_aishell(home, engine.url(warm))
    source = f"{PREFIX}_src"
    if isinstance(engine, Postgres):
        engine.create(source)
        engine.populate(source, tables, rows)
    ratios: list[float] = []
    statements: list[dict[str, Any]] = []
    with writing(engine, rate) as writer:
        for pair in range(pairs):
            ours, bare = f"{PREFIX}_ours{pair}", f"{PREFIX}_bare{pair}"
            for database in (ours, bare):
                template = source if isinstance(engine, Postgres) else None
                engine.create(database, template)
                if template is None:
                    engine.populate(database, tables, rows)
            aishell_first = pair % 2 == 0 or not statements
            databases = [ours, bare]
            if aishell_first:
                (took, statements, result), a0, a1, ac = settled(
                    engine, databases, partial(run_aishell, home, engine.url(ours))
                )
                baseline, b0, b1, bc = settled(
                    engine, databases, partial(engine.replay, bare, statements)
                )
            else:
                baseline, b0, b1, bc = settled(
                    engine, databases, partial(engine.replay, bare, statements)
                )
                (took, statements, result), a0, a1, ac = settled(
                    engine, databases, partial(run_aishell, home, engine.url(ours))
                )
            ratio = took / baseline
            ratios.append(ratio)
            order = "aishell first" if aishell_first else "bare loop first"
            say(
                f"  pair {pair + 1} ({order}): {len(result.steps)} steps, "
                f"{len(statements):,} statements"
            )
            say(
                f"    bare loop {baseline:7.2f} s (writer {writer.rate(b0, b1):6.1f} tps)   "
                f"aishell {took:7.2f} s (writer {writer.rate(a0, a1):6.1f} tps)   "
                f"ratio {ratio:.3f}x"
            )
            say(f"    CPU of this process: bare loop {bc:5.2f} s   aishell {ac:5.2f} s")
            report = result.report or {}
            say(
                f"    report: {report.get('statistics_updated')} statistics updated, "
                f"{report.get('indexes_rebuilt')} indexes rebuilt, "
                f"{report.get('tables_optimized')} tables optimized"
            )
    median = statistics.median(ratios)
    say(f"  {engine.name} ratio, median of {len(ratios)}: {median:.3f}x")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=("postgresql", "mariadb", "both"), default="both")
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--rows", type=int, default=20_000)
    # An even number: as many pairs with aishell first as with the bare loop first.
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rate", type=int, default=200, help="the writer's transactions/s")
    args = parser.parse_args()
    # The collector as the `aishell` command sets it, for the runs made in this process.
    collect_less()
    os.environ.pop("AISHELL_HOME", None)
    print(f"Python {sys.version.split()[0]}; writers at {args.rate} transactions/s")
    engines: list[Callable[[], Postgres | Mariadb]] = []
    if args.engine in ("postgresql", "both"):
        engines.append(Postgres)
    if args.engine in ("mariadb", "both"):
        engines.append(Mariadb)
    for make in engines:
        engine = make()
        try:
            bench(engine, args.tables, args.rows, args.pairs, args.rate)
        finally:
            engine.drop_all()


if __name__ == "__main__":
    main()
