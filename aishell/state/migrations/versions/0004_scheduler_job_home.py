"""The scheduler's stored jobs once named the function they run, and pickled their
trigger's class, by module paths that moved into aishell.scheduling. This revision gave
such jobs the new paths by reading each one's pickle. It no longer reads them: anyone who
can write to the state store can write a pickle that runs code when it is read, and a job
stored before jobs were signed (aishell/scheduling/jobstore.py) is one serve no longer
loads anyway: it is removed and made again from its schedule. So nothing is done here.

Revision ID: 0004_scheduler_job_home
Revises: 0003_scheduler_owner
"""

from __future__ import annotations

revision = "0004_scheduler_job_home"
down_revision = "0003_scheduler_owner"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: a stored job is read only once its signature is checked, by serve."""


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
