"""A schedule's seal: its fields signed with the home's key, as a fleet job's are, so that
`schedule serve` runs each trigger with the job, options, target, agent and cron that
`schedule add` stored, not with what was written into the store since. A schedule stored
before has none, and serve runs none of its triggers until it is added again.

Revision ID: 0010_schedule_seal
Revises: 0009_fleet_job_seal
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0010_schedule_seal"
down_revision = "0009_fleet_job_seal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.add_column("schedules", sa.Column("seal", sa.Text))


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
