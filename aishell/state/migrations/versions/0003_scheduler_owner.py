"""The start time of the process that runs a run, beside its pid and host.

With it a run whose process is gone is told from one whose pid was reused by a later
process, so `schedule serve` can take back the runs it started before it was killed.
Runs stored before this revision have none: their pid alone is asked.

Revision ID: 0003_scheduler_owner
Revises: 0002_signed_runs
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0003_scheduler_owner"
down_revision = "0002_signed_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.add_column("runs", sa.Column("pid_started", sa.String(32)))


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
