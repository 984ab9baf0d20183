"""Load and validate aishell.yaml and agents/<agent>.yaml (aishell.config.home finds them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from aishell.config.agentfiles import check_agent_files, check_constraint_tools
from aishell.config.bounds import MAX_COUNT, MAX_RUN_TIME_SECONDS, MAX_TIMEOUT_SECONDS
from aishell.config.checks import (
    MAX_HOURS,
    check_command,
    check_http_url,
    check_one_line,
    check_secret_env_name,
    check_tag,
    check_target_name,
    check_target_url,
)
from aishell.config.dburl import resolve_url
from aishell.config.fields import PURGE, Integer, Number, Text, setting
from aishell.config.files import read_yaml, validate
from aishell.config.fleet import FleetConfig
from aishell.config.home import (
    ConfigFiles,
    Home,
    Origin,
    agent_file,
    config_files,
    find_agent_file,
    find_home,
    named_config,
    read_layers,
)
from aishell.config.kinds import Capability
from aishell.config.llm import LlmPlannerConfig
from aishell.config.monitoring import MonitoringConfig
from aishell.config.options import (
    JOB_OPTIONS,
    MAX_PARALLEL_STEPS,
    MAX_RUN_TIME,
    PLANNER,
    RETENTION_DAYS,
    SAFETY_LEVEL,
)
from aishell.config.stateurl import StateConfig, display_url, state_url
from aishell.config.targetnames import check_named, unknown_target
from aishell.config.web import WebConfig
from aishell.config.zones import zone_problem
from aishell.errors import ConfigError
from aishell.files import set_group_readable

if TYPE_CHECKING:
    SafetyLevel = str
    PlannerName = str
else:  # the table's choices, as a Literal so that pydantic's messages name them
    SafetyLevel = Literal[SAFETY_LEVEL.choices]
    PlannerName = Literal[PLANNER.choices]
Environment = Literal["development", "test", "staging", "production"]


class _Strict(BaseModel):
    # NaN and infinity are refused everywhere: NaN compares false with every limit, so
    # `ge`/`le` alone would let it through.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TargetConfig(_Strict):
    url: str = Field(description="SQLAlchemy URL; relative SQLite paths are under the home")
    environment: Environment = "development"
    description: str = ""
    # Names that select it with others (`--targets tag:prod`): config/selection.py.
    tags: list[Annotated[str, AfterValidator(check_tag)]] = []
    # The password comes from this environment variable (or the driver's own files,
    # ~/.pgpass or an option file); never from the URL in a file that is shared.
    password_env: str | None = None
    # Lock waits start short and are retried with backoff, instead of one long wait
    # that queues every other session behind aishell.
    lock_timeout_ms: Integer = Field(1000, ge=10, le=MAX_TIMEOUT_SECONDS * 1000)
    # Opening a connection: TCP, TLS, greeting and login, all of it (PostgreSQL: 2 s at least).
    connect_timeout_seconds: Integer = Field(10, ge=1, le=MAX_TIMEOUT_SECONDS)
    # How long a server may stay silent: the answer to a statement outside a step (catalog
    # reads, checks, locks); inside a step, the time after the step's own limit
    # (max_execution_time) for the server to answer the cancel. Then the connection is
    # closed: a hung server or a lost network ends a run instead of holding it forever.
    # At least a second, as for the others: libpq takes whole milliseconds, and its 0
    # is no bound at all.
    read_timeout_seconds: Number = Field(600, ge=1, le=MAX_TIMEOUT_SECONDS)
    # How long sent data may go unacknowledged (PyMySQL write_timeout, libpq
    # tcp_user_timeout): a dead network shows up in this long.
    write_timeout_seconds: Number = Field(60, ge=1, le=MAX_TIMEOUT_SECONDS)
    # SQLite: how long a statement waits for another process's lock on the file.
    busy_timeout_ms: Integer = Field(5000, ge=1, le=MAX_TIMEOUT_SECONDS * 1000)
    # Functions defined in this database (`schema.name`, or `name` on MySQL/MariaDB and
    # for every schema) that the site vouches only read: a user-defined function counts
    # as a possible write whatever volatility it declares, unless named here. The site's
    # word: aishell does not check it.
    trusted_functions: list[str] = []

    _url = field_validator("url")(check_target_url)
    _password_env = field_validator("password_env")(check_secret_env_name)
    _description = field_validator("description")(check_one_line)


class RunDefaults(_Strict):
    """Limits of every run, unless its agent's default_config or its schedule says otherwise."""

    # A run stops after this long, as on SIGTERM: the running statement is cancelled, the
    # step ends interrupted, and `aishell resume` (or the schedule's next trigger) goes on.
    # An unattended night never runs into the day.
    max_run_seconds: Number = setting(MAX_RUN_TIME)


