"""Code a foreign key's action runs on another table: ON DELETE SET DEFAULT sets the
referencing rows' columns to their defaults, so a purge of the referenced table
evaluates the child's default once per row it reaches. The estimate names it and the
step waits for a yes; SET NULL evaluates no default and names none."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from tests.guard.test_guard import execute, scalar
from tests.guard.test_user_code import LOGS, PURGE, postgresql

SAID = (
    "the default of public.refs.log_id calls public.zap(), a user-defined function that "
    "may write (a foreign key's SET DEFAULT runs it)"
)


def _refs(action: str, default: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE refs (id integer PRIMARY KEY, log_id integer DEFAULT {default} "
        f"REFERENCES logs ON DELETE {action})",
        "INSERT INTO refs SELECT g, g FROM generate_series(1, 60) g",
    )


@pytest.mark.parametrize("on", ["DELETE", "UPDATE"])
def test_a_set_default_that_calls_a_function_is_named_and_waits(home: Path, on: str) -> None:
    with postgresql(home, *LOGS["postgresql"]) as (config, url):
        execute(url, *_refs("SET DEFAULT", "zap(1)"))
        if on == "UPDATE":  # the key's other action: the purge's DELETE reaches it not
            execute(
                url,
                "ALTER TABLE refs DROP CONSTRAINT refs_log_id_fkey",
                "ALTER TABLE refs ADD FOREIGN KEY (log_id) REFERENCES logs "
                "ON UPDATE SET DEFAULT ON DELETE SET DEFAULT",
            )
        before = scalar(url, "SELECT count(*) FROM victim")

        preview = commands.plan_job(config, "log_cleanup", PURGE)
        run = commands.run_job(config, "log_cleanup", PURGE)

        purge = next(s for s in preview.steps if s.tool == "delete_old_records")
        assert purge.risk_level == "high" and purge.requires_approval
        assert SAID in (purge.estimate or {}).get("user_code", []), purge.estimate
        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert run.status == "waiting_approval" and step.risk_level == "high"
        assert scalar(url, "SELECT count(*) FROM victim") == before
        assert scalar(url, "SELECT count(*) FROM logs") == 60


def test_a_set_default_of_a_constant_or_a_set_null_names_no_code(home: Path) -> None:
    for action, default in (("SET DEFAULT", "NULL"), ("SET NULL", "zap(1)")):
        with postgresql(home, *LOGS["postgresql"]) as (config, url):
            execute(url, *_refs(action, default))

            preview = commands.plan_job(config, "log_cleanup", PURGE)

            purge = next(s for s in preview.steps if s.tool == "delete_old_records")
            assert not (purge.estimate or {}).get("user_code"), (action, purge.estimate)


def test_innodb_runs_no_trigger_for_a_cascade_and_none_is_named(home: Path, tmp_path: Path):
    """MariaDB's InnoDB fires no trigger for the rows a foreign key's action deletes: a
    purge of the parent names the child's trigger in no estimate, and the trigger does
    not run. A trigger of the purged table itself is still named."""
    from tests.guard.test_guard import scratch_database
    from tests.guard.test_user_code import LOGS
    from tests.helpers import use_target

    with scratch_database("mysql", tmp_path) as url:
        execute(
            url,
            *LOGS["mysql"],
            "CREATE TABLE chi (id int PRIMARY KEY, log_id int, "
            "FOREIGN KEY (log_id) REFERENCES logs (id) ON DELETE CASCADE)",
            "INSERT INTO chi SELECT seq, seq FROM seq_1_to_60",
            "CREATE TRIGGER chi_gone AFTER DELETE ON chi FOR EACH ROW DELETE FROM victim",
        )
        config = use_target(home, url)

        preview = commands.plan_job(config, "log_cleanup", PURGE)

        purge = next(s for s in preview.steps if s.tool == "delete_old_records")
        said = (purge.estimate or {}).get("user_code") or []
        assert not any("chi_gone" in line for line in said), said
        assert any("chi" in line for line in (purge.estimate or {}).get("cascades", [])), purge
        execute(url, "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW SET @x = 1")
        preview = commands.plan_job(config, "log_cleanup", PURGE)
        purge = next(s for s in preview.steps if s.tool == "delete_old_records")
        assert any("logs_gone" in line for line in purge.estimate["user_code"]), purge.estimate


def test_a_sqlite_purge_says_which_rows_it_leaves_pointing_at_nothing(home: Path, tmp_path: Path):
    """aishell's SQLite sessions leave foreign keys off: a purge of a table other tables
    reference would leave their rows pointing at deleted ones. The estimate says so,
    naming the key, and the step waits for a person's yes to it."""
    from aishell.policy.approvers import PreApproved
    from aishell.risk import RiskLevel
    from tests.helpers import use_target

    url = f"sqlite:///{tmp_path / 'refs.db'}"
    execute(
        url,
        "CREATE TABLE logs (id integer PRIMARY KEY, created_at timestamp NOT NULL, n integer)",
        "INSERT INTO logs WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g "
        "WHERE i < 60) SELECT i, datetime('now', '-' || i || ' days'), i FROM g",
        "CREATE TABLE child (id integer PRIMARY KEY, log_id integer "
        "REFERENCES logs (id) ON DELETE CASCADE)",
        "INSERT INTO child SELECT id, id FROM logs",
    )
    config = use_target(home, url)

    preview = commands.plan_job(config, "log_cleanup", PURGE)
    purge = next(s for s in preview.steps if s.tool == "delete_old_records")
    said = (purge.estimate or {}).get("cascades") or []
    assert any(
        "deleting from logs leaves rows of child.log_id pointing at rows it removes" in line
        and "ON DELETE CASCADE" in line
        for line in said
    ), said
    run = commands.run_job(config, "log_cleanup", PURGE, approver=PreApproved(up_to=RiskLevel.HIGH))
    assert run.status == "waiting_approval", run.error
    assert scalar(url, "SELECT count(*) FROM logs") == 60
