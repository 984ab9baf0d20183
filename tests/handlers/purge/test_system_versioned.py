"""A MariaDB table WITH SYSTEM VERSIONING is a table: maintenance finds it and keeps it
as any other, and a purge of it is refused, since its DELETE keeps each row as history
(the rows would be counted gone and still be there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.errors import TargetError
from tests.helpers import use_target
from tests.services import engine, scratch_mysql

PURGE = {"table": "vlogs", "date_column": "created_at", "retention_days": 30}


def test_a_system_versioned_table_is_maintained_and_never_purged(home: Path) -> None:
    with scratch_mysql() as url:
        with engine(url).connect() as conn:
            conn.execute(
                text(
                    "CREATE TABLE vlogs (id int PRIMARY KEY, created_at datetime NOT NULL) "
                    "WITH SYSTEM VERSIONING"
                )
            )
            conn.execute(
                text("INSERT INTO vlogs SELECT seq, NOW() - INTERVAL seq DAY FROM seq_1_to_60")
            )
            conn.commit()
        config = use_target(home, url)

        plan = commands.plan_job(config, "maintenance", {"type": "quick"})
        assert any(
            "vlogs" in (s.params.get("tables") or [s.params.get("table")])
            for s in plan.plan.steps
            if s.tool == "update_table_statistics"
        ), plan.plan

        with pytest.raises(TargetError, match="table vlogs cannot be purged: it is system-ver"):
            commands.run_job(config, "log_cleanup", PURGE)
        with engine(url).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM vlogs")).scalar_one() == 60