class CircuitBreakerConfig(_Strict):
    failures: Integer = Field(
        3, ge=1, le=1000, description="consecutive connection failures that open it"
    )
    cool_down_seconds: Number = Field(300, gt=0, le=MAX_TIMEOUT_SECONDS)


NotifyOn = Literal[
    "completed",
    "failed",
    "waiting_approval",
    "interrupted",
    "out_of_window",
    "missed",
    "stuck",
    "refused",
]


class NotificationsConfig(_Strict):
    """Where a scheduled run's outcome goes; a failing notifier never fails the run."""

    # Run with the run's summary as JSON on stdin (split like a shell, never run by one).
    command: str | None = None
    # POSTed the same JSON.
    webhook: str | None = None
    # Every outcome but a run that completed.
    on: list[NotifyOn] = [o for o in get_args(NotifyOn) if o != "completed"]
    timeout_seconds: Number = Field(10, gt=0, le=MAX_TIMEOUT_SECONDS)

    _command = field_validator("command")(check_command)
    _webhook = field_validator("webhook")(check_http_url)


class SchedulerConfig(_Strict):
    # A trigger missed (the scheduler was down) runs late if at most this late; missed
    # triggers of one schedule run once.
    misfire_grace_seconds: Integer = Field(3600, ge=1, le=MAX_RUN_TIME_SECONDS)
    # A scheduled run still running after this long is reported as stuck.
    stuck_after_seconds: Integer = Field(6 * 3600, ge=1, le=MAX_RUN_TIME_SECONDS)


class FilesConfig(_Strict):
    # What aishell writes (backups and their folders, manifests, purge archives, plans,
    # the metrics textfile) is its owner's alone: files 0600, folders 0700. True: its
    # group may read them too (0640, 0750), e.g. a backup operator's group.
    group_readable: bool = False


class PlannerConfig(_Strict):
    # Who plans when a command does not say: rules (the agents' own plans) or llm.
    default: PlannerName = setting(PLANNER)
    llm: LlmPlannerConfig = LlmPlannerConfig()


class MainConfig(_Strict):
    default_target: str = "demo"
    defaults: RunDefaults = RunDefaults()
    planner: PlannerConfig = PlannerConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    fleet: FleetConfig = FleetConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    # A target's name becomes part of its backups' paths: held to `targets add`'s rule.
    targets: dict[Annotated[str, AfterValidator(check_target_name)], TargetConfig]
    state: StateConfig = StateConfig()
    backup_dir: str = "backups"
    files: FilesConfig = FilesConfig()
    catalog_paths: list[str] = []
    web: WebConfig = WebConfig()


class AgentDefaults(_Strict):
    safety_level: SafetyLevel = setting(SAFETY_LEVEL)
    max_execution_time: Integer = Field(
        3600, gt=0, le=MAX_RUN_TIME_SECONDS, description="cap on any one step, seconds"
    )
    # This agent's runs stop after this long; null: defaults.max_run_seconds in aishell.yaml.
    max_run_seconds: Number | None = setting(MAX_RUN_TIME, default=None)
    max_retries: Integer = Field(3, ge=0, le=20)
    max_parallel_steps: Integer = setting(MAX_PARALLEL_STEPS)
    retry_backoff_seconds: Number = Field(1.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    fragmentation_threshold: Number = Field(30, ge=0, le=100)
    min_index_pages: Integer = Field(8, ge=1, le=MAX_COUNT)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Hour = Annotated[Integer, Field(ge=0, le=23)]


class _TimeZoned(_Strict):
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # A window's zone may be the machine's own (`localtime`), as configs have it.
        problem = zone_problem(value, machine_ok=True)
        if problem is not None:
            raise ValueError(problem)
        return value


class MaxTableSize(_Strict):
    """Steps on a table with more rows than this (measured, not the catalog's estimate:
    policy/measured.py) need approval."""

    # The keys that name tools of the catalog (config/agentfiles.py checks them).
    tool_keys: ClassVar[tuple[str, ...]] = ("tools",)
    type: Literal["max_table_size"]
    max_rows: Integer = Field(gt=0, le=MAX_COUNT)
    tools: list[Text] | None = None


class MaintenanceWindow(_TimeZoned):
    """Steps above low risk (as judged) run only in these hours; the window's end is a
    time budget, which also stops a step still running when it comes."""

    type: Literal["maintenance_window", "production_hours"]
    allowed_hours: list[Hour] = Field(min_length=1)
    days: list[Weekday] = list(WEEKDAYS)


class BackupRequired(_Strict):
    """Listed tools need a verified backup of the target newer than max_age_hours."""

    tool_keys: ClassVar[tuple[str, ...]] = ("before_operations",)
    type: Literal["backup_required"]
    before_operations: list[Text] = Field(min_length=1)
    max_age_hours: Number = Field(24, gt=0, le=MAX_HOURS)


class BusinessHours(_TimeZoned):
    """Critical steps do not start during business hours."""

    type: Literal["business_hours"]
    hours: list[Hour] = Field(min_length=1)
    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]


