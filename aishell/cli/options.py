"""Options and parameter types more than one command takes, so each is written once and
reads the same in every command's help."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from aishell.agents.archive import absolute_archive, archive_problem
from aishell.cli.completion import complete_selector, target_option
from aishell.cli.context import NonEmpty
from aishell.config.bounds import MAX_COUNT, MAX_RUN_TIME_SECONDS
from aishell.config.numbers import AMOUNT, DECIMAL_NUMBER, WHOLE_NUMBER, float_range_lost
from aishell.config.options import (
    APPROVE_UP_TO,
    BACKUP_RETENTION_DAYS,
    BACKUP_TYPE,
    CLEANUP,
    KEEP_LAST,
    LOCK_WAIT,
    LOG_CLEANUP_OPTIONS,
    MAINTENANCE_TYPE,
    MAX_RUN_TIME,
    PLANNER,
    QUICK,
    REBUILD_INDEXES,
    RUN_OPTIONS,
    SAFETY_LEVEL,
    TABLES,
    UPDATE_STATS,
    VERIFY,
    WINDOW_OPTIONS,
    Option,
)
from aishell.errors import UsageError
from aishell.units import exact

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
# The most rows a listing's --limit asks for: more than a store holds in practice, few
# enough to print.
MOST_LISTED = 1_000_000


def stacked(options: Sequence[Decorator]) -> Decorator:
    """One decorator applying `options` in the order listed (as they show in --help)."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def gathered(into: str, names: Mapping[str, str]) -> Decorator:
    """Hand the command the values of the options `names` lists (those it takes) as one
    dict argument `into`, each under the name `names` gives it (the commands' name)."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[into] = {names[k]: kwargs.pop(k) for k in list(kwargs) if k in names}
            return f(*args, **kwargs)

        return command

    return wrap


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    # The group that reports errors reads it: with --json, an error is JSON too.
    if value:
        ctx.meta["aishell.json"] = True
    return value


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=_remember_json,
        help="Print one JSON object on stdout, errors included.",
    )(f)


def _remember_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    # What renders a run reads it (output.run_and_render): no command passes it on.
    if value:
        ctx.meta["aishell.quiet"] = True
    return value


quiet_option = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    expose_value=False,
    callback=_remember_quiet,
    help="No spinner, progress bar or line per step; the result and errors still print.",
)


# What a number on the command line may be written as (aishell.config.numbers): the
# config's numbers, so the two agree. click's own INT and FLOAT take what int() and
# float() take: "1_000", " 5 " and Arabic-Indic or fullwidth digits.
_DIGITS_ONLY = "write it in the digits 0-9, with no leading zero, space or underscore"
# NaN and infinity in words, as float() reads them: named as not finite, not as a typo.
_NOT_FINITE = re.compile(r"[-+]?(?:nan|inf(?:inity)?)", re.IGNORECASE)


class WholeNumber(click.IntRange):
    """An integer in the digits 0-9, within the range, and within 64 bits whatever the
    range: every integer given ends in SQLite or a server, which hold no more."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            if not WHOLE_NUMBER.fullmatch(value):
                self.fail(f"{value!r} is not a valid integer: {_DIGITS_ONLY}", param, ctx)
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{value!r} is not a valid integer", param, ctx)
        number = super().convert(value, param, ctx)
        if abs(number) > MAX_COUNT:
            self.fail(f"{number} is past {MAX_COUNT}, the largest integer stored", param, ctx)
        return number

    def _describe_range(self) -> str:
        # No bounds of its own: nothing to show in --help (click would say "x<=None").
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


