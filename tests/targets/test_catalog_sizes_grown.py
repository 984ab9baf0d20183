"""A table's size in the plan's catalog is the size it is, not the one its statistics
counted before it was filled a hundredfold: it decides which tables share a step (small
ones do, one of 64 MiB or more has its own) and how long a step is expected to take
before a maintenance window closes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.targets.engines import open_target
from aishell.targets.tables import TableCatalog
from tests.helpers import use_target
from tests.services import (
    changes_counted,
    engine,
    scratch_mysql,
    scratch_server,
)

MIB = 2**20

FILLED = {
    "postgresql": (
        [
            "CREATE TABLE {t} (id int PRIMARY KEY, pad text NOT NULL) "
            "WITH (autovacuum_enabled = false)",
            "INSERT INTO {t} SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g",
            "VACUUM (ANALYZE) {t}",
        ],
        "INSERT INTO big SELECT g, repeat('y', 100) FROM generate_series(1001, 600000) g",
        "SELECT pg_total_relation_size('big')",
    ),
    "mysql": (
        [
            "CREATE TABLE {t} (id int PRIMARY KEY AUTO_INCREMENT, pad char(200)) "
            "STATS_PERSISTENT=1 STATS_AUTO_RECALC=0",
            "INSERT INTO {t} (pad) SELECT 'x' FROM seq_1_to_1000",
            "ANALYZE TABLE {t}",
        ],
        "INSERT INTO big (pad) SELECT 'y' FROM seq_1_to_260000",
        "SELECT FILE_SIZE FROM information_schema.INNODB_SYS_TABLESPACES "
        "WHERE NAME = CONCAT(DATABASE(), '/big')",
    ),
}


@pytest.mark.parametrize("dialect", sorted(FILLED))
def test_a_table_filled_since_its_statistics_is_sized_as_it_is(home: Path, dialect: str) -> None:
    made, fill, measure = FILLED[dialect]
    with scratch_server(dialect) as url:
        with engine(url).connect() as conn:
            for table in ("big", "small1", "small2"):
                for sql in made:
                    conn.execute(text(sql.format(t=table)))
            conn.execute(text(fill))
            conn.commit()
            real = int(conn.execute(text(measure)).scalar_one())
        if dialect == "postgresql":
            changes_counted(url, "big")
        assert real > 64 * MIB
        config = use_target(home, url)
        handle = open_target(config, None, read_only=True)
        try:
            with handle.connect() as conn:
                sized = TableCatalog.read(conn).tables["big"].bytes
        finally:
            handle.close()
        assert sized is not None and sized >= real * 0.8, (sized, real)

        plan = commands.plan_job(config, "maintenance", {"type": "quick"})
        statistics = [
            s.params.get("tables") or [s.params.get("table")]
            for s in plan.plan.steps
            if s.tool == "update_table_statistics"
        ]
        assert ["big"] in statistics, statistics


def test_a_mariadb_backup_is_sized_by_what_its_tables_hold_now(home: Path) -> None:
    """The backup's space check estimates from the tables' files, not from statistics
    counted before a table was filled."""
    from aishell.policy.approvers import PreApproved
    from tests.helpers import one_step_plan

    made, fill, measure = FILLED["mysql"]
    with scratch_mysql() as url:
        with engine(url).connect() as conn:
            for sql in made:
                conn.execute(text(sql.format(t="big")))
            conn.execute(text(fill))
            conn.commit()
            real = int(conn.execute(text(measure)).scalar_one())
        config = use_target(home, url)
        plan = one_step_plan("backup", "db", "mysql", "calculate_backup_size", {})
        run = commands.apply_plan(config, plan, approver=PreApproved())
        assert run.status == "completed", run.error
        estimated = run.steps[0].output["estimated_bytes"]
        assert real * 0.6 <= estimated <= real, (estimated, real)