class PurgeLimits(_Strict):
    """A purge needs approval when it keeps less than min_retention_days of rows, or
    would delete more than max_share of the table."""

    tool_keys: ClassVar[tuple[str, ...]] = ("tools",)
    type: Literal["purge_limits"]
    min_retention_days: Number = setting(RETENTION_DAYS, default=7)
    max_share: Number = Field(0.5, gt=0, le=1)
    tools: list[Text] = ["delete_old_records"]


Constraint = Annotated[
    MaxTableSize | MaintenanceWindow | BackupRequired | BusinessHours | PurgeLimits,
    Field(discriminator="type"),
]
CONSTRAINT_TYPES = (
    "max_table_size",
    "maintenance_window",
    "production_hours",
    "backup_required",
    "business_hours",
    "purge_limits",
)


class PurgeSettings(_Strict):
    """How the log cleanup agent purges, unless the job says otherwise."""

    date_column: Text = setting(PURGE["date_column"])
    retention_days: Number = setting(RETENTION_DAYS)
    batch_size: Integer = setting(PURGE["batch_size"], description="rows in the first batch")
    max_batch_size: Integer = setting(PURGE["max_batch_size"])
    max_batch_ms: Number = setting(
        PURGE["max_batch_ms"], description="batches are sized to take this long"
    )
    sleep_ms: Number = setting(PURGE["sleep_ms"])
    # --max-rows has no upper bound; a count in a config, as every count, fits 64 bits.
    max_rows_per_run: Integer | None = setting(PURGE["max_rows"], le=MAX_COUNT)
    run_time_seconds: Number | None = setting(PURGE["run_time_seconds"])
    max_running_queries: Integer | None = setting(PURGE["max_running_queries"])
    max_replica_lag_seconds: Number | None = setting(PURGE["max_replica_lag_seconds"])
    # The longest one wait for a busy server or a lagging replica; then the purge
    # stops resumably and says so.
    max_throttle_wait_seconds: Number = setting(PURGE["max_throttle_wait_seconds"])
    # How long a purge keeps reconnecting after losing its server, before it stops
    # resumably.
    reconnect_seconds: Number = setting(PURGE["reconnect_seconds"])
    replicas: list[str] = []
    # pages: on PostgreSQL 14+ batches over ranges of the table's pages; keys: key ranges;
    # auto: key ranges where an integer key follows the pages' order, else pages.
    walk: Literal["auto", "pages", "keys"] = setting(PURGE["walk"])
    # Refresh statistics (and VACUUM on PostgreSQL) after a purge of at least this many
    # rows; null: never.
    statistics_after_rows: Integer | None = setting(PURGE["statistics_after_rows"])


class AgentSection(_Strict):
    default_config: AgentDefaults = AgentDefaults()
    capabilities: list[str]
    safety_constraints: list[Constraint] = []
    purge: PurgeSettings = field(default_factory=PurgeSettings)


@dataclass(frozen=True)
class AgentConfig:
    name: str
    defaults: AgentDefaults
    capabilities: frozenset[str]
    constraints: tuple[Any, ...]
    path: Path
    purge: PurgeSettings = field(default_factory=PurgeSettings)


