"""Session options a PostgreSQL target would get from outside its URL (PGOPTIONS in the
environment, a pg_service.conf service's `options`) are refused in one line, as the
URL's own are: aishell's sessions set theirs and overrode them, while its second
sessions (a validation's scratch database, a restore's measure) took them, so a backup
listed the tables of one schema and validated those of another. A role's own
search_path (ALTER ROLE ... SET) reaches every session alike, and a backup validates.
Every database, role and service a test names is unique to it, and dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from tests.helpers import run_sql, use_target
from tests.services import PG_ADMIN, admin_engine

_TWO_SCHEMAS = (
    "CREATE SCHEMA other",
    "CREATE TABLE other.o1 (id int PRIMARY KEY)",
    "CREATE TABLE public.p1 (id int PRIMARY KEY)",
    "INSERT INTO public.p1 VALUES (1), (2)",
)


def _refused_in_one_line(home: Path, url: str, said: str) -> None:
    run_sql(url, *_TWO_SCHEMAS)
    use_target(home, url)
    done = CliRunner().invoke(cli, ["run", "backup", "--type", "full", "--yes"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: Target 'db': {said}"), line
    assert not list((home / "backups").rglob("*.dump")), "nothing may be taken"


def test_pgoptions_in_the_environment_is_refused_in_one_line(home, pg_url, monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c search_path=other")
    _refused_in_one_line(home, pg_url, "PGOPTIONS is set in the environment")


@pytest.mark.parametrize("setting", ["-c search_path=other", "-c TimeZone=Asia/Tokyo"])
def test_a_service_setting_options_is_refused_in_one_line(home, pg_url, user_home, setting):
    service = f"svc_{uuid.uuid4().hex[:6]}"
    database = make_url(pg_url).database
    (user_home / ".pg_service.conf").write_text(
        f"[{service}]\nhost=127.0.0.1\nport=5432\ndbname={database}\nuser=postgres\n"
        f"options={setting}\n"
    )
    run_sql(pg_url, "SELECT 1")
    _refused_in_one_line(
        home,
        f"postgresql+psycopg:///?service={service}",
        f"PostgreSQL service '{service}' sets options",
    )


def test_blank_outside_options_are_no_options(home, pg_url, monkeypatch):
    monkeypatch.setenv("PGOPTIONS", " ")
    run_sql(pg_url, *_TWO_SCHEMAS)
    done = commands.run_job(use_target(home, pg_url), "backup", {"type": "full"})
    assert done.status == "completed", done.error


@contextmanager
def role_searching(schema: str, database_url: str) -> Iterator[str]:
    """A login role whose own search_path is `schema`, owning database_url's database;
    the URL logging in as it. Dropped afterwards, what it owns given back first."""
    role = f"aishell_role_{uuid.uuid4().hex[:10]}"
    name = make_url(database_url).database
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    inside = admin_engine(database_url, "PostgreSQL")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN CREATEDB'))
        try:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER ROLE "{role}" SET search_path = "{schema}"'))
                conn.execute(text(f'ALTER DATABASE "{name}" OWNER TO "{role}"'))
            yield make_url(database_url).set(username=role).render_as_string(False)
        finally:
            # REASSIGN OWNED gives back the database too; DROP OWNED its grants.
            with inside.connect() as conn:
                conn.execute(text(f'REASSIGN OWNED BY "{role}" TO postgres'))
                conn.execute(text(f'DROP OWNED BY "{role}"'))
            with admin.connect() as conn:
                conn.execute(text(f'DROP ROLE "{role}"'))
    finally:
        inside.dispose()
        admin.dispose()


def test_a_role_searching_another_schema_is_searched_by_every_session(home, pg_url):
    with role_searching("other", pg_url) as url:
        run_sql(url, *_TWO_SCHEMAS)
        run_sql(url, "INSERT INTO o1 VALUES (7)")
        done = commands.run_job(use_target(home, url), "backup", {"type": "full"})
        assert done.status == "completed", done.error
        [_size, taken, validated] = done.steps
        assert taken.output["backup_record"]["manifest"]["tables"] == {"o1": 1}
        assert validated.output["tables_compared"] == 1
