"""A schedule's trigger sent to the fleet's queue, and the heartbeat of the processes
that run fleet tasks.

fleet_jobs names the schedule and the due time of the trigger that sent it (one fleet
job per trigger: a unique index on the two), and when its tasks had all reached the
broker; process_beats holds each beating process's last beat, by the state store
server's clock, so that a run whose worker died on another host shows interrupted.

Revision ID: 0007_fleet_triggers
Revises: 0006_fleet
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0007_fleet_triggers"
down_revision = "0006_fleet"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.add_column("fleet_jobs", sa.Column("schedule", sa.String(128)))
    revision_ops.add_column("fleet_jobs", sa.Column("due", sa.String(32)))
    revision_ops.add_column("fleet_jobs", sa.Column("sent_at", sa.String(32)))
    # The table is there: only its missing index is made.
    revision_ops.ensure_tables(
        sa.Table(
            "fleet_jobs",
            sa.MetaData(),
            sa.Column("schedule", sa.String(128)),
            sa.Column("due", sa.String(32)),
            sa.Index("uq_fleet_jobs_trigger", "schedule", "due", unique=True),
        )
    )
    revision_ops.create_table(
        "process_beats",
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_started", sa.String(32), nullable=False),
        sa.Column("beat_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("hostname", "pid", "pid_started", name="pk_process_beats"),
    )


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
