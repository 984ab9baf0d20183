"""Every option a job or a run takes, each defined once: its key, its flag, its type,
its bounds or choices, its default and its help. The command line makes its click
options from this table (cli/options.py), the config's models their fields, the agents
check jobs against it, the purge checks its retention with it, and a tool param of the
same name must declare the same bounds (tests/config/test_options.py), as pgBackRest
makes its parser and help from one config.yaml.

Plain data: `aishell --help` reads it, so it imports neither click nor pydantic nor
SQLAlchemy. The lists of choices are owned here, and the agents, the planners and the
policy import them: they sit above config, and the table may only look down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

from aishell.config.bounds import MAX_COUNT, MAX_RUN_TIME_SECONDS, MAX_TIMEOUT_SECONDS
from aishell.risk import RiskLevel

MAINTENANCE_TYPES = ("quick", "standard", "full", "emergency")
# The agents that plan a catalog tool on the tool's own word (its `planned:`), and the
# job types each may be asked to plan it in.
PLANNED_BY = {"maintenance": MAINTENANCE_TYPES}
BACKUP_TYPES = ("full", "incremental", "drill")
PLANNERS = ("rules", "llm")
# Tighter first: a run may move down this list freely, up it only with --force.
SAFETY_LEVELS = ("strict", "moderate", "permissive")
# The risks a flag may approve up to: a critical step always needs a person.
FLAG_APPROVABLE_RISKS = tuple(r.value for r in RiskLevel if r is not RiskLevel.CRITICAL)
# A hundred years: past it a retention is a typo, and date arithmetic overflows.
MAX_RETENTION_DAYS = 36_500

# number: a finite float; duration: seconds, or a number with s, m, h or d; archive:
# file:PATH or table:NAME; flag: on or off.
# How a purge's batches walk the table (handlers/purge/pages.py).
PURGE_WALKS = ("auto", "pages", "keys")
Kind = Literal["number", "integer", "duration", "choice", "text", "flag", "archive"]
KINDS: tuple[str, ...] = get_args(Kind)
# The kinds whose values are numbers, which alone take bounds.
NUMERIC_KINDS = ("number", "integer", "duration")


@dataclass(frozen=True)
class Option:
    """One option. `key` names it in a job, in the config's purge settings (unless
    `config_key` says otherwise) and in a tool's params."""

    key: str
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # Where the job leaves it out, `normalize_job` gives this (None: the key is there, as
    # None); aishell's own log cleanup alone takes a purge setting of its config instead.
    default: object = None
    # True: the command line shows and passes the default; False: it leaves the value
    # unset, so that the agent's config (or the tool) decides.
    shown_default: bool = True
    # The flag as typed; "": --key. None: no flag, the job and the config only.
    flag: str | None = ""
    # The command's name for the value, where it is not the flag's (--type is `kind`).
    dest: str = ""
    required: bool = False
    # For aishell's own log cleanup: its config's purge setting of this option, where not
    # `key` (max_rows: max_rows_per_run), which tests/config/test_options.py holds to the
    # option's bounds and default. No code reads it; an agent of a package sets it for
    # nothing (its config supplies no job value: `default` does).
    config_key: str = ""
    # What the value names in the target's database: "table", "column" or "index" (""
    # nothing); a text option only. `schedule add` refuses a name no object of the
    # target's engine can have (a NUL, past its length), as for a tool's x-identifier.
    identifier: str = ""

    @property
    def cli_flag(self) -> str:
        """The flag a message names: --max-batch-ms, --run-time."""
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """Every string it is typed as (--verify and --no-verify); none without a flag."""
        if self.flag is None:
            return ()
        return tuple(part.strip() for part in self.cli_flag.split("/"))

    @property
    def param(self) -> str:
        """The name the command takes the value under (click's, from the flag)."""
        if self.dest:
            return self.dest
        return self.cli_flag.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The least and greatest value it takes (None: no bound), the command line's
        wherever it is given (a job through the Python API, a schedule, a fleet job): an
        integer's within 64 bits whatever its own bounds, as every integer ends in SQLite
        or a server, which hold no more; a duration's at least a second, and at most its
        maximum or, without one, MAX_RUN_TIME_SECONDS."""
        if self.kind == "integer":
            least = -MAX_COUNT if self.minimum is None else max(-MAX_COUNT, self.minimum)
            return least, MAX_COUNT if self.maximum is None else min(MAX_COUNT, self.maximum)
        if self.kind != "duration":
            return self.minimum, self.maximum
        least = 1.0 if self.minimum is None else max(1.0, self.minimum)
        return least, MAX_RUN_TIME_SECONDS if self.maximum is None else self.maximum

    def holds(self, value: object) -> bool:
        """A finite number within the bounds (a bool is not a number here): NaN compares
        false with every limit, infinity overflows date arithmetic."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value):
            return False
        least, most = self.bounds
        return (least is None or value >= least) and (most is None or value <= most)


