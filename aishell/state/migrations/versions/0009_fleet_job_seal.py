"""A fleet job's seal: its fields signed with the home's key, as a run's are, so that a
worker runs a target's run with the job and options the sender gave, not with what was
written into the store since.

Revision ID: 0009_fleet_job_seal
Revises: 0008_reached_databases
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0009_fleet_job_seal"
down_revision = "0008_reached_databases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.add_column("fleet_jobs", sa.Column("seal", sa.Text))


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
