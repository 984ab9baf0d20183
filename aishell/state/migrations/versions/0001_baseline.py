"""Baseline: the state store's schema when its history moved to Alembic.

It creates what is missing, as each step of the history before Alembic did (meta
schema_version 1 to 6; each step only added tables): it makes a new store, and
completes a store an older aishell made. A store at schema_version 6 has all of it
already and is stamped with this revision instead of running it (history.py).

The tables are written out here rather than imported: later revisions change
aishell/state/schema.py, never this file.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aishell.state import revision_ops

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# What meta.schema_version says after this revision: the last version of the history
# before Alembic, so that an aishell of that time still opens the store.
LEGACY_SCHEMA_VERSION = "6"

schema = sa.MetaData()

meta = sa.Table(
    "meta",
    schema,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs = sa.Table(
    "runs",
    schema,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("dialect", sa.String(32), nullable=False),
    sa.Column("job", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("tool_fingerprints", sa.Text, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("safety_level", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("hostname", sa.String(255)),
    sa.Column("started_by", sa.String(128)),
)

steps = sa.Table(
    "steps",
    schema,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("tool", sa.String(128), nullable=False, index=True),
    sa.Column("subject", sa.String(255)),
    sa.Column("risk_level", sa.String(16), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("resolved_params", sa.Text),
    sa.Column("sql", sa.Text),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("output", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.String(32)),
    sa.Column("finished_at", sa.String(32)),
)

events = sa.Table(
    "events",
    schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("step_idx", sa.Integer),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)

approvals = sa.Table(
    "approvals",
    schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("step_idx", sa.Integer, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("decided_by", sa.String(128), nullable=False),
    sa.Column("how", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)

backups = sa.Table(
    "backups",
    schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(128), nullable=False, index=True),
    sa.Column("run_id", sa.String(32)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64)),
    sa.Column("size_bytes", sa.Integer),
    sa.Column("manifest", sa.Text),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("verified_at", sa.String(32)),
    sa.Column("verification", sa.Text),
    sa.Column("deleted_at", sa.String(32)),
)

target_locks = sa.Table(
    "target_locks",
    schema,
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("acquired_at", sa.String(32), nullable=False),
)

statements = sa.Table(
    "statements",
    schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("step_idx", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("parameters", sa.Text),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("rows", sa.Integer),
    sa.Column("error", sa.Text),
)

run_controls = sa.Table(
    "run_controls",
    schema,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("stop_requested_at", sa.String(32), nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=False),
)

target_health = sa.Table(
    "target_health",
    schema,
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("open_until", sa.String(32)),
)

step_progress = sa.Table(
    "step_progress",
    schema,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("step_idx", sa.Integer, primary_key=True),
    sa.Column("progress", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

schedules = sa.Table(
    "schedules",
    schema,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("cron", sa.String(128), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("words", sa.Text, nullable=False),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("job", sa.Text, nullable=False),
    sa.Column("target", sa.String(128)),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

schedule_runs = sa.Table(
    "schedule_runs",
    schema,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("schedule", sa.String(128), nullable=False, index=True),
    sa.Column("how", sa.String(16), nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)

plan_cache = sa.Table(
    "plan_cache",
    schema,
    sa.Column("cache_key", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("agent", sa.String(64)),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("catalog_fingerprint", sa.String(64), nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("used_at", sa.String(32), nullable=False),
    sa.Column("uses", sa.Integer, nullable=False, default=0),
)

scratch = sa.Table(
    "scratch",
    schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32)),
    sa.Column("target", sa.String(128)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid_started", sa.String(32)),
    sa.Column("created_at", sa.String(32), nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    revision_ops.ensure_tables(*schema.sorted_tables)
    version = meta.c.key == "schema_version"
    if bind.execute(sa.update(meta).where(version).values(value=LEGACY_SCHEMA_VERSION)).rowcount:
        return
    bind.execute(sa.insert(meta).values(key="schema_version", value=LEGACY_SCHEMA_VERSION))


def downgrade() -> None:
    raise NotImplementedError("aishell's state store is never downgraded")
