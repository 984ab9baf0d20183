"""An index of the runs in the order the runs list reads them, newest first and then by
id: `aishell runs list` and the web view's runs page read one page of it and go on from
the last run shown (`--after`), where a store without it sorts every run for each page.

Revision ID: 0012_runs_newest
Revises: 0011_backup_seal
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0012_runs_newest"
down_revision = "0011_backup_seal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    runs = sa.Table(
        "runs",
        sa.MetaData(),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    revision_ops.add_index(sa.Index("ix_runs_newest", runs.c.created_at.desc(), runs.c.run_id))


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
