"""A row limit counts every row the step rewrites or reads, not only those the login
sees.

- MariaDB, a system-versioned table of 10 current rows and tens of thousands of
  historical ones: `ALTER TABLE ... FORCE` rewrites them all, so max_table_size counts
  them all (FOR SYSTEM_TIME ALL) and holds the rebuild for a person's yes.
- PostgreSQL, a table whose row-level security shows the login (which owns the
  database, not the table) 10 of its rows: VACUUM and ANALYZE read them all, and a
  count through the policy cannot, so where the table's size does not bound its rows
  they are unknown, said why, and a person says yes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import NonInteractive
from tests.policy.test_limits_on_facts import _limited, _sql
from tests.services import PG_ADMIN, engine, scratch_mysql, scratch_postgresql

LIMIT = 1_000


def _run(config: Any, table: str) -> Any:
    job = {"type": "full", "tables": [table]}
    return commands.run_job(config, "maintenance", job, approver=NonInteractive())


def _writes_held(result: Any, table: str, reason: str) -> None:
    """Every step that would write to the table waits for a person, with the reason."""
    assert result.status == "waiting_approval", (result.status, result.error)
    ran = [
        (s.tool, s.sql)
        for s in result.steps
        if s.status == "succeeded"
        and s.risk_level != "safe"
        and any(not sql.startswith("--") for sql in s.sql)  # not "-- nothing to rebuild"
    ]
    assert not ran, ran
    held = [s for s in result.steps if any(reason in r for r in s.reasons)]
    assert held, [(s.tool, s.status, s.reasons) for s in result.steps]
    assert all(s.status == "waiting_approval" for s in held), [(s.tool, s.status) for s in held]


@pytest.fixture
def my_url() -> Iterator[str]:
    with scratch_mysql(name=f"fixcnt_{uuid.uuid4().hex[:10]}") as url:
        yield url


def test_mariadb_history_rows_of_a_versioned_table_are_counted(home: Path, my_url: str) -> None:
    _sql(
        my_url,
        "CREATE TABLE fixcnt_versioned (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40)) "
        "ENGINE=InnoDB WITH SYSTEM VERSIONING",
        "INSERT INTO fixcnt_versioned (v) SELECT 'row' FROM seq_1_to_20000",
        "UPDATE fixcnt_versioned SET v = 'changed'",
        "DELETE FROM fixcnt_versioned WHERE id > 10",
        "ANALYZE TABLE fixcnt_versioned",
    )
    assert _sql(my_url, "SELECT count(*) FROM fixcnt_versioned") == [10]
    config = _limited(home, my_url, max_rows=LIMIT)
    result = _run(config, "fixcnt_versioned")
    _writes_held(
        result,
        "fixcnt_versioned",
        f"table 'fixcnt_versioned' has at least {LIMIT + 1:,} rows, over max_table_size",
    )


@pytest.fixture
def pg_database_owner() -> Iterator[tuple[str, str]]:
    """A scratch database owned by a login role that is no superuser and bypasses no row
    security: (the admin URL, the role's URL)."""
    role = f"fixcnt_{uuid.uuid4().hex[:12]}"
    with scratch_postgresql() as url:
        name = make_url(url).database
        admin = engine(url)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            conn.execute(text(f'ALTER DATABASE "{name}" OWNER TO "{role}"'))
            conn.execute(text(f'GRANT ALL ON SCHEMA public TO "{role}"'))
        admin.dispose()
        yield url, make_url(url).set(username=role).render_as_string(hide_password=False)
    admin = engine(PG_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()


def test_postgresql_rows_row_security_hides_are_not_counted_as_absent(
    home: Path, pg_database_owner: tuple[str, str]
) -> None:
    admin_url, url = pg_database_owner
    role = make_url(url).username
    _sql(
        admin_url,
        "CREATE TABLE fixcnt_hidden (id int PRIMARY KEY, owner_name text, pad text) "
        "WITH (autovacuum_enabled = false)",
        "INSERT INTO fixcnt_hidden SELECT g, CASE WHEN g <= 10 THEN current_user ELSE "
        "'someone else' END, repeat('x', 20) FROM generate_series(1, 50000) g",
        "DELETE FROM fixcnt_hidden WHERE id % 3 = 0 AND id > 10",
        "ALTER TABLE fixcnt_hidden ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY fixcnt_mine ON fixcnt_hidden USING (id <= 10)",
        f'GRANT SELECT ON fixcnt_hidden TO "{role}"',
    )
    assert _sql(url, "SELECT count(*) FROM fixcnt_hidden") == [10]
    config = _limited(home, url, max_rows=LIMIT)
    result = _run(config, "fixcnt_hidden")
    _writes_held(
        result,
        "fixcnt_hidden",
        "table 'fixcnt_hidden': its rows could not be counted against max_table_size "
        f"({LIMIT:,} rows) (row-level security",
    )
