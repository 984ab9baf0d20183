"""A fleet job through a real broker (RabbitMQ, then Redis) with four worker processes
and 30 targets: 10 SQLite files, 10 PostgreSQL and 10 MariaDB databases. One worker is
SIGKILLed in the middle of a run; in the end every target has exactly one run, completed,
no statement of a finished step was sent twice (the statement audit), and no database
server ever had more runs at once than its limit (sampled from pg_stat_activity and the
MariaDB processlist while the job ran), though runs had to wait for it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import load_config
from tests.fleet.queues import delete_queue
from tests.services import MYSQL_ADMIN, PG_ADMIN, scratch_mysql, scratch_postgresql

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

# Per engine: five times a server's limit, so that every server's runs queue for it.
EACH = 10
LIMIT = 2
# Two more than the limit still at work once one is killed. The targets are taken in
# their order (SQLite files, MariaDB, PostgreSQL) and the kill comes among the first:
# with three workers, two were left for the servers, never more than their limit; with
# one more than the limit left, a run holds its slot for only part of its task (the
# worker's checks before it), and three tasks of one server did not always meet there.
WORKERS = LIMIT + 3
BROKERS = {
    "rabbitmq": "amqp://guest@127.0.0.1:5672//",
    "redis": "redis://127.0.0.1:6379/0",
}


# 200 rows in one statement: row by row, each was a commit of its own on MariaDB.
ROWS = {
    "postgresql": "SELECT g, 'x' FROM generate_series(0, 199) AS g",
    "mysql": "SELECT seq, 'x' FROM seq_0_to_199",
}


def _populate(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for table in ("orders", "events"):
            conn.execute(text(f"CREATE TABLE {table} (id int primary key, note varchar(40))"))
            conn.execute(text(f"INSERT INTO {table} {ROWS[engine.dialect.name]}"))
    engine.dispose()


def _sqlite(path: Path) -> str:
    conn = sqlite3.connect(path)
    for table in ("orders", "events"):
        conn.execute(f"CREATE TABLE {table} (id integer primary key, note text)")
        conn.executemany(f"INSERT INTO {table} VALUES (?, 'x')", [(i,) for i in range(200)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


# Databases made or dropped at once: CREATE and DROP DATABASE wait on the server's disk
# (a second each on PostgreSQL), hardly on its CPU or this one's.
AT_ONCE = 8


def _made_at_once(stack: ExitStack, scratches: list[AbstractContextManager[str]]) -> list[str]:
    """Each scratch database made (the first for the state store; the others populated)
    AT_ONCE at a time; its URL. Those made are dropped, at once too, when `stack` closes,
    a failure to make another included."""
    made: list[AbstractContextManager[str]] = []

    def make(index: int, scratch: AbstractContextManager[str]) -> str:
        url = scratch.__enter__()
        made.append(scratch)
        if index:
            _populate(url)
        return url

    stack.callback(_dropped_at_once, made)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        return list(pool.map(make, range(len(scratches)), scratches))


def _dropped_at_once(made: list[AbstractContextManager[str]]) -> None:
    with ThreadPoolExecutor(AT_ONCE) as pool:
        ended = [pool.submit(scratch.__exit__, None, None, None) for scratch in made]
    for end in ended:
        end.result()  # the first failure to drop one is the test's error


class _Sampler(threading.Thread):
    """The most databases of one server that had an aishell session at once."""

    def __init__(self, pg: list[str], my: list[str]) -> None:
        super().__init__(daemon=True)
        self.pg, self.my = pg, my
        self.most = {"postgresql": 0, "mariadb": 0}
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        pg = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        my = create_engine(MYSQL_ADMIN, isolation_level="AUTOCOMMIT")
        with pg.connect() as pg_conn, my.connect() as my_conn:
            while not self.done.is_set():
                busy_pg = pg_conn.execute(
                    text(
                        "SELECT count(DISTINCT datname) FROM pg_stat_activity "
                        "WHERE datname = ANY(:dbs)"
                    ),
                    {"dbs": self.pg},
                ).scalar()
                names = ", ".join(f"'{n}'" for n in self.my)  # our own uuid names
                busy_my = my_conn.execute(
                    text(
                        "SELECT count(DISTINCT db) FROM information_schema.PROCESSLIST "
                        f"WHERE db IN ({names})"
                    )
                ).scalar()
                self.most["postgresql"] = max(self.most["postgresql"], int(busy_pg or 0))
                self.most["mariadb"] = max(self.most["mariadb"], int(busy_my or 0))
                self.samples += 1
                # A run holds its database far longer than this: one past the limit
                # would be seen in many samples.
                time.sleep(0.05)
        pg.dispose()
        my.dispose()


@pytest.fixture
def fleet_home(
    home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    broker = request.param
    unique = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        scratches = [scratch_postgresql() for _ in range(1 + EACH)]
        scratches += [scratch_mysql() for _ in range(EACH)]
        state_url, *urls = _made_at_once(stack, scratches)
        pg, my = urls[:EACH], urls[EACH:]
        files = [_sqlite(tmp_path / f"t{i}.db") for i in range(EACH)]
        tag = f"fleet-{unique}"
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        data["targets"] = {
            f"{kind}-{unique}-{i}": {"url": url, "environment": "test", "tags": [tag]}
            for kind, urls in (("pg", pg), ("my", my), ("lite", files))
            for i, url in enumerate(urls)
        }
        data["default_target"] = f"lite-{unique}-0"
        data["state"] = {"url": state_url}
        data["fleet"] = {
            "broker_url": BROKERS[broker],
            "queue": f"aishell-test-{unique}",
            "per_server_limit": LIMIT,
            "slot_wait_seconds": 0.3,
            "visibility_timeout_seconds": 8,
            **({"password_env": "AISHELL_TEST_BROKER_PASSWORD"} if broker == "rabbitmq" else {}),
        }
        path.write_text(yaml.safe_dump(data))
        os.environ["AISHELL_TEST_BROKER_PASSWORD"] = "guest"
        from sqlalchemy.engine import make_url

        yield {
            "home": home,
            "tag": tag,
            "state_url": state_url,
            "pg": [make_url(u).database for u in pg],
            "my": [make_url(u).database for u in my],
        }
        delete_queue(load_config(home=home))
        os.environ.pop("AISHELL_TEST_BROKER_PASSWORD", None)


def _worker(home: Path, n: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AISHELL_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "aishell", "worker", "--name", f"w{n}-{uuid.uuid4().hex[:6]}@test"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / f"worker-{n}.log", "wb"),
    )


@pytest.mark.parametrize("fleet_home", ["rabbitmq", "redis"], indirect=True)
def test_a_fleet_job_ends_with_every_target_run_once_though_a_worker_was_killed(
    fleet_home: dict[str, Any],
) -> None:
    home = fleet_home["home"]
    config = load_config(home=home)
    workers = [_worker(home, n) for n in range(WORKERS)]
    sampler = _Sampler(fleet_home["pg"], fleet_home["my"])
    sampler.start()
    try:
        sent = commands.fleet_run(
            config, "maintenance", {"type": "quick"}, f"tag:{fleet_home['tag']}"
        )
        assert len(sent["runs"]) == 3 * EACH and sent["going_on"] == 3 * EACH
        killed = _kill_one_mid_run(config, sent["fleet_id"], workers)
        summary = _wait(config, sent["fleet_id"], 150)
    finally:
        sampler.done.set()
        for worker in workers:
            with suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            with suppress(subprocess.TimeoutExpired):
                worker.wait(20)
            with suppress(ProcessLookupError):
                worker.kill()
        sampler.join(5)
    every_log = [(home / f"worker-{n}.log").read_text() for n in range(WORKERS)]
    logs = "\n".join(log[-3000:] for log in every_log)
    assert summary["counts"] == {"completed": 3 * EACH}, logs
    engine = create_engine(fleet_home["state_url"])
    with engine.connect() as conn:
        per_target = conn.execute(text("SELECT target, count(*) FROM runs GROUP BY target")).all()
        assert sorted(n for _, n in per_target) == [1] * (3 * EACH)  # one run each, ever
        resumed = conn.execute(
            text("SELECT count(*) FROM events WHERE kind = 'resumed' OR kind LIKE 'reopen%'")
        ).scalar()
        killed_run = conn.execute(
            text("SELECT status FROM runs WHERE run_id = :r"), {"r": killed}
        ).scalar()
        # A statement that changes something (ANALYZE, VACUUM, OPTIMIZE: not a read) is
        # sent again only in the step the kill cut short.
        sent_twice = conn.execute(
            text(
                "SELECT run_id, step_idx, sql, count(*) FROM statements "
                "WHERE error IS NULL AND finished_at IS NOT NULL "
                "AND upper(ltrim(sql, E' \\n')) !~ '^(SELECT|SHOW|PRAGMA|SET|WITH)' "
                "GROUP BY run_id, step_idx, sql HAVING count(*) > 1"
            )
        ).all()
        writes = conn.execute(
            text("SELECT count(*) FROM statements WHERE upper(ltrim(sql)) LIKE 'ANALYZE%'")
        ).scalar()
    engine.dispose()
    assert killed_run == "completed"
    assert writes >= 3 * EACH  # the audit holds the writes it is checked on
    assert {r.run_id for r in sent_twice} <= {killed}, sent_twice
    assert len({(r.run_id, r.step_idx) for r in sent_twice}) <= 1
    assert sampler.samples > 20
    assert 1 <= sampler.most["postgresql"] <= LIMIT, sampler.most
    assert 1 <= sampler.most["mariadb"] <= LIMIT, sampler.most
    # The limit was reached, not only never passed: a run waited for its server's slot.
    assert any(f"runs {LIMIT} already" in log for log in every_log), logs
    del resumed


def _parent(pid: int) -> int | None:
    """The process that started `pid`; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _kill_one_mid_run(config: Any, fleet_id: str, workers: list[subprocess.Popen[bytes]]) -> str:
    """SIGKILL the worker of a run in progress, once some runs are done: the run's id."""
    pids = {w.pid for w in workers}
    engine = create_engine(config.state_url)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                done, running = conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE r.status = 'completed'), "
                        "array_agg(r.run_id || ':' || r.pid) FILTER (WHERE r.status = 'running') "
                        "FROM runs r JOIN fleet_runs f ON f.run_id = r.run_id "
                        "WHERE f.fleet_id = :f"
                    ),
                    {"f": fleet_id},
                ).one()
                conn.rollback()
                for run_id, pid in (item.split(":") for item in running or []):
                    # The run is in a child of the worker's pool; the worker killed
                    # takes its children with it.
                    worker = _parent(int(pid))
                    if done >= 6 and worker in pids:
                        os.kill(worker, signal.SIGKILL)
                        return run_id
                time.sleep(0.05)  # a run lasts far longer: it is seen in progress
    finally:
        engine.dispose()
    raise AssertionError("no run was seen in progress")


def _wait(config: Any, fleet_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    summary = commands.fleet_summary(config, fleet_id)
    while summary["going_on"] and time.monotonic() < deadline:
        time.sleep(0.3)
        summary = commands.fleet_summary(config, fleet_id)
    return summary
