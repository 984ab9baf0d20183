"""A restore names everything of its target it drops or overwrites, read from the backup's
own drop statements: tables, views, sequences, routines, triggers, events and types. One
that replaces what holds data (a table the backup holds as a view too) needs an approval
by its step's number; one that would stop part way is refused before anyone is asked."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target
from tests.services import engine, scratch_mysql, scratch_postgresql


def run_sql(url: str, *statements: str) -> None:
    eng = engine(url)
    with eng.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    eng.dispose()


def scalar(url: str, sql: str) -> Any:
    eng = engine(url)
    with eng.connect() as conn:
        value = conn.execute(text(sql)).scalar()
    eng.dispose()
    return value


@pytest.fixture
def target_url(server_url: str) -> Iterator[str]:
    """A second database on server_url's server: what the backup is restored into."""
    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as url:
        yield url


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def backup_of(home: Path, source: str, target: str, *statements: str) -> tuple[Config, int]:
    """A verified full backup of `source` after `statements`, and a config whose target
    `copy` is the restore's target."""
    run_sql(source, *statements)
    config = use_target(home, source, copy=target)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [listed] = commands.list_backups(config, "db")
    assert listed["verified_at"]
    return config, int(listed["id"])


def asked(config: Config, backup_id: int, replace: bool = True) -> Any:
    """The restore into `copy`, with every flag given: it waits for a person."""
    return commands.restore(config, backup_id, "copy", replace=replace, approver=PreApproved())


def estimate_of(run: Any) -> dict[str, Any]:
    [step] = run.steps
    assert step.status == "waiting_approval", step.error
    return dict(step.estimate)


def hundred_rows(url: str, table: str) -> list[str]:
    rows = ", ".join(f"({i}, 'kept {i}')" for i in range(100))
    return [
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, note VARCHAR(40))",
        f"INSERT INTO {table} VALUES {rows}",
    ]


# --- the finding: a table in the target, a view of that name in the backup ----------------


def test_a_table_the_backup_holds_as_a_view_is_named_and_keeps_its_rows(
    home: Path, server_url: str, target_url: str
) -> None:
    config, backup = backup_of(
        home,
        server_url,
        target_url,
        "CREATE TABLE base (id INTEGER PRIMARY KEY)",
        "INSERT INTO base VALUES (1)",
        "CREATE VIEW v AS SELECT id FROM base",
    )
    run_sql(target_url, *hundred_rows(target_url, "v"))
    run = asked(config, backup)
    if is_pg(target_url):
        # pg_restore --clean would stop at DROP VIEW with the target half dropped: refused.
        [step] = run.steps
        assert run.status == "failed" and step.error == (
            f"Backup {Path(str(step.params['backup_path'])).name} cannot be restored into "
            "'copy': pg_restore --clean would stop at DROP VIEW public.v: the target's "
            "public.v is a table; rename or drop that object first"
        )
    else:
        estimate = estimate_of(run)
        named = "table v (a view in the backup)"
        assert named in estimate["replaces_tables"] and named in estimate["replaces_data"]
        [step] = run.steps
        assert any("holding data in 'copy'" in r and named in r for r in step.personal)
        with pytest.raises(UsageError, match="needs its own approval"):
            commands.decide_steps(config, run.run_id, "approved")
    assert scalar(target_url, "SELECT count(*) FROM v") == 100


def test_a_view_the_backup_holds_as_a_table_is_refused_before_anyone_is_asked(
    home: Path, server_url: str, target_url: str
) -> None:
    config, backup = backup_of(home, server_url, target_url, *hundred_rows(server_url, "w"))
    run_sql(target_url, "CREATE TABLE base (id INTEGER)", "CREATE VIEW w AS SELECT id FROM base")
    run = asked(config, backup)
    [step] = run.steps
    assert run.status == "failed"
    if is_pg(target_url):
        assert "pg_restore --clean would stop at DROP TABLE public.w: the target's public.w" in (
            step.error or ""
        )
    else:
        assert (
            "the backup creates table w and the target has a view of that name, which the "
            "dump's drop statements leave in place; rename or drop that object first"
        ) in (step.error or "")
    assert scalar(target_url, "SELECT count(*) FROM w") == 0


# --- routines, triggers, events, sequences, types -----------------------------------------


def function_sql(url: str, body: str) -> str:
    if is_pg(url):
        return f"CREATE FUNCTION f(x INTEGER) RETURNS INTEGER LANGUAGE sql AS 'SELECT {body}'"
    return f"CREATE FUNCTION f(x INTEGER) RETURNS INTEGER DETERMINISTIC RETURN {body}"


def test_a_routine_is_named_and_needs_replace_but_holds_no_data(
    home: Path, server_url: str, target_url: str
) -> None:
    config, backup = backup_of(home, server_url, target_url, function_sql(server_url, "1"))
    run_sql(target_url, function_sql(target_url, "2"))
    label = "function public.f(integer)" if is_pg(target_url) else "function f"
    refused = asked(config, backup, replace=False)
    assert refused.status == "failed"
    assert "Target 'copy' holds what backup" in (refused.error or "")
    assert f"(1 object: {label}); restore into an empty database, or pass --replace" in (
        refused.error or ""
    )
    run = asked(config, backup)
    estimate = estimate_of(run)
    assert estimate["replaces_tables"] == [label] and estimate["replaces_data"] == []
    # Nothing holding data: the batch approval covers it.
    commands.decide_steps(config, run.run_id, "approved")
    done = commands.resume_run(config, run.run_id)
    assert done.status == "completed", done.error
    assert scalar(target_url, "SELECT f(5)") == 1