class FiniteFloat(click.FloatRange):
    """A float range, in the digits 0-9, that refuses NaN and infinity (NaN compares
    false with every limit, so a range alone lets it through). A value refused is named
    as it was written: click's own message said 0.0000001 was "1e-07" and -1 was "-1.0"."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            if _NOT_FINITE.fullmatch(value):
                self.fail(f"{value!r} is not a finite number", param, ctx)
            if not DECIMAL_NUMBER.fullmatch(value):
                self.fail(f"{value!r} is not a valid number: {_DIGITS_ONLY}", param, ctx)
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        lost = float_range_lost(str(value), number)
        if lost:
            self.fail(lost, param, ctx)
        try:
            # -0 is 0: a job, a plan and its JSON say 0 (adding 0.0 makes -0.0 plain 0.0).
            return super().convert(number + 0.0, param, ctx)
        except click.BadParameter:  # out of the range: the only failure left
            written = value if isinstance(value, str) else exact(number)
            self.fail(f"{written} is not in the range {self._describe_range()}.", param, ctx)


class Duration(click.ParamType[float]):
    """Seconds, or a number with s, m, h or d (as pt-archiver's --run-time). The units
    are lower case only: 1M may mean a month as well as a minute, so it is refused."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    _WRITTEN = re.compile(rf"(?P<amount>{AMOUNT.pattern})(?P<unit>[smhd]?)")

    def __init__(self, most: float = MAX_RUN_TIME_SECONDS) -> None:
        self.most = most

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            seconds = self._seconds(str(value), param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite duration", param, ctx)
        if seconds < 1:
            self.fail(f"{value!r} is under a second", param, ctx)
        if seconds > self.most:
            days = exact(self.most / 86400)
            limit = f"{days} day{'' if days == '1' else 's'}"
            self.fail(f"{value!r} is over the limit of {limit}", param, ctx)
        return seconds

    def _seconds(self, text: str, param: Any, ctx: Any) -> float:
        found = self._WRITTEN.fullmatch(text)
        if found is None:
            # NaN or infinity in words; a number past a float's range ("1e400") is
            # written with an exponent, which no duration has: the message below.
            if _NOT_FINITE.fullmatch(text.strip().rstrip("smhd").strip()):
                self.fail(f"{text!r} is not a finite duration", param, ctx)
            self.fail(
                f"{text!r} is not a duration such as 90, 90s, 30m, 1.5h or 1d: the digits 0-9 "
                "with at most one decimal point (no exponent), then s, m, h or d in lower "
                "case, with no space",
                param,
                ctx,
            )
        return float(found["amount"]) * self._UNITS[found["unit"] or "s"]


class ArchiveTo(click.ParamType[str]):
    """`file:PATH` or `table:NAME`; the kind is said, never guessed from the text."""

    name = "archive"

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "file:PATH|table:NAME"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        wrong = archive_problem(value)
        if wrong:
            self.fail(f"{value!r} {wrong}", param, ctx)
        # A file is fixed relative to where the command was typed, not where a
        # scheduler later runs it.
        return absolute_archive(value)


def _click_type(option: Option) -> Any:
    """The click type of an option of the table: its kind, with its bounds or choices."""
    bounds = (option.minimum, option.maximum)
    if option.kind == "number":
        return FiniteFloat(*bounds)
    if option.kind == "integer":
        low, high = (None if b is None else int(b) for b in bounds)
        return WholeNumber(low, high)
    if option.kind == "choice":
        return click.Choice(option.choices)
    if option.kind == "duration":
        # A duration is at least a second (Duration says so); the table's maximum.
        return Duration(most=option.maximum or MAX_RUN_TIME_SECONDS)
    if option.kind == "archive":
        return ArchiveTo()
    # Text, never empty: also where no group's lookup checks it (`schedule add`'s words).
    return NonEmpty(click.STRING)


def table_option(option: Option) -> Decorator:
    """The click option of an option of the table (aishell.config.options): its flag,
    type, choices or bounds, default and help, all from there."""
    names = [option.cli_flag, *([option.dest] if option.dest else [])]
    settings: dict[str, Any] = {"help": option.help}
    if option.required:
        settings["required"] = True
    if option.kind == "flag" and "/" not in option.cli_flag:
        settings["is_flag"] = True  # off unless given; the job's default is the agent's
    else:  # a value, or a flag both ways (--verify/--no-verify) that shows its default
        if option.kind != "flag":
            settings["type"] = _click_type(option)
        if option.shown_default and option.default is not None:
            settings.update(default=option.default, show_default=True)
    return click.option(*names, **settings)


def declared_options(options: Sequence[Option], *, target: bool = True) -> Decorator:
    """The click options of an agent's declared job options that have a flag, then
    --target: as `aishell run NAME` takes them for an agent with no command of its own
    (`target=False`: without it, for a job on many targets)."""
    made = [table_option(o) for o in options if o.flag is not None]
    return stacked([*made, target_option] if target else made)


def maintenance_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--type, --target, --tables, --no-rebuild-indexes and --update-stats/--no-update-stats;
    the command is handed the job's four as one dict, `maintenance` (jobs.maintenance_job's
    arguments)."""
    options: list[Decorator] = [
        table_option(MAINTENANCE_TYPE),
        target_option,
        table_option(TABLES),
        table_option(REBUILD_INDEXES),
        table_option(UPDATE_STATS),
    ]
    job_keys = {k: k for k in ("kind", "tables", "no_rebuild_indexes", UPDATE_STATS.key)}
    return stacked(options)(gathered("maintenance", job_keys)(f))


log_cleanup_options = stacked(
    [*(table_option(o) for o in LOG_CLEANUP_OPTIONS if o.flag is not None), target_option]
)

lock_wait_option = table_option(LOCK_WAIT)


def backup_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--type, --target, --verify/--no-verify, --quick, --cleanup, --retention-days,
    --keep-last and --lock-wait; the command is handed the job's as one dict, `backup`
    (jobs.backup_job's arguments)."""
    job = [BACKUP_TYPE, VERIFY, QUICK, CLEANUP, BACKUP_RETENTION_DAYS, KEEP_LAST, LOCK_WAIT]
    options: list[Decorator] = [table_option(BACKUP_TYPE), target_option]
    options += [table_option(o) for o in job[1:]]
    return stacked(options)(gathered("backup", {o.param: o.param for o in job})(f))


planner_option = table_option(PLANNER)

safety_level_option = table_option(SAFETY_LEVEL)

force_option = click.option(
    "--force", is_flag=True, help="Allow loosening a production target's safety level."
)

plan_out_option = click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Save the plan, signed with this home's key, to FILE for `aishell apply` (a file "
    "only: - is refused).",
)

