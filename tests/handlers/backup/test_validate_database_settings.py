"""A PostgreSQL database whose own settings (ALTER DATABASE ... SET, ALTER ROLE ... IN
DATABASE ... SET) change what its sessions search or read validates: the scratch
database the validation restores into is given the settings aishell's sessions on the
source run with, so the copy's tables are those of the schema the manifest was taken
in, and its rows read as the source's did. A restore into the database compares the
same tables. Every database and role a test names is unique to it and dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import Prompting
from tests.helpers import run_sql, use_target
from tests.services import PG_ADMIN, admin_engine

_OTHER_SCHEMA = (
    "CREATE SCHEMA other",
    "CREATE TABLE other.o1 (id int PRIMARY KEY, at timestamptz)",
    "INSERT INTO other.o1 VALUES (1, '2026-01-02 03:04:05+00'), (2, NULL)",
    "CREATE TABLE public.p1 (id int PRIMARY KEY)",
)


@contextmanager
def database_of_role() -> Iterator[tuple[str, str, str]]:
    """A new login role, and a database it owns: the role's name, the database's name
    and the URL logging in as the role; both dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    role, name = f"aishell_role_{suffix}", f"aishell_set_{suffix}"
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN CREATEDB'))
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{role}"'))
            try:
                url = make_url(PG_ADMIN).set(username=role, database=name)
                yield role, name, url.render_as_string(False)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    finally:
        admin.dispose()


def _backed_up(home: Path, url: str) -> dict:
    config = use_target(home, url)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [taken, validated] = [s for s in done.steps if s.tool != "calculate_backup_size"]
    assert validated.output["ok"] is True, validated.output
    return {"taken": taken.output, "validated": validated.output, "config": config}


def test_a_database_searching_another_schema_validates_and_restores_the_same_tables(home):
    with database_of_role() as (_role, name, url):
        run_sql(url, *_OTHER_SCHEMA, f'ALTER DATABASE "{name}" SET search_path = other')
        done = _backed_up(home, url)
        assert list(done["taken"]["backup_record"]["manifest"]["tables"]) == ["o1"]
        assert done["validated"]["tables_compared"] == 1
        [backup] = commands.list_backups(done["config"], "db")
        typed = Prompting(ask=lambda request: "yes")
        restored = commands.restore(
            done["config"], backup["id"], "db", replace=True, approver=typed
        )
        assert restored.status == "completed", restored.error
        assert restored.steps[-1].output["restored_tables"] == 1


def test_a_role_searching_another_schema_in_the_database_validates(home):
    with database_of_role() as (role, name, url):
        run_sql(
            url, *_OTHER_SCHEMA, f'ALTER ROLE "{role}" IN DATABASE "{name}" SET search_path = other'
        )
        done = _backed_up(home, url)
        assert list(done["taken"]["backup_record"]["manifest"]["tables"]) == ["o1"]
        assert done["validated"]["tables_compared"] == 1


def test_a_database_in_another_time_zone_validates_its_checksums(home):
    """A timestamptz reads in the session's time zone: the copy's rows are read in the
    source's, and their checksums match."""
    with database_of_role() as (_role, name, url):
        run_sql(
            url,
            "CREATE TABLE o1 (id int PRIMARY KEY, at timestamptz)",
            "INSERT INTO o1 VALUES (1, '2026-01-02 03:04:05+00')",
        )
        run_sql(url, f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Tokyo'")
        done = _backed_up(home, url)
        assert done["validated"]["checksums_compared"] == 1