def test_a_table_with_a_trigger_names_both(home: Path, server_url: str, target_url: str) -> None:
    config, backup = backup_of(home, server_url, target_url, *hundred_rows(server_url, "t"))
    if is_pg(target_url):
        trigger = [
            "CREATE FUNCTION trf() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION trf()",
        ]
        names = ["table public.t", "trigger tr on public.t"]
    else:
        trigger = ["CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.note = NEW.note"]
        names = ["table t", "trigger tr on t"]
    run_sql(target_url, *hundred_rows(target_url, "t"), *trigger)
    estimate = estimate_of(asked(config, backup))
    assert sorted(estimate["replaces_tables"]) == names
    assert estimate["replaces_data"] == [names[0]]


def test_a_mariadb_event_and_procedure_are_named(mysql_url: str, home: Path) -> None:
    with scratch_mysql() as target:
        config, backup = backup_of(
            home,
            mysql_url,
            target,
            "CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1",
            "CREATE PROCEDURE p() SELECT 1",
        )
        run_sql(
            target,
            "CREATE EVENT ev ON SCHEDULE EVERY 1 HOUR DISABLE DO SELECT 2",
            "CREATE PROCEDURE p() SELECT 2",
            "CREATE EVENT untouched ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 3",
        )
        estimate = estimate_of(asked(config, backup))
        assert sorted(estimate["replaces_tables"]) == ["event ev", "procedure p"]
        assert estimate["replaces_data"] == []


def test_a_sequence_holds_data_and_a_postgresql_type_and_domain_are_named(
    home: Path, server_url: str, target_url: str
) -> None:
    statements = ["CREATE SEQUENCE sq"]
    if is_pg(server_url):
        statements += ["CREATE TYPE ty AS (a INTEGER)", "CREATE DOMAIN dm AS INTEGER"]
    config, backup = backup_of(home, server_url, target_url, *statements)
    run_sql(target_url, *statements)
    run = asked(config, backup)
    estimate = estimate_of(run)
    if is_pg(target_url):
        expected = ["domain public.dm", "sequence public.sq", "type public.ty"]
        data = ["sequence public.sq"]
    else:
        expected = data = ["sequence sq"]
    assert sorted(estimate["replaces_tables"]) == expected
    assert estimate["replaces_data"] == data
    with pytest.raises(UsageError, match="needs its own approval"):
        commands.decide_steps(config, run.run_id, "approved")


def test_an_overload_the_backup_lacks_is_not_named(pg_url: str, home: Path) -> None:
    with scratch_postgresql() as target:
        config, backup = backup_of(home, pg_url, target, function_sql(pg_url, "1"))
        run_sql(
            target,
            function_sql(target, "2"),
            "CREATE FUNCTION f(x TEXT) RETURNS INTEGER LANGUAGE sql AS 'SELECT 3'",
        )
        estimate = estimate_of(asked(config, backup))
        assert estimate["replaces_tables"] == ["function public.f(integer)"]


def test_an_empty_target_replaces_nothing(home: Path, server_url: str, target_url: str) -> None:
    config, backup = backup_of(
        home,
        server_url,
        target_url,
        *hundred_rows(server_url, "t"),
        "CREATE VIEW v AS SELECT id FROM t",
        function_sql(server_url, "1"),
    )
    run = asked(config, backup, replace=False)
    estimate = estimate_of(run)
    assert estimate["replaces_tables"] == [] and estimate["replaces_data"] == []
    [step] = run.steps
    assert step.sql[-1] == "-- replaces nothing in 'copy'"
    commands.decide_steps(config, run.run_id, "approved")
    done = commands.resume_run(config, run.run_id)
    assert done.status == "completed", done.error
    assert scalar(target_url, "SELECT count(*) FROM v") == 100


# --- SQLite: the whole file --------------------------------------------------------------


def test_a_sqlite_restore_names_the_views_and_triggers_of_the_file(
    config: Config, demo_db: Path, home: Path
) -> None:
    from tests.handlers.backup.test_restore_prechecks import sqlite_backup

    backup = sqlite_backup(config)
    with sqlite3.connect(demo_db) as raw:
        raw.execute("CREATE VIEW recent AS SELECT * FROM orders")
        raw.execute("CREATE TRIGGER audit AFTER INSERT ON users BEGIN SELECT 1; END")
    raw.close()
    run = commands.restore(config, backup["id"], "demo", replace=True, approver=PreApproved())
    estimate = estimate_of(run)
    tables = ["table app_logs", "table orders", "table products", "table users"]
    assert estimate["replaces_tables"] == [*tables, "trigger audit on users", "view recent"]
    assert estimate["replaces_data"] == tables


def test_a_sqlite_file_holding_only_a_view_needs_replace(
    config: Config, demo_db: Path, home: Path
) -> None:
    from tests.handlers.backup.test_restore_prechecks import add_target, sqlite_backup

    backup = sqlite_backup(config)
    target = home / "views-only.db"
    with sqlite3.connect(target) as raw:
        raw.execute("CREATE VIEW only_view AS SELECT 1 AS one")
    raw.close()
    config = add_target(home, "copy", f"sqlite:///{target}")
    run = commands.restore(config, backup["id"], "copy", approver=PreApproved())
    assert run.status == "failed"
    assert run.error == (
        f"Target 'copy' holds what backup {Path(backup['path']).name} would replace "
        "(1 object: view only_view); restore into an empty database, or pass --replace to "
        "overwrite it"
    )
    with sqlite3.connect(target) as raw:
        assert raw.execute("SELECT name FROM sqlite_schema").fetchall() == [("only_view",)]
    raw.close()
