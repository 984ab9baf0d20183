"""Signed runs and approvals bound to their facts.

Adds runs.seal, the home key's signature of what resume trusts of a run; to steps,
the signatures of their status and output; to approvals,
`named` (given for that step by name), `given_for` (the verdict it was given for) and
`seal`; and approval_requests, written before each question a person is asked.

Runs and approvals stored before this revision are signed here with the home's key when
the command that opens the store has it at hand (every command that starts, resumes,
approves or shows a run does): they were written by aishell before anything checked
them, and this is the last moment they are taken as they are. A store upgraded by a
command without the key (listing runs, say) leaves them unsigned, and resume, approve
and show refuse those runs: start their jobs again. Approvals from before carry no
verdict and count as not named.

Revision ID: 0002_signed_runs
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from aishell.inspection import inspected
from aishell.state import revision_ops
from aishell.state.seals import seal, step_seal
from aishell.state.signing import SigningKey

revision = "0002_signed_runs"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_ops.add_column("runs", sa.Column("seal", sa.Text))
    revision_ops.add_column("steps", sa.Column("status_seal", sa.Text))
    revision_ops.add_column("steps", sa.Column("output_seal", sa.Text))
    revision_ops.add_column("approvals", sa.Column("named", sa.Boolean))
    revision_ops.add_column("approvals", sa.Column("given_for", sa.Text))
    revision_ops.add_column("approvals", sa.Column("seal", sa.Text))
    revision_ops.create_table(
        "approval_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False, index=True),
        sa.Column("step_idx", sa.Integer, nullable=False),
        sa.Column("named", sa.Boolean, nullable=False),
        sa.Column("given_for", sa.Text, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("seal", sa.Text),
    )
    key = context.config.attributes.get("signing_key")
    if isinstance(key, SigningKey):
        _sign_existing(op.get_bind(), key)


def _sign_existing(bind: sa.Connection, key: SigningKey) -> None:
    tables = sa.MetaData()
    with inspected(bind):
        runs = sa.Table("runs", tables, autoload_with=bind)
        approvals = sa.Table("approvals", tables, autoload_with=bind)
        steps = sa.Table("steps", tables, autoload_with=bind)
    for row in bind.execute(sa.select(runs)).mappings().all():
        value = seal(key, "run", row["run_id"], row)
        bind.execute(sa.update(runs).where(runs.c.run_id == row["run_id"]).values(seal=value))
    for row in bind.execute(sa.select(approvals)).mappings().all():
        value = seal(key, "approval", row["run_id"], row)
        bind.execute(sa.update(approvals).where(approvals.c.id == row["id"]).values(seal=value))
    for row in bind.execute(sa.select(steps)).mappings().all():
        run_id, index = row["run_id"], row["idx"]
        bind.execute(
            sa.update(steps)
            .where((steps.c.run_id == run_id) & (steps.c.idx == index))
            .values(
                status_seal=step_seal(key, run_id, index, "status", row["status"]),
                output_seal=step_seal(key, run_id, index, "output", row["output"]),
            )
        )


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
