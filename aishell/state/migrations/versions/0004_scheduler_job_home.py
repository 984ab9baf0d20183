"""The scheduler's stored jobs name the function they run, and pickle their trigger's
class, by module path; both now live in aishell.scheduling (serve.fire and
crontab.CrontabTrigger). A job stored before names the old paths, which APScheduler
would fail to load and then delete, losing its next fire time (a trigger missed while
serve was down must survive the upgrade). Each such job is given the new paths,
everything else in it kept.

Revision ID: 0004_scheduler_job_home
Revises: 0003_scheduler_owner
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004_scheduler_job_home"
down_revision = "0003_scheduler_owner"
branch_labels = None
depends_on = None

# APScheduler's table (aishell.scheduling.serve.JOB_TABLE), made by serve when it first
# runs: a store serve never ran on has none.
JOB_TABLE = "apscheduler_jobs"
FORMER_FIRE = "aishell.scheduling:fire"
FIRE = "aishell.scheduling.serve:fire"
MOVED_MODULES = {"aishell.crontab": "aishell.scheduling.crontab"}


class _MovedClasses(pickle.Unpickler):
    """Reads a pickle whose classes name a module by its former path."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table(JOB_TABLE):
        return
    jobs = sa.table(JOB_TABLE, sa.column("id", sa.String), sa.column("job_state", sa.LargeBinary))
    for job_id, state in bind.execute(sa.select(jobs.c.id, jobs.c.job_state)).all():
        # The state is the dict APScheduler pickled itself; its trigger's classes are
        # APScheduler's and the timezone's, all importable here.
        job = _MovedClasses(io.BytesIO(state)).load()
        if job.get("func") != FORMER_FIRE:
            continue
        job["func"] = FIRE
        bind.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(job_state=pickle.dumps(job, pickle.HIGHEST_PROTOCOL))
        )


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
