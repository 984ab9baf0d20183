"""Where the lines of aishell's loggers go while a command runs, and how they look.

The library logs to `logging.getLogger(__name__)`, every logger under `aishell`, and sets
up no handler: a command that runs for long attaches one here for as long as it runs.
How a line of the serve log looks is `line_formatter()`'s alone: text (`<time> <message>`)
or, with `--log-format json` or AISHELL_LOG_FORMAT=json, one JSON object per line (time,
level, logger, message, and run_id and step when the line is about one).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from aishell import render
from aishell.errors import UsageError
from aishell.terminal import printable
from aishell.units import stamp

if TYPE_CHECKING:
    from rich.console import Console

ROOT = "aishell"
APSCHEDULER = "apscheduler"


class StampedLine(logging.Formatter):
    """`<time> <message>`: the time of the record as units.stamp writes it (the one time
    format of every output), the message with its control characters escaped (a line may
    carry a name, or an error message from the database or a notifier)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line = f"{stamp(moment)} {printable(record.getMessage())}"
        if record.exc_info:  # APScheduler's "job raised an exception" carries its traceback
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonLine(logging.Formatter):
    """One JSON object per line: time (as units.stamp writes it), level, logger,
    message, and the run_id and step the line is about when the logger said them
    (`extra=`). Escaped as JSON escapes (control and non-ASCII characters too), so a
    message can neither break the line nor hide in it."""

    FIELDS = ("run_id", "step")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": stamp(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, default=str)


LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "AISHELL_LOG_FORMAT"


def line_formatter(log_format: str | None = None) -> logging.Formatter:
    """The look of every line of the serve log, its own and APScheduler's: the format
    asked for, else AISHELL_LOG_FORMAT's, else text."""
    chosen = log_format or os.environ.get(LOG_FORMAT_ENV) or "text"
    if chosen not in LOG_FORMATS:
        raise UsageError(
            f"Log format {chosen!r} (--log-format or {LOG_FORMAT_ENV}): use text or json"
        )
    return JsonLine() if chosen == "json" else StampedLine()


class Echo(logging.Handler):
    """Each line as click.echo writes a command's output: to the stream click finds at
    that moment (stdout, or stderr with err=True), flushed line by line."""

    def __init__(self, err: bool = False) -> None:
        super().__init__()
        self.err = err

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=self.err)
        except Exception:
            self.handleError(record)


class Rendered(logging.Handler):
    """Each line on a rich console as render.log_line shows it: no time, no markup."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            render.log_line(self.console, record.getMessage())
        except Exception:
            self.handleError(record)


@contextmanager
def attached(name: str, handler: logging.Handler, level: int) -> Iterator[logging.Handler]:
    """The handler on the logger `name`, which passes on `level` and above, for the
    block's length; the logger is left as it was found."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


@contextmanager
def serve_log(log_format: str | None = None) -> Iterator[None]:
    """`schedule serve`'s log: aishell's lines from INFO up on stdout, one per event;
    APScheduler's own from WARNING up on stderr, where they went before any handler was
    set (its INFO and DEBUG lines repeat ours, or say every few seconds that it looked
    for jobs)."""
    ours, theirs = Echo(), Echo(err=True)
    ours.setFormatter(line_formatter(log_format))
    theirs.setFormatter(line_formatter(log_format))
    with attached(ROOT, ours, logging.INFO), attached(APSCHEDULER, theirs, logging.WARNING):
        yield


@contextmanager
def rendered_log(console: Console) -> Iterator[None]:
    """A scheduled run's lines from INFO up on the console, while it runs in the
    foreground (`schedule run-now`)."""
    with attached(ROOT, Rendered(console), logging.INFO):
        yield


@contextmanager
def check_log(log_format: str | None = None) -> Iterator[None]:
    """`alerts check`'s log: what it sent and what failed, on stderr (its answer is
    stdout's), from INFO up."""
    lines = Echo(err=True)
    lines.setFormatter(line_formatter(log_format))
    with attached(ROOT, lines, logging.INFO):
        yield