@dataclass(frozen=True)
class Config:
    """The loaded configuration, with where it came from and where relative paths lead."""

    main: MainConfig
    path: Path  # the file messages name: the user's, else the system's, else the bundled one
    home: Path  # relative paths (demo database, backups, plan key) are under it
    agent_dirs: tuple[Path, ...]
    state_dir: Path | None = None  # a relative state.url is under it; None: the home
    files: tuple[Path, ...] = ()  # every config file read, system-wide first
    chosen_by: str = "--home"  # what chose the home: --home, AISHELL_HOME, user folders
    _agents: dict[str, AgentConfig] = field(default_factory=dict, compare=False)

    @property
    def state_url(self) -> str:
        """The URL the state store is opened with, its password (state.password_env) in
        it: print state_location, never this."""
        state = self.main.state
        return state_url(
            state.url,
            self.state_home,
            busy_timeout_ms=state.busy_timeout_ms,
            timeouts=state.server_timeouts(),
            password_env=state.password_env,
            config_path=self.path,
        )

    @property
    def state_location(self) -> str:
        """Where the state store is, fit to print: a SQLite file's path, or the URL with
        its password masked."""
        return display_url(resolve_url(self.main.state.url, self.state_home))

    @property
    def state_home(self) -> Path:
        return self.state_dir or self.home

    @property
    def backup_dir(self) -> Path:
        return self.home / self.main.backup_dir

    @property
    def catalog_paths(self) -> list[Path]:
        return [self.home / p for p in self.main.catalog_paths]

    def target(self, name: str | None) -> tuple[str, TargetConfig]:
        """The named target, or the default one (name None); an unknown name, the empty
        one too, is a ConfigError."""
        if name is None:
            name = self.main.default_target
        try:
            return name, self.main.targets[name]
        except KeyError:
            known = sorted(self.main.targets)
            raise ConfigError(unknown_target(name, known, self.path)) from None

    def run_limit(
        self, agent: str, override: float | None = None, where: str = ""
    ) -> tuple[float, str]:
        """A run's time limit in seconds, and the setting it comes from (to name in messages)."""
        if override is not None:
            return override, where
        defaults = self.agent(agent).defaults
        if defaults.max_run_seconds is not None:
            return (
                defaults.max_run_seconds,
                f"{agent}_agent.default_config.max_run_seconds in {self.agent(agent).path}",
            )
        return self.main.defaults.max_run_seconds, f"defaults.max_run_seconds in {self.path}"

    def agent(self, name: str) -> AgentConfig:
        if name not in self._agents:
            loaded = load_agent_config(self.agent_dirs, name)
            replicas = enumerate(loaded.purge.replicas)
            key = f"{name}_agent.purge.replicas"
            check_named(self.main.targets, ((loaded.path, f"{key}.{i}", r) for i, r in replicas))
            # Here, not at load: the catalog has the site's folders (catalog_paths) too.
            check_constraint_tools(
                loaded.path, f"{name}_agent", loaded.constraints, self.catalog_paths
            )
            self._agents[name] = loaded
        return self._agents[name]


def load_config(
    config_path: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Config:
    """Load the config of a home (see aishell.config.home): the given folder, AISHELL_HOME, or
    the user's folders; the file named by config_path or AISHELL_CONFIG instead of the
    home's own; /etc/aishell's under either."""
    where = find_home(home)
    return config_from(where, config_files(where, named_config(config_path)))


def config_from(
    where: Home, files: ConfigFiles, sources: Mapping[Path, bytes] | None = None
) -> Config:
    """The config these files make, checked in full; `sources`: their bytes, already read
    (what the listings' cache is keyed by: config/view.py)."""
    data, origin = read_layers(files.layers, sources)
    main = validate(MainConfig, data, files.main, tags=CONSTRAINT_TYPES, origin=origin)
    _check_targets_named(main, origin)
    # Every file and folder made from here on has the modes this home asks for.
    set_group_readable(main.files.group_readable)
    return Config(
        main=main,
        path=files.main,
        home=where.data_dir,
        agent_dirs=files.agent_dirs,
        state_dir=where.state_dir,
        files=files.layers,
        chosen_by=where.chosen_by,
    )


def _check_targets_named(main: MainConfig, origin: Origin) -> None:
    """Every target the file names elsewhere (the default, an alert's) is one of its own."""
    named = [(origin(["default_target"]), "default_target", main.default_target)]
    for i, alert in enumerate(main.monitoring.alerts):
        key = f"monitoring.alerts.{i}.targets"
        named += [
            (origin(["monitoring"]), f"{key}.{j}", t) for j, t in enumerate(alert.targets or ())
        ]
    check_named(main.targets, named)


def load_agent_config(agent_dirs: Path | tuple[Path, ...], agent: str) -> AgentConfig:
    """An agent's config from the first of the folders that has its file. A plugin's agent
    with none runs on the defaults and every capability: its plans keep to the tools it
    declares (a file of its own narrows them); aishell's own must have theirs."""
    dirs = (agent_dirs,) if isinstance(agent_dirs, Path) else agent_dirs
    check_agent_files(dirs, agent)
    if agent not in JOB_OPTIONS and find_agent_file(dirs, agent) is None:
        return AgentConfig(agent, AgentDefaults(), frozenset(Capability), (), Path(agent))
    path = agent_file(dirs, agent)
    data = read_yaml(path)
    section_key = f"{agent}_agent"
    if set(data) != {section_key}:
        extra = ", ".join(sorted(set(data) - {section_key})) or "(nothing)"
        raise ConfigError(
            f"{path}: expected exactly one top-level key '{section_key}', found: {extra}"
        )
    section = validate(
        AgentSection, data[section_key], path, prefix=section_key, tags=CONSTRAINT_TYPES
    )
    known = {c.value for c in Capability}
    for i, cap in enumerate(section.capabilities):
        if cap not in known:
            raise ConfigError(
                f"{path}: {section_key}.capabilities.{i}: unknown capability '{cap}'; "
                f"expected one of: {', '.join(sorted(known))}"
            )
    return AgentConfig(
        name=agent,
        defaults=section.default_config,
        capabilities=frozenset(section.capabilities),
        constraints=tuple(section.safety_constraints),
        path=path,
        purge=section.purge,
    )
