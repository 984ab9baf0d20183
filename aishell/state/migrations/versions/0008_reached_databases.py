"""The reached_databases table: per target name, the database a run last reached through
it, and the fingerprint of the config that reached it, so that a target's backups are
judged by the database it reaches without connecting to it.

Revision ID: 0008_reached_databases
Revises: 0007_fleet_triggers
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0008_reached_databases"
down_revision = "0007_fleet_triggers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.create_table(
        "reached_databases",
        sa.Column("target", sa.String(128), primary_key=True),
        sa.Column("database_identity", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32)),
        sa.Column("reached_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