every_step_option = click.option(
    "--all",
    "every",
    is_flag=True,
    help="Show every step of a long plan (over 50 steps, alike steps share one line).",
)

# The command takes them as one dict, `approval`: the flags output.make_approver takes.
approval_options = stacked(
    [
        gathered("approval", {name: name for name in ("yes", "approve_up_to", "non_interactive")}),
        click.option(
            "--yes", "-y", is_flag=True, help="Approve steps up to high risk (not critical)."
        ),
        table_option(APPROVE_UP_TO),
        click.option(
            "--non-interactive",
            is_flag=True,
            help="Never prompt; steps needing approval leave the run waiting_approval.",
        ),
    ]
)

# How a run goes, as the commands that start runs take it: a command that has any of
# --planner, --dry-run, --safety-level, --force, --max-run-time, --ignore-window and
# --reason takes them as one dict, `run_options`, to pass on as keywords
# (commands.run_job, apply_plan, ask, ...).
run_options = gathered(
    "run_options",
    {
        **{o.param: o.key for o in RUN_OPTIONS},
        "dry_run": "dry_run",
        "force": "force",
        **{o.param: o.key for o in WINDOW_OPTIONS},
    },
)

# --ignore-window and its --reason: into `run_options` with the others.
window_options = stacked([table_option(o) for o in WINDOW_OPTIONS])


def dry_run_option(text: str = "Read-only: run analysis, preview the rest.") -> Decorator:
    return click.option("--dry-run", is_flag=True, help=text)


max_run_time_option = table_option(MAX_RUN_TIME)


def start_options(dry_run_help: str = "Read-only: run analysis, preview the rest.") -> Decorator:
    """How a plan runs, as `aishell apply` takes it (and `aishell run` after --planner):
    --dry-run, the approval flags, --max-run-time, --safety-level, --force,
    --ignore-window with --reason, and --json;
    the command takes them as `approval`, `run_options` and `as_json`."""
    return stacked(
        [
            run_options,
            dry_run_option(dry_run_help),
            approval_options,
            max_run_time_option,
            safety_level_option,
            force_option,
            window_options,
            quiet_option,
            json_option,
        ]
    )


def job_run_options(dry_run_help: str) -> Decorator:
    """How a job runs, after what it is: as `aishell run maintenance` and `log_cleanup`
    take it."""
    return stacked([planner_option, start_options(dry_run_help)])


# What `aishell plan maintenance` and `log_cleanup` take after the job itself; the
# command takes them as one dict, `plan_options`.
plan_job_options = stacked(
    [
        gathered("plan_options", {k: k for k in ("planner", "safety_level", "out", "every")}),
        planner_option,
        safety_level_option,
        plan_out_option,
        every_step_option,
        json_option,
        quiet_option,
    ]
)


log_format_option = click.option(
    "--log-format",
    metavar="text|json",
    help="How log lines look: text, or one JSON object per line with the run and step it "
    "is about (default: AISHELL_LOG_FORMAT, else text).",
)


SELECTOR_HELP = (
    "Only these targets: a name, tag:TAG or a glob ('eu-*'), joined by ',' (either) or "
    "'+' (both), e.g. 'tag:prod,eu-*'."
)


def targets_selector(into: str = "targets") -> Decorator:
    """--targets SELECTOR and --all-targets (as --targets '*'), handed to the command as
    one argument `into`: the selector, or None when neither was given."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            selector, every = kwargs.pop("targets_selector"), kwargs.pop("all_targets")
            if selector is not None and every:
                raise UsageError("--targets and --all-targets exclude each other; give one")
            kwargs[into] = "*" if every else selector
            return f(*args, **kwargs)

        options = [
            click.option(
                "--targets",
                "targets_selector",
                metavar="SELECTOR",
                shell_complete=complete_selector,
                help=SELECTOR_HELP,
            ),
            click.option("--all-targets", is_flag=True, help="Every configured target."),
        ]
        return stacked(options)(command)

    return apply
