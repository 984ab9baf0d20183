"""Fleet jobs: a job sent to many targets through the queue, and the run each target's
task started, so that a task delivered again resumes that run instead of starting
another.

Revision ID: 0006_fleet
Revises: 0005_alerts
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0006_fleet"
down_revision = "0005_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.create_table(
        "fleet_jobs",
        sa.Column("fleet_id", sa.String(32), primary_key=True),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("job", sa.Text, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("selector", sa.Text, nullable=False),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    revision_ops.create_table(
        "fleet_runs",
        sa.Column("fleet_id", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False, unique=True),
        sa.Column("at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("fleet_id", "target", name="pk_fleet_runs"),
    )


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
