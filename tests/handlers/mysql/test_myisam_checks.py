"""CHECK TABLE is a plain read on InnoDB only: on MyISAM and Aria it writes the table's
check time into its file (a read-only session notwithstanding), and on every engine
that takes the server's table locks it holds off writers until it ends. A dry run
changes nothing and blocks no writer, so it checks only InnoDB tables and reports the
others not checked, with why; the real run checks them, under the lock its tools
declare."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.config.resources import bundled_catalog_dir
from aishell.policy.approvers import PreApproved
from aishell.registry import load_registry
from tests.guard.test_checks_run_no_user_code import check_output
from tests.guard.test_guard import execute
from tests.handlers.mysql.test_engine_ways import _preview_one
from tests.helpers import one_step_plan, use_target
from tests.services import engine, scratch_mysql

ENGINES = {"t_innodb": "InnoDB", "t_myisam": "MyISAM", "t_aria": "Aria", "t_csv": "CSV"}
# Engines whose CHECK TABLE records when it ran (information_schema's CHECK_TIME).
STAMPED = ("t_myisam", "t_aria")


@pytest.fixture
def database(home: Path) -> Iterator[tuple[Config, str]]:
    with scratch_mysql() as url:
        execute(
            url,
            *(
                # CSV keeps no NULL and no index.
                f"CREATE TABLE {t} (id INT NOT NULL, v INT NOT NULL) ENGINE={e}"
                for t, e in ENGINES.items()
            ),
            *(f"INSERT INTO {t} VALUES (1, 1), (2, 2)" for t in ENGINES),
        )
        yield use_target(home, url), url


def check_times(url: str) -> dict[str, Any]:
    conn_engine = engine(url)
    try:
        with conn_engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT TABLE_NAME, CHECK_TIME FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE()"
            ).all()
    finally:
        conn_engine.dispose()
    return {str(name): stamp for name, stamp in rows}


@pytest.mark.parametrize("kind", ["full", "emergency"])
def test_a_dry_run_checks_only_innodb_tables(database: tuple[Config, str], kind: str) -> None:
    config, url = database
    assert all(check_times(url)[t] is None for t in STAMPED)
    run = commands.run_job(config, "maintenance", {"type": kind}, dry_run=True)
    assert run.status == "completed", run.error
    check = check_output(run.steps)
    assert check["status_by_table"]["t_innodb"] == "ok", check
    reasons = {u["table"]: u["reason"] for u in check["unchecked_tables"]}
    for table, engine_name in ENGINES.items():
        if table == "t_innodb":
            continue
        assert check["status_by_table"][table] == "not checked", check
        assert reasons[table].startswith(f"{engine_name}: CHECK TABLE "), reasons
        assert "run the real maintenance to check it" in reasons[table]
    assert "writes the table's check time" in reasons["t_myisam"]
    assert "writers wait" in reasons["t_csv"]
    # Nothing was written: no check time where the engine keeps one.
    assert {t: check_times(url)[t] for t in STAMPED} == {t: None for t in STAMPED}


def test_a_real_check_checks_every_engine(database: tuple[Config, str]) -> None:
    config, url = database
    plan = one_step_plan(
        "maintenance", "db", "mysql", "check_table_corruption", {"tables": list(ENGINES)}
    )
    step = commands.apply_plan(config, plan, approver=PreApproved()).steps[0]
    assert step.status == "succeeded", step.error
    assert step.output["status_by_table"] == {t: "ok" for t in ENGINES}
    assert all(check_times(url)[t] is not None for t in STAMPED)


@pytest.mark.parametrize("tool", ["check_table_corruption", "analyze_database_health"])
def test_the_tools_declare_the_table_lock_writers_wait_behind(tool: str) -> None:
    """On MyISAM and Aria the check's metadata lock (SHARED_READ) lets writers on; the
    engine's own read lock, as LOCK TABLES ... READ takes, does not."""
    locks = load_registry([bundled_catalog_dir()]).get(tool).locks_on("mysql")
    engine_lock = [lock for lock in locks if lock.mode == "SHARED_READ_ONLY"]
    assert len(engine_lock) == 1, locks
    assert "MyISAM" in engine_lock[0].held and "writers wait" in engine_lock[0].held


def test_a_real_runs_preview_names_the_tables_whose_writers_wait(
    database: tuple[Config, str],
) -> None:
    """The preview says beside its CHECK TABLEs which tables' writers a real run holds
    off meanwhile (each but InnoDB's), the engines read once for the step."""
    config, _url = database
    step = _preview_one(config, "check_table_corruption", {"tables": list(ENGINES)}).steps[0]
    notes = [sql for sql in step.sql if sql.startswith("--")]
    assert sum("information_schema.TABLES" in sql for sql in step.sql) == 1, step.sql
    assert notes == [
        "-- t_myisam (MyISAM), t_aria (Aria), t_csv (CSV): writes to each wait until its "
        "CHECK TABLE ends (the engine's table read lock); reads go on (a dry run leaves "
        "them unchecked)"
    ], step.sql
    assert step.sql.index(notes[0]) < step.sql.index("CHECK TABLE `t_myisam`")
    # An InnoDB table alone: no such line.
    alone = _preview_one(config, "check_table_corruption", {"tables": ["t_innodb"]}).steps[0]
    assert not any(sql.startswith("--") for sql in alone.sql), alone.sql
