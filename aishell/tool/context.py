"""What a tool runs with, and what every implementation of a tool offers.

Below the registry (which loads tools) and the handlers (which implement them): both
use these, and neither has to import the other for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from aishell.files import PrivatePlaces
from aishell.scratch.ledger import Ledger
from aishell.sqltext import quote_plain_identifier
from aishell.tool.readings import TableReadings
from aishell.tool.side import Side


@dataclass
class ToolContext:
    """What a tool gets besides its params: the guarded connection and where it runs."""

    conn: Connection | None
    dialect: str
    target: str
    dry_run: bool = False
    backup_dir: Path | None = None
    # The folders aishell keeps for itself (state, key, backups): no archive goes there.
    private: PrivatePlaces = field(default_factory=PrivatePlaces)
    run_id: str | None = None
    quote_identifier: Callable[[str], str] = field(default=quote_plain_identifier)
    # Long tools (batched deletes) ask between batches whether to stop resumably.
    should_stop: Callable[[], bool] = field(default=lambda: False)
    # What a tool measured to render a step's SQL, reused when the step runs, so the
    # statements that run are the ones shown (and the catalog is not read twice).
    step_cache: dict[str, Any] = field(default_factory=dict)
    # Which attempt of the step runs (1 while it renders): a retry measures afresh what
    # the failed attempt may have changed (see handlers.measured).
    attempt: int = 1
    # What a tool read once for the whole run (what the role may do to each table):
    # a step per table must not cost a query per table for it.
    run_cache: dict[str, Any] = field(default_factory=dict)
    # What earlier steps measured of a table, until a step that may write runs (see
    # aishell/tool/readings.py): the step after a measuring step need not measure again.
    table_readings: TableReadings = field(default_factory=TableReadings)
    # The backup catalog of this target (read-only), for the tools that choose backups.
    backup_catalog: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])
    # The backup catalog of every target (read-only): a restore's backup and the chain
    # it builds on may be another target's.
    every_backup: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])
    # The steps before this one that a preview or a dry run only previewed, each as its
    # tool and its params as planned: what they would make (the backup a retention step
    # counts, proven or only decoded by its validation) is in no catalog yet.
    previewed_before: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    # What a saved plan's preview showed of this step's effect, which `apply` runs it
    # under (empty where it showed none); None for a plan saved without a preview.
    reviewed_estimate: Mapping[str, Any] | None = None
    # Long steps: what an earlier attempt of this step got to, a durable checkpoint of
    # where this one is, figures for the progress display, and an event for the log.
    load_progress: Callable[[], Mapping[str, Any] | None] = field(default=lambda: None)
    save_progress: Callable[[dict[str, Any]], None] = field(default=lambda _p: None)
    # A checkpoint whose loss only repeats idempotent work (the tables a step of VACUUMs
    # did): kept across a crash of the process, durable with the store's next durable
    # commit rather than a wait on the disk of its own (StateStore.save_progress).
    save_redoable_progress: Callable[[dict[str, Any]], None] = field(default=lambda _p: None)
    report: Callable[[dict[str, Any]], None] = field(default=lambda _f: None)
    record_event: Callable[[str, dict[str, Any]], None] = field(default=lambda _k, _d: None)
    # An event that commits with the step's next durable write (its progress), and the
    # events of a kind this step recorded before: a step over many tables records each
    # table's outcome so, once, rather than all of them with every table.
    queue_event: Callable[[str, dict[str, Any]], None] = field(default=lambda _k, _d: None)
    step_events: Callable[[str], list[Any]] = field(default=lambda _k: [])
    # The share of a table's rows a purge may delete before a person approves it by name
    # (the policy's purge_limits; None: no limit), and this step's approvals, oldest
    # first (decision, how, decided_by, at), by which a purge stopped there goes on.
    max_share: float | None = None
    step_approvals: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])
    # The other runs, not finished, one of whose long steps holds key: value in its
    # progress (run_id, status): who else archives into a file.
    runs_progressing_with: Callable[[str, str], list[tuple[str, str]]] = field(
        default=lambda _k, _v: []
    )
    # When the maintenance window closes (in the window's time zone), if one applies,
    # and how many seconds that was away when the step started.
    ends_at: datetime | None = None
    seconds_left: float | None = None
    # Another configured target, read-only (a replica whose lag a purge watches).
    open_target: Callable[[str], Connection] | None = None
    # Scratch files, databases and child processes, recorded before they are made so
    # that what a killed run leaves is found and removed; and when (time.monotonic())
    # the step's time runs out, for the child processes a tool waits on.
    scratch: Ledger = field(default_factory=Ledger)
    deadline: float | None = None
    # The target's trusted_functions: user-defined functions the site vouches only read.
    trusted_functions: tuple[str, ...] = ()
    # The target's connect and write limits, which the client programs a tool starts
    # get too (aishell/targets/clientlogin.py).
    connect_timeout_seconds: float = 10
    write_timeout_seconds: float = 60
    # The writes the step's statements have sent so far, as its audit counts them: a step
    # over many tables commits a table's outcome once a table wrote (handlers/shared.py).
    writes_sent: int = 0
    # Opens a second session of the step under its audit (aishell/tool/side.py); set
    # while a step's statements are audited, None elsewhere.
    open_side: Callable[[Side], AbstractContextManager[Connection]] | None = None

    def quote(self, name: str) -> str:
        return self.quote_identifier(name)

    @property
    def connection(self) -> Connection:
        if self.conn is None:
            raise RuntimeError("this tool needs a database connection")
        return self.conn

    def side_session(self, side: Side) -> AbstractContextManager[Connection]:
        """A second session on the target, audited as the step's (see tool/side.py).
        Outside an audited step there is none: nothing reaches the target unaudited."""
        if self.open_side is None:
            raise RuntimeError(f"a second session ({side.purpose}) is opened only inside a step")
        return self.open_side(side)


class Implementation(Protocol):
    """One dialect's way of running a tool; render_sql never touches the database's data."""

    @property
    def sql_templates(self) -> tuple[str, ...]: ...

    @property
    def changes_tables(self) -> bool:
        """May it change its tables' rows, pages or indexes (not only statistics)?"""
        ...

    @property
    def reads_when_it_renders_reads(self) -> bool:
        """Does a render that only reads mean the step writes nothing, this time (a
        rebuild with nothing over the threshold)? Then it runs as a read."""
        ...

    def render_sql(self, params: Mapping[str, Any], ctx: ToolContext) -> list[str]: ...

    def run(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]: ...

    def check_done(self, params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
        """After a crash: is the step's effect in the database? None when it cannot tell."""
        ...


# An identifier in a SQL template: {name}.
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# A placeholder touching a name's characters or quotes ("x_{table}", "{table}s"): it is
# filled with a whole quoted name, so what it touches would make no name the server knows.
GLUED_PLACEHOLDER = re.compile(r"[\w\"`$}]\{\w+\}|\{\w+\}[\w\"`${]")


@dataclass(frozen=True)
class Pending:
    """A param's value that an earlier step gives only when it runs, where a dry run only
    previewed that step: what a preview shows of it is this marked placeholder."""

    # As the plan writes it: ${step_1.output.rows_deleted}
    reference: str
    step_id: str

    def __str__(self) -> str:
        return f"<{self.reference[2:-1]}: known once {self.step_id} runs>"


def pending_params(params: Mapping[str, Any]) -> dict[str, list[Pending]]:
    """The params whose value is, or holds, a Pending one, with those it holds."""
    found: dict[str, list[Pending]] = {}
    for name, value in params.items():
        held = _pending_in(value)
        if held:
            found[name] = held
    return found


# Values that hold no other: a step's params are mostly these, asked of every table of
# a step over many (the ABC check of Mapping below costs more than the answer).
_PLAIN = (str, int, float, type(None))


def _pending_in(value: Any) -> list[Pending]:
    if isinstance(value, _PLAIN):
        return []
    if isinstance(value, Pending):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [p for item in value for p in _pending_in(item)]
    return []


def fill_template(sql: str, params: Mapping[str, Any], ctx: ToolContext) -> str:
    """Fill {name} with the quoted identifier from params, or <name> when it is not known yet."""

    def quoted(match: re.Match[str]) -> str:
        value = params.get(match.group(1))
        if isinstance(value, Pending):
            return str(value)
        return ctx.quote(value) if isinstance(value, str) else f"<{match.group(1)}>"

    return PLACEHOLDER.sub(quoted, sql)
