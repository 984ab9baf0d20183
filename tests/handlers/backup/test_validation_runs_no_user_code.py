"""A validation's scratch copy is inert: restoring a backup to check it runs none of the
database's own code (index expressions, partial-index predicates, CHECK constraints,
domain checks, generated columns, materialized views, MariaDB events). What could not
be restored without running code is left out and named, and the rest is still compared.

The code under test writes a row to a log database of the test's own (PostgreSQL through
dblink, MariaDB through an event), so any run of it leaves a trace outside the copy."""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config, load_config
from tests.helpers import use_target
from tests.private_servers import private_mariadb
from tests.services import engine, scratch_mysql, scratch_postgresql

validate_module = importlib.import_module("aishell.handlers.backup.validate")

# How long the scratch copy is kept before it is measured: an event that runs every
# second has had its chance by then.
LINGER = 2.5


def _pg_code(target: str, log_db: str) -> list[str]:
    """User code the restore of a backup of `target` would run: each writes its tag to
    the log database through dblink."""
    connect = f"dbname={log_db} host=127.0.0.1 user=postgres"
    return [
        "CREATE EXTENSION dblink",
        "CREATE FUNCTION public.trace(tag text) RETURNS boolean LANGUAGE plpgsql "
        "IMMUTABLE SECURITY DEFINER AS $$ BEGIN "
        f"PERFORM public.dblink_exec('{connect}', "
        "'INSERT INTO log(tag) VALUES (' || quote_literal(tag) || ')'); "
        "RETURN true; END $$",
        "CREATE TABLE plain (id int PRIMARY KEY, v text)",
        "INSERT INTO plain SELECT g, 'v' || g FROM generate_series(1, 50) g",
        "CREATE TABLE t_expr (id int PRIMARY KEY, v text)",
        "INSERT INTO t_expr SELECT g, 'x' || g FROM generate_series(1, 20) g",
        "CREATE INDEX t_expr_fn ON t_expr ((trace('expr_index:' || v)))",
        "CREATE TABLE t_part (id int PRIMARY KEY, v text)",
        "INSERT INTO t_part SELECT g, 'x' || g FROM generate_series(1, 20) g",
        "CREATE INDEX t_part_idx ON t_part (v) WHERE trace('partial_index')",
        "CREATE STATISTICS t_part_s ON (trace('ext_stats:' || v)), id FROM t_part",
        "CREATE DOMAIN ts_dom AS timestamptz CHECK (trace('domain_check:' || VALUE))",
        "CREATE TABLE t_dom (id int PRIMARY KEY, created_at ts_dom)",
        "INSERT INTO t_dom SELECT g, now() FROM generate_series(1, 20) g",
        "CREATE TABLE t_check (id int PRIMARY KEY, CONSTRAINT c CHECK (trace('check:' || id)))",
        "INSERT INTO t_check SELECT g FROM generate_series(1, 20) g",
        "CREATE TABLE t_gen (id int PRIMARY KEY, "
        "g boolean GENERATED ALWAYS AS (trace('generated') AND id > 0) STORED)",
        "INSERT INTO t_gen(id) SELECT g FROM generate_series(1, 20) g",
        "CREATE MATERIALIZED VIEW mv_fn AS SELECT id FROM plain WHERE trace('matview:' || id)",
        "CREATE VIEW v_fn AS SELECT id FROM plain WHERE trace('view')",
    ]


@pytest.fixture
def pg_log() -> Iterator[tuple[str, str]]:
    """A log database of the test's own: (its name, its URL)."""
    name = f"fixval_log_{uuid.uuid4().hex[:8]}"
    with scratch_postgresql(name=name) as url:
        with engine(url).connect() as conn:
            conn.execute(text("CREATE TABLE log (tag text, at timestamptz DEFAULT now())"))
        yield name, url


def _trusting(home: Path, url: str) -> Config:
    """The target `db` at url, its function public.trace trusted: the backup's own
    reads may then go through the domain (the backup is what is tested, not the guard)."""
    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["trusted_functions"] = ["public.trace"]
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def _logged(url: str, table: str = "log") -> list[Any]:
    with engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}"))]


def _clear(url: str) -> None:
    with engine(url).connect() as conn:
        conn.execute(text("DELETE FROM log"))


def _clear_before_validating(monkeypatch: pytest.MonkeyPatch, log_url: str) -> None:
    """Empty the log as the validation starts: what the backup's own reads of the live
    database ran before it is not what is tested."""
    restore = validate_module._validate_server

    def cleared(*args: Any, **kwargs: Any) -> Any:
        _clear(log_url)
        return restore(*args, **kwargs)

    monkeypatch.setattr(validate_module, "_validate_server", cleared)


