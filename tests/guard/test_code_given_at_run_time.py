"""Code the catalog cannot vouch for (PostgreSQL).

The catalog's own functions that run what they are given at run time (table_to_xml of
a name made at run time, query_to_xml of SQL text) call code no dependency records; a
function its owner added to an extension is no extension's code. Each is shown running
where aishell would have called the step harmless: a sequence it advances, or a row it
writes, tells.
"""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.errors import TargetError
from aishell.executor.results import StepResult
from aishell.handlers import Handler
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.guard.test_guard import (
    execute,
    handler_tool,
    handlers,
    make_tables,
    run_one,
    scalar,
    scratch_database,
)
from tests.guard.test_guard_hidden import _read
from tests.helpers import use_target

__all__ = ["handlers"]  # the fixture, found by pytest in this module

# Runs, and says so by advancing a sequence: what no rollback undoes.
SPY = [
    "CREATE SEQUENCE ran",
    "CREATE FUNCTION w() RETURNS int VOLATILE LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM nextval('ran'); RETURN 1; END $$",
]


def _ran(url: str) -> int:
    return int(scalar(url, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ran"))


@contextmanager
def bystander(url: str) -> Iterator[str]:
    """A session of the test's own, by a name of its own: what a read-only session may
    still do to it (end it) no rollback undoes. Yields its name."""
    name = f"aishell_bystander_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url, connect_args={"application_name": name})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            yield name
    finally:
        engine.dispose()


def _alive(url: str, name: str) -> bool:
    return bool(
        scalar(url, f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'")
    )


# Views that end the bystander's session when read: one through a view whose name it
# makes at run time, one by calling the catalog's function itself. Neither call is in
# pg_depend: it records no dependency on the catalog's own functions.
KILLER = (
    "pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
    "WHERE application_name = '{name}'"
)
VIEWS = {
    "named-at-run-time": [
        "CREATE FUNCTION w() RETURNS int VOLATILE LANGUAGE plpgsql AS $$ BEGIN "
        f"PERFORM {KILLER}; RETURN 1; END $$",
        "CREATE VIEW ev AS SELECT w() AS x",
        "CREATE VIEW hv AS SELECT "
        "pg_catalog.table_to_xml(('e' || 'v')::text::regclass, true, false, '') AS doc",
    ],
    "catalog-call": [f"CREATE VIEW hv AS SELECT {KILLER}"],
}


@pytest.mark.parametrize("kind", sorted(VIEWS))
def test_a_view_that_runs_what_its_dependencies_do_not_show_is_no_plain_read(
    home: Path, tmp_path: Path, handlers: types.ModuleType, kind: str
) -> None:
    with scratch_database("postgresql", tmp_path) as url, bystander(url) as name:
        make_tables(url)
        execute(url, *(sql.replace("{name}", name) for sql in VIEWS[kind]))
        handler = Handler(sql_templates=("SELECT * FROM {table}",), run_fn=_read)
        config = handler_tool(home, url, handlers, "status_reader", handler, "safe")

        run = run_one(config, url, "status_reader", {"table": "t", "statement": "SELECT * FROM hv"})

        assert run.steps[0].status == "failed"
        assert "view public.hv runs a function that may write" in (run.steps[0].error or "")
        assert _alive(url, name)


LOGS = [
    "CREATE TABLE app_logs (id int PRIMARY KEY, created_at timestamptz, msg text)",
    "INSERT INTO app_logs SELECT g, now() - g * interval '1 day', 'm' || g "
    "FROM generate_series(1, 100) g",
]


def test_an_archive_table_whose_check_runs_sql_text_is_refused(home: Path, tmp_path: Path) -> None:
    """The archive's check calls only the catalog's query_to_xml; the SQL it is given
    calls w(), once for every row archived."""
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *SPY,
            *LOGS,
            "CREATE TABLE app_logs_archive (id int PRIMARY KEY, created_at timestamptz, "
            "msg text, CONSTRAINT looks_fine CHECK ("
            "pg_catalog.query_to_xml('SELECT public.w()', true, false, '') IS NOT NULL))",
        )
        config = use_target(home, url)
        job = {
            "table": "app_logs",
            "date_column": "created_at",
            "retention_days": 80,
            "archive_to": "table:app_logs_archive",
        }

        with pytest.raises(TargetError) as refused:
            commands.run_job(config, "log_cleanup", job, approver=PreApproved(up_to=RiskLevel.HIGH))

        said = str(refused.value)
        assert "check constraint looks_fine calls a user-defined function or server code" in said
        assert scalar(url, "SELECT count(*) FROM app_logs") == 100
        assert _ran(url) == 0


@contextmanager
def extension_owner(url: str) -> Iterator[str]:
    """A login of the test's own that owns the database's schema public and may create
    trusted extensions in it; its URL."""
    role = f"aishell_ext_{uuid.uuid4().hex[:8]}"
    database = make_url(url).database
    execute(
        url,
        f'CREATE ROLE "{role}" LOGIN',
        f'GRANT CREATE ON DATABASE "{database}" TO "{role}"',
        f'ALTER SCHEMA public OWNER TO "{role}"',
    )
    try:
        yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        execute(url, "ALTER SCHEMA public OWNER TO pg_database_owner")
        execute(url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def _quick_analyze(home: Path, url: str) -> StepResult:
    """The ANALYZE of app_logs in a quick maintenance run approved up to low risk."""
    config = use_target(home, url)
    plan = commands.make_plan(config, "maintenance", {"type": "quick", "tables": ["app_logs"]})
    result = commands.apply_plan(config, plan, approver=PreApproved(up_to=RiskLevel.LOW))
    return next(s for s in result.steps if s.tool == "update_table_statistics")


def test_a_function_added_to_an_extension_by_its_owner_is_user_code(
    home: Path, tmp_path: Path
) -> None:
    """seg is a trusted extension: a login without superuser creates it and owns it,
    so it may add a function of its own to it. An index calls that function, which ANALYZE
    runs: the step says so and waits for a person's yes."""
    with scratch_database("postgresql", tmp_path) as url, extension_owner(url) as owner:
        execute(
            owner,
            "CREATE EXTENSION seg",
            *SPY,
            *LOGS,
            "CREATE FUNCTION zap(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM w(); RETURN $1; END $$",
            "ALTER EXTENSION seg ADD FUNCTION zap(int)",
            "CREATE INDEX app_logs_zap ON app_logs ((zap(id)))",
            "SELECT setval('ran', 1, false)",
        )
        analyze = _quick_analyze(home, url)

        assert analyze.status == "waiting_approval", (analyze.status, analyze.error)
        assert "index app_logs_zap on public.app_logs evaluates public.zap()" in (
            analyze.error or ""
        ), analyze.error
        assert _ran(url) == 0


def test_a_trusted_extension_a_login_creates_is_still_the_extensions_code(
    home: Path, tmp_path: Path
) -> None:
    """pg_trgm's functions and operator class, made by its script (owned by the
    superuser that ran it) for a login without superuser: an index of them is no user
    code, and ANALYZE runs at its own risk."""
    with scratch_database("postgresql", tmp_path) as url, extension_owner(url) as owner:
        execute(
            owner,
            "CREATE EXTENSION pg_trgm",
            *LOGS,
            "CREATE INDEX app_logs_trgm ON app_logs USING gin (msg gin_trgm_ops)",
        )
        analyze = _quick_analyze(home, url)

        assert analyze.status == "succeeded", (analyze.status, analyze.error)
