"""How a fleet job scales with its workers: targets per minute for quick maintenance of
N targets (default 60: half SQLite files, half PostgreSQL scratch databases, each of two
200-row tables) through RabbitMQ, with 1, 2 and 4 worker processes (`aishell worker
--concurrency 1` each).

The state store is a PostgreSQL scratch database, as a fleet's is. The fleet's
per_server_limit is 4 (--limit): as many runs as the most workers, so the limit is never
what a run waits for (SQLite files count one server each). Each worker count starts its
own workers and waits until every one says it is ready, then sends --rounds fleet jobs
of the same targets one after another: the first round's tasks pay each worker's first
imports and catalog load, the rounds after it run on warm workers.

A round is timed from the moment `fleet run` starts sending (commands.fleet_run: the
targets selected, the fleet job recorded, one task per target sent) to the end of the
last of its runs as the state store records it (runs.finished_at). The baseline is one
worker: each round's ratio is its targets per minute against one worker's in the same
round. Every database and the queue the script made are dropped at its end.

    python bench/fleet.py [--targets N] [--workers 1,2,4] [--rounds N] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import psycopg
import yaml

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.fleet.app import broker_url
from aishell.state.store import StateStore

REPO = Path(__file__).resolve().parent.parent
PG = "host=127.0.0.1 port=5432 user=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{}"
BROKER = "amqp://guest@127.0.0.1:5672//"
PASSWORD_ENV = "AISHELL_BENCH_BROKER_PASSWORD"


def env() -> dict[str, str]:
    # This checkout's aishell, whatever is installed.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


class Databases:
    """The PostgreSQL scratch databases this script makes, all dropped at its end."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[str] = []

    def create(self, suffix: str, tables: bool) -> str:
        name = f"{self.prefix}_{suffix}"
        with psycopg.connect(f"{PG} dbname=test", autocommit=True) as admin:
            self.made.append(name)  # recorded before it exists, so a failure drops it too
            admin.execute(f'CREATE DATABASE "{name}"')
        if tables:
            with psycopg.connect(f"{PG} dbname={name}", autocommit=True) as conn:
                for table in ("orders", "events"):
                    conn.execute(f"CREATE TABLE {table} (id int primary key, note varchar(40))")
                    conn.execute(
                        f"INSERT INTO {table} SELECT i, 'x' FROM generate_series(0, 199) i"
                    )
        return PG_URL.format(name)

    def drop_all(self) -> None:
        with psycopg.connect(f"{PG} dbname=test", autocommit=True) as admin:
            for name in self.made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_target(path: Path) -> str:
    conn = sqlite3.connect(path)
    for table in ("orders", "events"):
        conn.execute(f"CREATE TABLE {table} (id integer primary key, note text)")
        conn.executemany(f"INSERT INTO {table} VALUES (?, 'x')", [(i,) for i in range(200)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def make_home(root: Path, dbs: Databases, n: int, limit: int, unique: str) -> tuple[Path, str]:
    """A home of n targets tagged alike, the fleet block and a PostgreSQL state store."""
    home = root / "home"
    shutil.copytree(REPO / "config", home / "config")
    tag = f"bench-{unique}"
    servers = [dbs.create(f"t{i}", tables=True) for i in range(n // 2)]
    files = [sqlite_target(root / f"t{i}.db") for i in range(n - n // 2)]
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"] = {
        f"{kind}-{i}": {"url": url, "environment": "test", "tags": [tag]}
        for kind, urls in (("pg", servers), ("lite", files))
        for i, url in enumerate(urls)
    }
    data["default_target"] = "lite-0"
    data["state"] = {"url": dbs.create("state", tables=False)}
    data["fleet"] = {
        "broker_url": BROKER,
        "password_env": PASSWORD_ENV,
        "queue": f"aishell-bench-{unique}",
        "per_server_limit": limit,
        "slot_wait_seconds": 0.2,
    }
    path.write_text(yaml.safe_dump(data))
    return home, tag


@contextmanager
def workers(home: Path, count: int, unique: str) -> Iterator[None]:
    """`count` worker processes of one task at a time, each ready before this yields."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(count):
            log = home / f"worker-{count}-{n}.log"
            name = f"bench-{count}-{n}-{unique}@bench"
            command = [sys.executable, "-m", "aishell", "worker", "--concurrency", "1"]
            process = subprocess.Popen(
                [*command, "--name", name],
                env={**env(), "AISHELL_HOME": str(home)},
                stdout=subprocess.DEVNULL,
                stderr=log.open("wb"),
            )
            started.append((process, log))
        deadline = time.monotonic() + 120
        for process, log in started:
            while " ready." not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"a worker did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield
    finally:
        for process, _ in started:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process, _ in started:
            with suppress(subprocess.TimeoutExpired):
                process.wait(30)
            with suppress(ProcessLookupError):
                process.kill()
            process.wait()


def one_round(config: Config, tag: str, n: int) -> float:
    """Seconds from sending the fleet job to the end of its last run."""
    sent_at = time.time()
    sent = commands.fleet_run(config, "maintenance", {"type": "quick"}, f"tag:{tag}")
    fleet_id = sent["fleet_id"]
    deadline = time.monotonic() + 900
    summary = sent
    while summary["going_on"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"fleet job {fleet_id} not over after 900 s: {summary['counts']}")
        time.sleep(0.25)
        summary = commands.fleet_summary(config, fleet_id)
    if summary["counts"] != {"completed": n}:
        raise SystemExit(f"fleet job {fleet_id} ended {summary['counts']}")
    with StateStore(config.state_url) as store:
        runs = store.fleet_runs(fleet_id)
    last = max(datetime.fromisoformat(r["finished_at"]).timestamp() for r in runs.values())
    return last - sent_at


def delete_queue(config: Config) -> None:
    """The queue and the exchange of its name that Celery declared on RabbitMQ."""
    from kombu import Connection

    queue = config.main.fleet.queue
    with Connection(broker_url(config)) as conn:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=60)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=4)
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    os.environ[PASSWORD_ENV] = os.environ.get(PASSWORD_ENV, "guest")
    unique = uuid.uuid4().hex[:8]
    dbs = Databases(f"aishell_bench_fleet_{unique}")
    config: Config | None = None
    seconds: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            home, tag = make_home(Path(tmp), dbs, args.targets, args.limit, unique)
            config = load_config(home=home)
            with StateStore(config.state_url):
                pass  # the store's schema made once, before any worker opens it
            print(
                f"{args.targets} targets ({args.targets // 2} PostgreSQL, "
                f"{args.targets - args.targets // 2} SQLite), quick maintenance, RabbitMQ, "
                f"per_server_limit {args.limit}, PostgreSQL state store; "
                f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}"
            )
            for count in counts:
                with workers(home, count, unique):
                    seconds[count] = []
                    for r in range(args.rounds):
                        took = one_round(config, tag, args.targets)
                        seconds[count].append(took)
                        print(
                            f"  {count} worker(s), round {r + 1}: {took:6.2f} s, "
                            f"{args.targets / took * 60:6.1f} targets/min",
                            flush=True,
                        )
        finally:
            if config is not None:
                with suppress(Exception):
                    delete_queue(config)
            dbs.drop_all()
    report(seconds, args.targets, counts)


def report(seconds: dict[int, list[float]], n: int, counts: list[int]) -> None:
    base = counts[0]
    print(f"targets per minute, and against {base} worker(s) in the same round:")
    for count in counts:
        rates = [n / s * 60 for s in seconds[count]]
        ratios = [b / s for b, s in zip(seconds[base], seconds[count], strict=True)]
        warm = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
        print(
            f"  {count} worker(s): rounds "
            + ", ".join(f"{r:.1f}" for r in rates)
            + f" (warm median {warm:.1f}); ratios "
            + ", ".join(f"{x:.2f}x" for x in ratios)
        )


if __name__ == "__main__":
    main()
