"""One table's trouble does not stop maintenance: a table another session holds is
skipped by the health step and by a grouped ANALYZE, named with its holder, while the
other tables are done; a table dropped since the plan is reported gone; the next run
plans the skipped tables first.

What a DBA gets: the run completes (a held table is not a failure of the run), and the
step outputs and the maintenance report list each skipped table with why. Every test
holds its lock in a session it opens itself, on tables of a scratch database of its
own. Time bound: the target's lock wait is 300 ms and each held table is tried twice
per step, so each run takes a few seconds; each test allows 60 s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.policy.approvers import PreApproved

TABLES = ("alpha", "held", "omega")
BOUND_SECONDS = 60


def _point_at(home: Path, url: str) -> Config:
    """The default target `db` at url, with a short lock wait and one quick retry."""
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", "lock_timeout_ms": 300}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    agent = home / "config" / "agents" / "maintenance.yaml"
    agents = yaml.safe_load(agent.read_text())
    agents["maintenance_agent"].setdefault("default_config", {}).update(
        {"max_retries": 1, "retry_backoff_seconds": 0.1}
    )
    agent.write_text(yaml.safe_dump(agents))
    return load_config(home=home)


def _pg(url: str) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )


def _mysql(url: str) -> pymysql.connections.Connection[Any]:
    u = make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, database=u.database, autocommit=True
    )


def _make_tables(url: str, dialect: str) -> None:
    if dialect == "postgresql":
        with _pg(url) as conn:
            for t in TABLES:
                conn.execute(f'CREATE TABLE "{t}" (id int PRIMARY KEY, v text)')
                conn.execute(f"INSERT INTO \"{t}\" SELECT g, 'x' FROM generate_series(1, 200) g")
        return
    with _mysql(url) as conn, conn.cursor() as cur:
        for t in TABLES:
            cur.execute(f"CREATE TABLE `{t}` (id int PRIMARY KEY, v text) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO `{t}` SELECT seq, 'x' FROM seq_1_to_200")


@contextmanager
def _held(url: str, dialect: str, table: str) -> Iterator[int]:
    """Another session holding `table` exclusively until the block ends; its id."""
    if dialect == "postgresql":
        conn = _pg(url)
        try:
            conn.execute("BEGIN")
            conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            yield int(conn.info.backend_pid)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    my = _mysql(url)
    try:
        with my.cursor() as cur:
            cur.execute(f"LOCK TABLES `{table}` WRITE")
        yield int(my.thread_id())
        with my.cursor() as cur:
            cur.execute("UNLOCK TABLES")
    finally:
        my.close()


def _holder_named(dialect: str, holder: int) -> str:
    return f"pid {holder} " if dialect == "postgresql" else f"connection {holder} "


def _run(config: Config, kind: str) -> Any:
    return commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved())


def _skipped(step: Any) -> dict[str, str]:
    return {s["table"]: s["reason"] for s in (step.output or {}).get("skipped_tables") or []}


@pytest.fixture(params=["postgresql", "mysql"])
def scratch(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    from tests.services import scratch_mysql, scratch_postgresql

    make = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with make() as url:
        _make_tables(url, request.param)
        yield url, request.param


# Quick maintenance groups small tables in one statistics step; standard has a step of
# each table (its fragmentation measured before the step, its own ANALYZE), and a step
# whose table is held ends skipped, not failed.
@pytest.mark.parametrize("kind", ["quick", "standard"])
def test_a_held_table_is_skipped_named_with_its_holder_and_the_others_are_done(home, scratch, kind):
    url, dialect = scratch
    config = _point_at(home, url)
    started = time.monotonic()

    with _held(url, dialect, "held") as holder:
        result = _run(config, kind)

    assert time.monotonic() - started < BOUND_SECONDS
    assert result.status == "completed", (result.error, [s.error for s in result.steps])
    named = _holder_named(dialect, holder)
    skipped_anywhere = {t: r for s in result.steps for t, r in _skipped(s).items()}
    assert set(skipped_anywhere) == {"held"}, skipped_anywhere
    assert named in skipped_anywhere["held"], skipped_anywhere["held"]
    analyzed = {
        t
        for s in result.steps
        if s.tool in ("update_table_statistics", "optimize_table") and s.status == "succeeded"
        for t in (s.output.get("tables_done") or [s.output.get("table")])
    }
    assert {"alpha", "omega"} <= analyzed, [(s.tool, s.status, s.output) for s in result.steps]
    assert "held" not in analyzed
    report = result.steps[-1].output
    assert {s["cause"] for s in report["skipped"] if s["table"] == "held"} == {"locked"}
    assert "skipped" in report["summary"] and "held" in report["summary"]


def test_the_next_run_plans_the_skipped_table_first(home, scratch):
    url, dialect = scratch
    config = _point_at(home, url)
    with _held(url, dialect, "held"):
        first = _run(config, "quick")
    assert first.status == "completed"

    # Other targets' runs since (a fleet's) do not hide this target's last run.
    other = home / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (id integer primary key)").connection.close()
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["other"] = {"url": f"sqlite:///{other}", "environment": "test"}
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    for _ in range(21):
        commands.run_job(config, "maintenance", {"type": "quick"}, "other", dry_run=True)

    plan = commands.plan_job(config, "maintenance", {"type": "quick"}).plan

    health = plan.steps[0]
    assert health.params["tables"][0] == "held", health.params
    groups = [s.params.get("tables") or [s.params.get("table")] for s in plan.steps[1:-1]]
    assert groups[0][0] == "held", groups


class _DropAfterHealth:
    """Drops `omega` from another session once the health step is done: the table is
    gone between the plan and the statistics step that names it."""

    def __init__(self, url: str, dialect: str) -> None:
        self.url, self.dialect = url, dialect

    def step_started(self, step: Any, total: int) -> None:
        pass

    def step_finished(self, step: Any, total: int) -> None:
        if step.tool != "analyze_database_health":
            return
        if self.dialect == "postgresql":
            with _pg(self.url) as conn:
                conn.execute('DROP TABLE "omega"')
        elif self.dialect == "sqlite":
            with sqlite3.connect(make_url(self.url).database or "") as conn:
                conn.execute('DROP TABLE "omega"')
        else:
            with _mysql(self.url) as conn, conn.cursor() as cur:
                cur.execute("DROP TABLE `omega`")


def test_a_table_dropped_between_plan_and_step_is_reported_gone(home, scratch):
    url, dialect = scratch
    config = _point_at(home, url)
    started = time.monotonic()

    result = commands.run_job(
        config,
        "maintenance",
        {"type": "quick"},
        approver=PreApproved(),
        observer=_DropAfterHealth(url, dialect),
    )

    assert time.monotonic() - started < BOUND_SECONDS
    assert result.status == "completed", (result.error, [s.error for s in result.steps])
    stats = [s for s in result.steps if s.tool == "update_table_statistics"]
    gone = [t for s in stats for t in s.output.get("tables_gone") or []]
    done = [t for s in stats for t in s.output.get("tables_done") or []]
    assert gone == ["omega"]
    assert sorted(done) == ["alpha", "held"]
    assert not any(s.output.get("skipped_tables") for s in stats)
    report = result.steps[-1].output
    assert report["tables_gone"] == ["omega"]
    assert "dropped during the run: omega" in report["summary"]


def test_sqlite_a_table_dropped_mid_run_is_reported_gone(home, tmp_path):
    """SQLite locks the whole file, so no one table is held there; a table dropped
    after the plan is still one table's trouble: reported gone, the others analyzed.
    Time bound: 60 s (it takes well under one)."""
    path = tmp_path / "three.db"
    with sqlite3.connect(path) as conn:
        for t in TABLES:
            conn.execute(f'CREATE TABLE "{t}" (id integer PRIMARY KEY, v text)')
            conn.executemany(f'INSERT INTO "{t}" (v) VALUES (?)', [("x",)] * 50)
    url = f"sqlite:///{path}"
    config = _point_at(home, url)
    started = time.monotonic()

    result = commands.run_job(
        config,
        "maintenance",
        {"type": "quick"},
        approver=PreApproved(),
        observer=_DropAfterHealth(url, "sqlite"),
    )

    assert time.monotonic() - started < BOUND_SECONDS
    assert result.status == "completed", (result.error, [s.error for s in result.steps])
    (stats,) = [s for s in result.steps if s.tool == "update_table_statistics"]
    assert stats.output["tables_gone"] == ["omega"]
    assert sorted(stats.output["tables_done"]) == ["alpha", "held"]
    assert result.steps[-1].output["tables_gone"] == ["omega"]
