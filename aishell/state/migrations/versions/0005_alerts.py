"""The alerts table: each occurrence of a monitoring alert, so that it is sent once when
it fires and once when it resolves, by serve or by `aishell alerts check`, whichever
claims it first.

Revision ID: 0005_alerts
Revises: 0004_scheduler_job_home
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0005_alerts"
down_revision = "0004_scheduler_job_home"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("occurrence", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("fired_at", sa.String(32), nullable=False),
        sa.Column("sent_at", sa.String(32)),
        sa.Column("resolved_at", sa.String(32), index=True),
        sa.Column("resolved_sent_at", sa.String(32)),
        sa.UniqueConstraint("rule", "subject", "occurrence", name="uq_alerts_occurrence"),
    )


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