# What `aishell run maintenance` does.
MAINTENANCE_TYPE = Option(
    "type",
    "choice",
    "quick: statistics; standard: + fragmentation; full: + rebuild and compact; "
    "emergency: corruption check and repair.",
    choices=MAINTENANCE_TYPES,
    default="standard",
    dest="kind",
)
TABLES = Option("tables", "text", "Comma-separated tables (default: every user table).")
REBUILD_INDEXES = Option(
    "rebuild_indexes",
    "flag",
    "Leave indexes alone in a full run.",
    default=True,
    flag="--no-rebuild-indexes",
)
UPDATE_STATS = Option(
    "update_stats",
    "flag",
    "Refresh planner statistics; --no-update-stats runs no step that does (PostgreSQL "
    "compacts with a plain VACUUM; quick maintenance, and full maintenance on "
    "MySQL/MariaDB, whose rebuilds refresh them, are then refused).",
    default=True,
    flag="--update-stats/--no-update-stats",
)
MAINTENANCE_OPTIONS = (MAINTENANCE_TYPE, TABLES, REBUILD_INDEXES, UPDATE_STATS)

# What `aishell run log_cleanup` purges and how; the defaults are the agent's config's
# (its purge section), which the command line leaves to it.
RETENTION_DAYS = Option(
    "retention_days",
    "number",
    "Keep rows younger than this (default from config).",
    minimum=0,
    maximum=MAX_RETENTION_DAYS,
    default=30,
    shown_default=False,
)
RUN_TIME = Option(
    "run_time_seconds",
    "duration",
    "Stop after this long (90s, 30m, 2h).",
    minimum=1,
    maximum=MAX_RUN_TIME_SECONDS,
    shown_default=False,
    flag="--run-time",
)
LOG_CLEANUP_OPTIONS = (
    Option("table", "text", "Table to purge.", required=True),
    Option(
        "date_column",
        "text",
        "Column holding each row's date (default from config).",
        default="created_at",
        shown_default=False,
    ),
    RETENTION_DAYS,
    Option(
        "batch_size",
        "integer",
        "Rows in the first batch.",
        1,
        1_000_000,
        default=1000,
        shown_default=False,
    ),
    Option(
        "max_batch_size",
        "integer",
        "Never more rows (keys) in one batch.",
        1,
        1_000_000,
        default=1_000_000,
        shown_default=False,
    ),
    Option(
        "max_batch_ms",
        "number",
        "Size batches to take about this long.",
        1,
        3_600_000,  # an hour
        default=100,
        shown_default=False,
    ),
    Option(
        "sleep_ms",
        "number",
        "Pause between batches.",
        0,
        3_600_000,
        default=0,
        shown_default=False,
    ),
    Option(
        "max_rows",
        "integer",
        "Stop after this many rows; the next run goes on.",
        minimum=1,
        shown_default=False,
        config_key="max_rows_per_run",
    ),
    RUN_TIME,
    Option(
        "archive_to",
        "archive",
        "Copy rows here before deleting them: file:PATH (a JSON lines file) or "
        "table:NAME (an existing table with the same columns).",
    ),
    # A job (or the agent's config) may set these; the command line has no flag for them.
    Option(
        "max_running_queries",
        "integer",
        "Pause while more queries run on the server.",
        1,
        MAX_COUNT,
        default=25,
        flag=None,
    ),
    Option(
        "max_replica_lag_seconds",
        "number",
        "Pause while a replica is further behind.",
        0,
        MAX_TIMEOUT_SECONDS,
        default=10,
        flag=None,
    ),
    Option(
        "max_throttle_wait_seconds",
        "number",
        "The longest one pause lasts; then the step stops resumably.",
        1,
        MAX_RUN_TIME_SECONDS,
        default=1800,
        flag=None,
    ),
    Option(
        "reconnect_seconds",
        "number",
        "After losing the server, reconnect with backoff this long; then the step stops resumably.",
        0,
        MAX_RUN_TIME_SECONDS,
        default=120,
        flag=None,
    ),
    Option(
        "walk",
        "choice",
        "pages: on PostgreSQL 14+ batches are ranges of the table's pages, read in "
        "physical order (key ranges elsewhere); keys: key ranges everywhere; auto: key "
        "ranges where an integer key follows the pages' order (pg_stats), else pages.",
        choices=PURGE_WALKS,
        default="auto",
        flag=None,
    ),
    Option(
        "statistics_after_rows",
        "integer",
        "Refresh statistics after a purge of at least this many rows.",
        0,
        MAX_COUNT,
        default=10_000,
        flag=None,
    ),
)

