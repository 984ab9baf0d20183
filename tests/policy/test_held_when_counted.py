"""A table whose size was read but whose rows, counted against max_table_size, are held by
another session: a plan shows the others and a run leaves that table alone out.

The size of a partitioned PostgreSQL table (its partitions hold its rows) or of a MyISAM
table (whose size is the catalog's estimate) does not settle its rows, so they are
counted, and the count waits for the other session's lock. That lock timeout ended
`plan` as an internal error, and in a run it skipped the whole shared step, every table
named as held by whoever held the one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import use_target
from tests.services import engine, scratch_mysql, scratch_postgresql


def _config(home: Path, url: str) -> Config:
    """Target `db` at url, a short lock wait, quick retries."""
    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["lock_timeout_ms"] = 1000
    path.write_text(yaml.safe_dump(data))
    agent = home / "config" / "agents" / "maintenance.yaml"
    agents = yaml.safe_load(agent.read_text())
    defaults = agents["maintenance_agent"]["default_config"]
    defaults.update({"retry_backoff_seconds": 0.1, "max_retries": 1})
    agent.write_text(yaml.safe_dump(agents))
    return load_config(home=home)


@contextmanager
def held(url: str, *lock: str) -> Iterator[int]:
    """The statements run in a session of the test's, kept open (its locks held) until
    the block ends; that session's id."""
    own = engine(url)
    conn = own.connect()
    try:
        pg = url.startswith("postgresql")
        session = conn.execute(text("SELECT pg_backend_pid()" if pg else "SELECT CONNECTION_ID()"))
        pid = int(session.scalar() or 0)
        if pg:
            conn.execute(text("BEGIN"))
        for statement in lock:
            conn.execute(text(statement))
        yield pid
    finally:
        conn.close()
        own.dispose()


def _left_out(result: Any, tables: set[str], holder: str) -> None:
    """The statistics steps did the plain tables, and left out only `tables`, each named
    with the session that holds it; none failed (a partitioned table's statistics are
    a step of its own, skipped whole when its partition is held)."""
    steps = [s for s in result.steps if s.tool == "update_table_statistics"]
    assert all(s.status in ("succeeded", "skipped") for s in steps), [
        (s.status, s.error) for s in steps
    ]
    done = {t for s in steps for t in s.output["tables_done"]}
    assert done == {"plain_a", "plain_b"}, [s.output for s in steps]
    skipped = [each for s in steps for each in s.output["skipped_tables"]]
    assert {s["table"] for s in skipped} == tables, skipped
    for each in skipped:
        assert each["cause"] == "locked" and holder in each["reason"], each


def _plan_and_run(config: Config) -> tuple[Any, Any]:
    """A quick maintenance planned (its preview measures every table), then run, on a
    thread whose hang fails the test."""
    found: dict[str, Any] = {}

    def both() -> None:
        try:
            found["plan"] = commands.plan_job(config, "maintenance", {"type": "quick"})
            found["run"] = commands.run_job(
                config, "maintenance", {"type": "quick"}, approver=PreApproved(up_to=RiskLevel.LOW)
            )
        except Exception as exc:  # handed back to the test
            found["error"] = exc

    worker = threading.Thread(target=both, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "it hangs"
    assert "error" not in found, found["error"]
    return found["plan"], found["run"]


def test_postgresql_a_held_partition_leaves_its_table_out_not_the_step(home: Path) -> None:
    with scratch_postgresql() as url:
        with engine(url).begin() as conn:
            conn.execute(text("CREATE TABLE plain_a (id int PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE plain_b (id int PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE events (id int, d date) PARTITION BY RANGE (d)"))
            conn.execute(
                text(
                    "CREATE TABLE events_2026 PARTITION OF events "
                    "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
                )
            )
        config = _config(home, url)
        lock = "LOCK TABLE events_2026 IN ACCESS EXCLUSIVE MODE"
        with held(url, lock) as pid:
            plan, result = _plan_and_run(config)
    assert plan.plan.steps
    # The partition itself too, whose size could not be read.
    _left_out(result, {"events", "events_2026"}, f"pid {pid} ")


def test_mariadb_a_held_myisam_table_leaves_it_out_not_the_step(home: Path) -> None:
    with scratch_mysql() as url:
        with engine(url).begin() as conn:
            conn.execute(text("CREATE TABLE plain_a (id int PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE plain_b (id int PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE myi (id int PRIMARY KEY) ENGINE=MyISAM"))
            conn.execute(text("INSERT INTO myi VALUES (1), (2)"))
        config = _config(home, url)
        with held(url, "LOCK TABLES myi WRITE") as pid:
            plan, result = _plan_and_run(config)
    assert plan.plan.steps
    _left_out(result, {"myi"}, f"connection {pid} ")
