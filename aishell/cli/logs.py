"""Where the lines of aishell's loggers go while a command runs, and how they look.

The library logs to `logging.getLogger(__name__)`, every logger under `aishell`, and sets
up no handler: a command that runs for long attaches one here for as long as it runs.
How a line of the serve log looks is `line_formatter()`'s alone, so that another format
(JSON, say) is swapped in there and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from aishell import render
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


def line_formatter() -> logging.Formatter:
    """The look of every line of the serve log, its own and APScheduler's."""
    return StampedLine()


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
def serve_log() -> Iterator[None]:
    """`schedule serve`'s log: aishell's lines from INFO up on stdout, one per event;
    APScheduler's own from WARNING up on stderr, where they went before any handler was
    set (its INFO and DEBUG lines repeat ours, or say every few seconds that it looked
    for jobs)."""
    ours, theirs = Echo(), Echo(err=True)
    ours.setFormatter(line_formatter())
    theirs.setFormatter(line_formatter())
    with attached(ROOT, ours, logging.INFO), attached(APSCHEDULER, theirs, logging.WARNING):
        yield


@contextmanager
def rendered_log(console: Console) -> Iterator[None]:
    """A scheduled run's lines from INFO up on the console, while it runs in the
    foreground (`schedule run-now`)."""
    with attached(ROOT, Rendered(console), logging.INFO):
        yield