# What `aishell run backup` does.
BACKUP_TYPE = Option(
    "type",
    "choice",
    "full: back up the whole database; incremental: only the tables changed since the "
    "newest verified backup; drill: restore the newest backup into a scratch database "
    "and check it.",
    choices=BACKUP_TYPES,
    default="full",
    dest="kind",
)
VERIFY = Option(
    "verify",
    "flag",
    "Prove the backup restores (checksum, restore, row counts).",
    default=True,
    flag="--verify/--no-verify",
)
QUICK = Option("quick", "flag", "Verify by decoding the archive, not restoring it.", default=False)
CLEANUP = Option("cleanup", "flag", "Then delete backups past retention.", default=False)
# The purge's retention, bounds and all, for backups: the command line gives its default.
BACKUP_RETENTION_DAYS = replace(
    RETENTION_DAYS, help="With --cleanup: keep backups younger than this.", shown_default=True
)
KEEP_LAST = Option(
    "keep_last",
    "integer",
    "With --cleanup: always keep this many newest backups.",
    minimum=1,
    default=3,
)
LOCK_WAIT = Option(
    "lock_wait_seconds",
    "duration",
    "Longest the dump or restore may wait for another session's table lock (90s, 30m, "
    "2h; default 60s); then the step stops and names who holds it.",
    minimum=1,
    maximum=86_400,
    default=60,  # the dump steps' own
    shown_default=False,
    flag="--lock-wait",
)
BACKUP_OPTIONS = (BACKUP_TYPE, VERIFY, QUICK, CLEANUP, BACKUP_RETENTION_DAYS, KEEP_LAST, LOCK_WAIT)

# How a run goes, whatever its job.
PLANNER = Option(
    "planner",
    "choice",
    "Who drafts the plan: the agent's rules, or the model through Ollama (default: "
    "planner.default in config). A drafted plan is validated and shown first.",
    choices=PLANNERS,
    default="rules",
    shown_default=False,
)
SAFETY_LEVEL = Option(
    "safety_level",
    "choice",
    "Override the agent's safety level for this run (loosening production needs --force).",
    choices=SAFETY_LEVELS,
    default="strict",
    shown_default=False,
)
APPROVE_UP_TO = Option(
    "approve_up_to",
    "choice",
    "Approve steps up to this risk; critical steps always need a person.",
    choices=FLAG_APPROVABLE_RISKS,
)
MAX_RUN_TIME = Option(
    "max_run_seconds",
    "duration",
    "Stop the run after this long (90s, 30m, 2h), planning included; it ends "
    "interrupted and `aishell resume` goes on (default: max_run_seconds in config).",
    minimum=1,
    maximum=MAX_RUN_TIME_SECONDS,
    default=4 * 3600,
    shown_default=False,
    flag="--max-run-time",
)
# How many steps of one parallel group (plan/groups.py) run at once, each on its own
# connection to the target: an agent's default_config, no flag.
MAX_PARALLEL_STEPS = Option(
    "max_parallel_steps",
    "integer",
    "How many read-only steps of one parallel group run at the same time, each on its "
    "own connection to the target.",
    minimum=1,
    maximum=16,
    default=4,
    flag=None,
)
SCHEDULE_MAX_RUN_TIME = replace(
    MAX_RUN_TIME,
    help="Stop each run after this long (90s, 30m, 2h), resumably; the next trigger goes "
    "on (default: max_run_seconds in config).",
)
# One run outside the maintenance window: a person's decision, recorded with who and
# why (policy/window.py); every other rule of the policy stays.
IGNORE_WINDOW = Option(
    "ignore_window",
    "flag",
    "Do not hold steps for the maintenance window in this run (needs --reason; approvals, "
    "purge limits and the safety level still apply). Recorded with who and why.",
    default=False,
)
WINDOW_REASON = Option(
    "reason",
    "text",
    "With --ignore-window: why this run may go outside the maintenance window.",
)
WINDOW_OPTIONS = (IGNORE_WINDOW, WINDOW_REASON)
# The run options a command passes on as keywords (commands.run_job, apply_plan, ...);
# --approve-up-to goes to the approver instead.
RUN_OPTIONS = (PLANNER, SAFETY_LEVEL, MAX_RUN_TIME)

JOB_OPTIONS: dict[str, tuple[Option, ...]] = {
    "maintenance": MAINTENANCE_OPTIONS,
    "log_cleanup": LOG_CLEANUP_OPTIONS,
    "backup": BACKUP_OPTIONS,
}


def by_key(options: tuple[Option, ...]) -> dict[str, Option]:
    """The options by the key a job holds them under."""
    return {option.key: option for option in options}
