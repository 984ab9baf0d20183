"""A purge that archives keeps every column of the rows it deletes: MariaDB's SELECT *
leaves invisible columns out, so the archive's copy (and an archive file's read) names
the columns; a generated column of the purged table is copied as a value into a plain
column of the archive table, which may hold no generated column (computing one runs
code on every archived row: test_user_code.py)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pymysql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target
from tests.services import engine

ROWS = 600  # id % 60 days old: half of them past a 30-day retention


def _mysql(url: str) -> Any:
    u = make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, database=u.database, autocommit=True
    )


def _purge(config: Any, archive_to: str) -> Any:
    result = commands.run_job(
        config,
        "log_cleanup",
        {
            "table": "logs",
            "date_column": "created_at",
            "retention_days": 30,
            "archive_to": archive_to,
        },
        approver=PreApproved(),
    )
    step = next(s for s in result.steps if s.tool == "delete_old_records")
    assert step.status == "succeeded", step.error
    return step


def _mariadb_logs(url: str) -> None:
    with _mysql(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE logs (id int PRIMARY KEY, created_at datetime NOT NULL, "
            "msg varchar(20), tenant int INVISIBLE NOT NULL DEFAULT 0, "
            "twice int AS (tenant * 2) VIRTUAL) ENGINE=InnoDB"
        )
        cur.execute(
            "INSERT INTO logs (id, created_at, msg, tenant) SELECT seq, "
            f"NOW() - INTERVAL (seq % 60) DAY - INTERVAL 1 HOUR, 'm', seq FROM seq_1_to_{ROWS}"
        )


def _old_tenants(url: str) -> dict[int, int]:
    with _mysql(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, tenant FROM logs WHERE created_at < NOW() - INTERVAL 30 DAY ORDER BY id"
        )
        return {int(i): int(t) for i, t in cur.fetchall()}


def test_mariadb_an_archive_table_keeps_invisible_columns(home, mysql_url):
    _mariadb_logs(mysql_url)
    with _mysql(mysql_url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE logs_archive (id int PRIMARY KEY, created_at datetime NOT NULL, "
            "msg varchar(20), tenant int INVISIBLE NOT NULL DEFAULT 0, twice int)"
        )
    old = _old_tenants(mysql_url)
    config = use_target(home, mysql_url)

    step = _purge(config, "table:logs_archive")

    assert step.output["rows_deleted"] == len(old)
    assert any(
        "INSERT INTO `logs_archive` (`id`, `created_at`, `msg`, `tenant`, `twice`) SELECT "
        "`id`, `created_at`, `msg`, `tenant`, `twice` FROM `logs`" in sql
        for sql in step.sql
    )
    with _mysql(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, tenant, twice FROM logs_archive ORDER BY id")
        archived = cur.fetchall()
    assert {int(i): int(t) for i, t, _ in archived} == old
    assert all(twice == 2 * tenant for _, tenant, twice in archived)


def test_mariadb_an_archive_file_keeps_invisible_columns(home, mysql_url):
    _mariadb_logs(mysql_url)
    old = _old_tenants(mysql_url)
    config = use_target(home, mysql_url)
    path = home / "archive" / "logs.jsonl"

    step = _purge(config, f"file:{path}")

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["id"]: r["tenant"] for r in lines} == old
    assert all(r["twice"] == 2 * r["tenant"] for r in lines)
    named = "SELECT `id`, `created_at`, `msg`, `tenant`, `twice` FROM `logs` WHERE"
    assert [sql for sql in step.sql if sql.startswith(named)], step.sql


def test_mariadb_an_archive_file_keeps_all_of_a_floats_value(home, mysql_url):
    """MariaDB writes a FLOAT in 6 digits (1234567.875 as 1234570): the file reads it as
    a DOUBLE, the value the server holds, before the row is deleted."""
    with _mysql(mysql_url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE logs (id int PRIMARY KEY, created_at datetime NOT NULL, "
            "f float, u float unsigned NOT NULL) ENGINE=InnoDB"
        )
        cur.execute(
            "INSERT INTO logs SELECT seq, NOW() - INTERVAL (seq % 60) DAY - INTERVAL 1 HOUR, "
            f"IF(seq % 7 = 0, NULL, 1234567.9), 0.12345678 FROM seq_1_to_{ROWS}"
        )
        cur.execute("SELECT id FROM logs WHERE created_at < NOW() - INTERVAL 30 DAY")
        old = [int(i) for (i,) in cur.fetchall()]
    path = home / "archive" / "logs.jsonl"

    _purge(use_target(home, mysql_url), f"file:{path}")

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(old)
    # The nearest single-precision values: what the server stored.
    assert {r["f"] for r in lines} == {1234567.875, None}
    assert {r["u"] for r in lines} == {0.12345678359270096}


def test_postgresql_a_generated_column_is_archived_as_a_value(home, pg_url):
    """The archive table holds the generated column as a plain one (LIKE without
    INCLUDING GENERATED), and the copy gives it the purged row's value."""
    admin = engine(pg_url)
    with admin.connect() as conn:
        conn.execute(
            text(
                "CREATE TABLE logs (id int PRIMARY KEY, created_at timestamp NOT NULL, "
                "tenant int NOT NULL, twice int GENERATED ALWAYS AS (tenant * 2) STORED)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO logs (id, created_at, tenant) SELECT g, localtimestamp - "
                f"make_interval(days => g % 60, hours => 1), g FROM generate_series(1, {ROWS}) g"
            )
        )
        conn.execute(text("CREATE TABLE logs_archive (LIKE logs)"))
        old = dict(
            conn.execute(
                text(
                    "SELECT id, tenant FROM logs WHERE created_at < localtimestamp - "
                    "interval '30 days'"
                )
            ).all()
        )
    config = use_target(home, pg_url)

    step = _purge(config, "table:logs_archive")

    with admin.connect() as conn:
        archived = conn.execute(text("SELECT id, tenant, twice FROM logs_archive")).all()
    admin.dispose()
    assert step.output["rows_deleted"] == len(old)
    assert {i: t for i, t, _ in archived} == old
    assert all(twice == 2 * tenant for _, tenant, twice in archived)


def test_sqlite_a_generated_column_is_archived_as_a_value(home):
    path = home / "logs.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
        "tenant INTEGER NOT NULL, twice INTEGER GENERATED ALWAYS AS (tenant * 2) VIRTUAL)"
    )
    conn.execute(
        "CREATE TABLE logs_archive (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
        "tenant INTEGER NOT NULL, twice INTEGER)"
    )
    conn.executemany(
        "INSERT INTO logs (id, created_at, tenant) VALUES "
        "(?, datetime('now', '-' || ? || ' days', '-1 hours'), ?)",
        [(i, i % 60, i) for i in range(1, ROWS + 1)],
    )
    conn.commit()
    old = dict(
        conn.execute("SELECT id, tenant FROM logs WHERE created_at < datetime('now', '-30 days')")
    )
    conn.close()
    config = use_target(home, f"sqlite:///{path}")

    step = _purge(config, "table:logs_archive")

    conn = sqlite3.connect(path)
    archived = conn.execute("SELECT id, tenant, twice FROM logs_archive").fetchall()
    conn.close()
    assert step.output["rows_deleted"] == len(old)
    assert {i: t for i, t, _ in archived} == old
    assert all(twice == 2 * tenant for _, tenant, twice in archived)