def test_postgresql_validation_runs_no_user_code(
    home: Path, pg_log: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log_db, log_url = pg_log
    with engine("postgresql+psycopg://postgres@127.0.0.1:5432/test").connect() as conn:
        available = conn.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'")
        ).scalar_one()
    if not available:
        pytest.skip("dblink is not available on the local PostgreSQL")
    with scratch_postgresql(name=f"fixval_pg_{uuid.uuid4().hex[:8]}") as url:
        with engine(url).connect() as conn:
            for statement in _pg_code(url, log_db):
                conn.execute(text(statement))
        assert _logged(log_url), "the set-up's own code writes to the log"
        config = _trusting(home, url)
        _clear_before_validating(monkeypatch, log_url)
        result = commands.run_job(config, "backup", {"type": "full"})
        assert result.status == "completed", result.error
        assert _logged(log_url) == [], (
            "the validation ran the database's code",
            [(s.tool, s.status) for s in result.steps],
        )
        out = result.steps[2].output
        left_out = "\n".join(out["not_restored"])
        for name in ("t_expr_fn", "t_part_idx", "t_part_s", "mv_fn", "table t_gen"):
            assert name in left_out, left_out
        assert "public.trace" in left_out
        not_validated = set(out["not_validated"])
        assert {"t_dom", "t_check", "t_gen"} <= not_validated
        assert "plain" not in not_validated and "t_expr" not in not_validated
        # Everything else is still measured: plain, t_expr and t_part.
        assert out["tables_compared"] == 3
        assert out["ok"] is True


def test_postgresql_measurement_sees_forced_row_security_off(home: Path, pg_log) -> None:
    """A table whose row level security is forced would run its policies, user code, as
    the copy is measured: the copy does not enable it."""
    log_db, log_url = pg_log
    with scratch_postgresql(name=f"fixval_rls_{uuid.uuid4().hex[:8]}") as url:
        with engine(url).connect() as conn:
            for statement in _pg_code(url, log_db)[:2]:
                conn.execute(text(statement))
            conn.execute(text("CREATE TABLE r (id int PRIMARY KEY)"))
            conn.execute(text("INSERT INTO r SELECT generate_series(1, 10)"))
            conn.execute(text("CREATE POLICY p ON r USING (public.trace('policy'))"))
            conn.execute(text("ALTER TABLE r ENABLE ROW LEVEL SECURITY"))
            conn.execute(text("ALTER TABLE r FORCE ROW LEVEL SECURITY"))
        config = _trusting(home, url)
        _clear(log_url)
        result = commands.run_job(config, "backup", {"type": "full"})
        assert result.status == "completed", result.error
        out = result.steps[2].output
        assert any("row level security" in s and "r" in s for s in out["not_restored"]), out
        assert out["tables_compared"] == 1


@pytest.fixture
def scheduler_on() -> Iterator[str]:
    """A MariaDB of the test's own whose event scheduler runs."""
    with private_mariadb("--event-scheduler=ON") as (url, _stop, _start):
        yield url


def _lingering(monkeypatch: pytest.MonkeyPatch, seen: dict[str, Any]) -> None:
    """Keep the scratch copy a while before it is measured, noting the events it holds."""
    measure = validate_module.measure_server

    def slow(url: Any, database: str, manifest: Any, ctx: Any) -> Any:
        time.sleep(LINGER)
        with engine(url.set(database=database).render_as_string(False)).connect() as conn:
            seen["events"] = conn.execute(
                text("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = :d"),
                {"d": database},
            ).all()
        return measure(url, database, manifest, ctx)

    monkeypatch.setattr(validate_module, "measure_server", slow)


def test_mariadb_validation_restores_no_event(
    home: Path, scheduler_on: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_url(scheduler_on)
    with engine(scheduler_on).connect() as conn:
        conn.execute(text("CREATE DATABASE fixval_log"))
        conn.execute(text("CREATE TABLE fixval_log.log (db varchar(64), at datetime)"))
    with scratch_mysql(root.render_as_string(False), name="fixval_events") as url:
        with engine(url).connect() as conn:
            conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, v varchar(20))"))
            conn.execute(text("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')"))
            conn.execute(
                text(
                    "CREATE EVENT ev_every ON SCHEDULE EVERY 1 SECOND DO "
                    "INSERT INTO fixval_log.log VALUES (DATABASE(), NOW())"
                )
            )
        seen: dict[str, Any] = {}
        _lingering(monkeypatch, seen)
        config = use_target(home, url)
        result = commands.run_job(config, "backup", {"type": "full"})
        assert result.status == "completed", result.error
        out = result.steps[2].output
        with engine(scheduler_on).connect() as conn:
            from_copies = conn.execute(
                text("SELECT count(*) FROM fixval_log.log WHERE db <> 'fixval_events'")
            ).scalar_one()
            own = conn.execute(
                text("SELECT count(*) FROM fixval_log.log WHERE db = 'fixval_events'")
            ).scalar_one()
        assert own > 0, "the event runs on this server"
        assert from_copies == 0, "an event ran in the validation's scratch copy"
        assert seen["events"] == []
        assert any("events" in s and "ev_every" in s for s in out["not_restored"]), out
        assert out["tables_compared"] == 1 and out["ok"] is True
