"""A backup's seal: its catalog row signed with the home's key, as a schedule's is, so
that restore, validation, retention and an incremental's choice of parent act on the
file, checksum and manifest aishell recorded, not on what was written into the store
since. A backup recorded before has none, and is refused by each of them until a person
adopts it (`aishell backups adopt`, its file checked against the row) or takes a new one.

Revision ID: 0011_backup_seal
Revises: 0010_schedule_seal
"""

from __future__ import annotations

import sqlalchemy as sa

from aishell.state import revision_ops

revision = "0011_backup_seal"
down_revision = "0010_schedule_seal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.add_column("backups", sa.Column("seal", sa.Text))


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
