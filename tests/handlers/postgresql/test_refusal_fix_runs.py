"""A table the role may not maintain is skipped with the SQL that would let it: that SQL,
pasted as it is, runs, whatever the table's name (a space, capitals, a quote), and the
next run maintains the table."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.handlers.maintenance.test_honest_statuses import (
    as_user,
    pg_last_maintenance,
    pg_role,  # noqa: F401 (a fixture)
)
from tests.helpers import use_target
from tests.services import engine

NAME = 'Their "Big" Table'


def test_the_fix_a_skipped_table_is_given_runs_as_written(
    home: Path,
    pg_role: tuple[str, str],  # noqa: F811
) -> None:
    url, role = pg_role
    admin = engine(url)
    with admin.connect() as conn:
        conn.execute(text('CREATE TABLE "Their ""Big"" Table" (id int PRIMARY KEY)'))
        conn.execute(text('INSERT INTO "Their ""Big"" Table" SELECT generate_series(1, 50)'))
        conn.execute(text(f'GRANT SELECT ON "Their ""Big"" Table" TO {role}'))
    config = use_target(home, as_user(url, role))
    job = {"type": "quick", "tables": [NAME]}

    first = commands.run_job(config, "maintenance", job, approver=PreApproved())
    [stats] = [s for s in first.steps if s.tool == "update_table_statistics"]
    [skipped] = stats.output["skipped_tables"]
    fix = skipped["reason"].rsplit(", or ", 1)[1]
    assert fix == f'ALTER TABLE "Their ""Big"" Table" OWNER TO {role}'
    assert pg_last_maintenance(url)[NAME][1] is None

    with admin.connect() as conn:
        conn.execute(text(fix))
    admin.dispose()
    second = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert second.status == "completed", second.error
    assert pg_last_maintenance(url)[NAME][1] is not None
