"""The state store's tables, as this code reads and writes them.

The schema history (how a store gets these tables) is in migrations/: a change here
goes with a new revision there, which a test compares against these definitions.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Holds "schema_version", the version number of the schema history before Alembic
# (history.LEGACY_SCHEMA_VERSION): an aishell of that time refuses a store whose number
# is newer than its own.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("agent", String(64), nullable=False),
    Column("target", String(128), nullable=False),
    Column("dialect", String(32), nullable=False),
    Column("job", Text, nullable=False),
    Column("plan", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("tool_fingerprints", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("safety_level", String(16), nullable=False),
    Column("status", String(32), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("error", Text),
    Column("pid", Integer),
    Column("hostname", String(255)),
    Column("started_by", String(128)),
    # The home key's signature of what resume trusts (seals.py); NULL: stored before
    # signing and not signed at the upgrade (no key at hand then), which is refused.
    Column("seal", Text),
    # When that process started (processes.process_started): a pid reused by a later
    # process is not the run's; NULL before 0003_scheduler_owner. Last, where that
    # revision added it: a new store has the columns in the order the revisions give.
    Column("pid_started", String(32)),
)
# The runs list, newest first and then by id (runs.list_runs, runlist.read_runs): read
# in this order, a page is its rows alone and the next one starts where it ended, where
# a store without it sorts every run for each page (0012_runs_newest).
Index("ix_runs_newest", runs.c.created_at.desc(), runs.c.run_id)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("step_id", String(64), nullable=False),
    Column("tool", String(128), nullable=False, index=True),
    Column("subject", String(255)),
    Column("risk_level", String(16), nullable=False),
    Column("params", Text, nullable=False),
    Column("resolved_params", Text),
    Column("sql", Text),
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("output", Text),
    Column("error", Text),
    Column("started_at", String(32)),
    Column("finished_at", String(32)),
    # The home key's signatures of the status and the output, which resume trusts (a
    # succeeded step is not run again, its output feeds later steps): seals.py.
    Column("status_seal", Text),
    Column("output_seal", Text),
)

# The event a step over many tables records of each table it did (its output), read
# back when the step goes on after a crash; the step's output holds them all.
TABLE_DONE = "table_done"

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer),
    Column("at", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("data", Text, nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("decided_by", String(128), nullable=False),
    Column("how", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", String(32), nullable=False),
    # Given for this step by name (at the prompt, or `approve --step N`): only such an
    # approval covers a step only a person may pass.
    Column("named", Boolean),
    # The verdict it was given for (risk, reasons, rows, share): resume compares today's.
    Column("given_for", Text),
    Column("seal", Text),
)

# Each time a person is asked about a step, written before the question: the verdict
# shown and whether only a named approval may cover it, whatever ends the prompt.
approval_requests = Table(
    "approval_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer, nullable=False),
    Column("named", Boolean, nullable=False),
    Column("given_for", Text, nullable=False),
    Column("at", String(32), nullable=False),
    Column("seal", Text),
)

backups = Table(
    "backups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(128), nullable=False, index=True),
    Column("run_id", String(32)),
    Column("kind", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64)),
    Column("size_bytes", Integer),
    Column("manifest", Text),
    Column("created_at", String(32), nullable=False),
    Column("verified_at", String(32)),
    Column("verification", Text),
    Column("deleted_at", String(32)),
    # Its fields signed with the home's key (state/seals.py): restore, validation and
    # retention act on what aishell recorded. NULL: recorded before, refused by them.
    Column("seal", Text),
)

# Per target name, the database a run last reached through it (its backup_identity),
# when, by which run, and the fingerprint of the config that reached it (its URL without
# secrets, hashed: config.dburl.url_fingerprint): what the listings, the alerts and the
# metrics judge a target's backups by without connecting to it (reached.py).
reached_databases = Table(
    "reached_databases",
    metadata,
    Column("target", String(128), primary_key=True),
    Column("database_identity", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("run_id", String(32)),
    Column("reached_at", String(32), nullable=False),
)

target_locks = Table(
    "target_locks",
    metadata,
    Column("target", String(128), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("acquired_at", String(32), nullable=False),
)


statements = Table(
    "statements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("step_idx", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("sql", Text, nullable=False),
    Column("parameters", Text),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("rows", Integer),
    Column("error", Text),
)

run_controls = Table(
    "run_controls",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("stop_requested_at", String(32), nullable=False),
    Column("requested_by", String(128), nullable=False),
)

target_health = Table(
    "target_health",
    metadata,
    Column("target", String(128), primary_key=True),
    Column("consecutive_failures", Integer, nullable=False),
    Column("last_error", Text),
    Column("open_until", String(32)),
)

# Where a long step has got to (a purge's last key and rows deleted), so that a
# resumed step continues from there instead of starting over.
step_progress = Table(
    "step_progress",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("step_idx", Integer, primary_key=True),
    Column("progress", Text, nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# Jobs that run on a schedule (`aishell schedule add`); their timing lives in
# APScheduler's own table in the same store, written only by `aishell schedule serve`.
schedules = Table(
    "schedules",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("cron", String(128), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("words", Text, nullable=False),
    Column("agent", String(64), nullable=False),
    Column("job", Text, nullable=False),
    Column("target", String(128)),
    Column("options", Text, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
    # Its fields signed with the home's key (state/seals.py): serve runs what was added.
    Column("seal", Text),
)

# Which run each scheduled trigger started.
schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("schedule", String(128), nullable=False, index=True),
    Column("how", String(16), nullable=False),
    Column("at", String(32), nullable=False),
)

# Plans a model drafted and the validator accepted, by (request, the target's catalog
# fingerprint, model): the same nightly request does not ask the model every night.
plan_cache = Table(
    "plan_cache",
    metadata,
    Column("cache_key", String(64), primary_key=True),
    Column("target", String(128), nullable=False),
    Column("agent", String(64)),
    Column("model", String(256), nullable=False),
    Column("request", Text, nullable=False),
    Column("catalog_fingerprint", String(64), nullable=False),
    Column("answer", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("used_at", String(32), nullable=False),
    Column("uses", Integer, nullable=False, default=0),
)

# Scratch files, scratch databases and child processes, each recorded before it is
# made, with the process that makes it (pid, host, and the pid's start time, since pids
# are reused): what a process that died left behind is found here and removed by the
# next run or `aishell doctor --clean` (aishell/scratch/).
scratch = Table(
    "scratch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32)),
    Column("target", String(128)),
    Column("kind", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("pid_started", String(32)),
    Column("created_at", String(32), nullable=False),
)

# Each occurrence of a monitoring alert (aishell/scheduling/alerts.py), keyed by its rule,
# its subject (a run, a step, a target, a schedule) and what makes it a new occurrence
# (the run's end, the step's start, the newest backup, the due time): sent once when it
# fires and once when it resolves, by whichever process claims it first.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(32), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("occurrence", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("details", Text, nullable=False),
    Column("fired_at", String(32), nullable=False),
    Column("sent_at", String(32)),
    Column("resolved_at", String(32), index=True),
    Column("resolved_sent_at", String(32)),
    UniqueConstraint("rule", "subject", "occurrence", name="uq_alerts_occurrence"),
)

# A job sent to many targets through the queue (aishell/fleet/): what it runs, how, and
# on which targets, as `aishell fleet run` chose them. One a schedule's trigger sent
# (`schedule serve --fleet`) names the schedule and when the trigger was due (UTC): one
# fleet job per trigger, however often a restarted scheduler fires it again; `sent_at`:
# when its tasks had all reached the broker. Last, where 0007_fleet_triggers added them.
fleet_jobs = Table(
    "fleet_jobs",
    metadata,
    Column("fleet_id", String(32), primary_key=True),
    Column("agent", String(64), nullable=False),
    Column("job", Text, nullable=False),
    Column("options", Text, nullable=False),
    Column("selector", Text, nullable=False),
    Column("targets", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("schedule", String(128)),
    Column("due", String(32)),
    Column("sent_at", String(32)),
    # Its fields signed with the home's key (state/seals.py), as a run's are.
    Column("seal", Text),
    Index("uq_fleet_jobs_trigger", "schedule", "due", unique=True),
)

# The one run each target of a fleet job has: recorded with the run, before its first
# step, so that a task delivered again (its worker died) resumes it.
fleet_runs = Table(
    "fleet_runs",
    metadata,
    Column("fleet_id", String(32), nullable=False),
    Column("target", String(128), nullable=False),
    Column("run_id", String(32), nullable=False, unique=True),
    Column("at", String(32), nullable=False),
    PrimaryKeyConstraint("fleet_id", "target", name="pk_fleet_runs"),
)

# A process that says it is alive (each process of a fleet worker that runs its tasks),
# every few seconds, by the state store server's clock (`beat_at`: its Unix time then, so one
# clock stamps and reads it): a run stored running by a process of another host, which
# cannot be looked at from here, is shown interrupted once its beat has lapsed
# (processes.BEAT_LAPSE_SECONDS). Keyed as a run records its process.
process_beats = Table(
    "process_beats",
    metadata,
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_started", String(32), nullable=False),
    Column("beat_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("hostname", "pid", "pid_started", name="pk_process_beats"),
)
