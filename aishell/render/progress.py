"""Live progress: a spinner or bar while a step runs and one line when it ends; the
demo database's fill."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.text import Text

from aishell import units
from aishell.executor import StepResult
from aishell.render.base import STATUS_STYLE, human_size, plain, safe_text, step_subject
from aishell.render.figures import step_figures


@contextmanager
def demo_progress(
    out: Console, log_rows: int, quiet: bool = False
) -> Iterator[Callable[[str, int], None]]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} rows"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        # Not on a terminal (a script, --json) it would leave an empty line behind.
        disable=quiet or not out.is_terminal,
    ) as progress:
        tasks: dict[str, Any] = {}
        totals = {"app_logs": log_rows}

        def tell(label: str, done: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=totals.get(label, done))
            progress.update(tasks[label], completed=done)

        yield tell


def spinner_for(out: Console) -> str:
    """rich's braille spinner where the terminal's encoding has it (UTF-8), else one of
    ASCII (`- \\ | /`): on an ISO-8859-1 terminal each frame would be shown escaped."""
    return "dots" if out.encoding.replace("-", "").startswith("utf") else "line"


class _AmountColumn(ProgressColumn):
    """Rows or bytes done, and of how many when the step knows (a purge told no expected
    count does not; a dump that outgrew its estimate no longer does)."""

    def render(self, task: Task) -> Text:
        done = task.completed
        if task.fields.get("unit") == "bytes":
            if task.total is None:
                return Text(human_size(done))
            return Text(f"{human_size(done)}/{human_size(task.total)}")
        if task.total is None:
            return Text(f"{int(done):,} rows")
        return Text(f"{int(done):,}/{int(task.total):,} rows")


def _amounts(figures: dict[str, Any]) -> tuple[str, float, float | None, str]:
    """A long step's figures as the bar shows them: unit, done, of how many, and rate.
    Bytes from backups, restores and validations; rows from purges."""
    if "bytes_done" in figures:
        done = figures["bytes_done"] or 0
        total = figures.get("bytes_total") or None
        if total is not None and done > total:
            total = None  # the estimate fell short: how much is left is not known
        rate = figures.get("bytes_per_second")
        return "bytes", done, total, f"{human_size(rate)}/s" if rate else ""
    rate = figures.get("rows_per_second")
    rows_rate = f"{rate:,} rows/s" if rate else ""
    done = figures.get("rows_deleted") or 0
    expected = figures.get("expected_rows") or None
    if expected is not None and done > expected:
        # A purge's rows come from an estimate, which may fall short as a dump's bytes
        # do: "250,000/214,462 rows" is no share of anything.
        expected = None
    return "rows", done, expected, rows_rate


# A step shows its spinner (or its bar) once it has run this long: a live display costs
# more than a short step (a run of thousands of tables is thousands of short steps).
SPINNER_AFTER = 0.25


class StepProgress:
    """A spinner while a step runs (a bar once it reports rows or bytes) and one line per
    step. Spinners and bars only on a terminal that redraws lines (not on a pipe, in a
    file or on TERM=dumb); `quiet` shows neither, nor the lines."""

    def __init__(self, out: Console, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.live = not quiet and out.is_terminal and not out.is_dumb_terminal
        self._status: Status | None = None
        self._bar: Progress | None = None
        self._task: Any = None
        self._started = 0.0
        # The step running and its label, for the spinner a watching thread shows once
        # it has run SPINNER_AFTER; None between steps (when a prompt may be shown).
        self._running: Text | None = None
        # Figures a step reported before it had run SPINNER_AFTER: the watching thread
        # shows them as a bar when it is time.
        self._pending: tuple[StepResult, dict[str, Any]] | None = None
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._watch: threading.Thread | None = None

    def step_progress(self, step: StepResult, figures: dict[str, Any]) -> None:
        """Figures from a long step: rows or bytes done, of how many, and how fast."""
        if not self.live:
            return
        with self._lock:
            self._progress(step, figures)

    def _progress(self, step: StepResult, figures: dict[str, Any]) -> None:
        if "throttled" in figures and len(figures) == 1:
            if self._bar is not None:
                why = figures["throttled"]
                self._bar.update(self._task, note=escape(f"paused: {plain(why)}") if why else "")
            return
        if self._bar is None:
            if time.monotonic() - self._started < SPINNER_AFTER:
                self._pending = (step, figures)
                return
            self._start_bar(step, figures)
        self._update_bar(figures)

    def _start_bar(self, step: StepResult, figures: dict[str, Any]) -> None:
        self._stop()
        self._pending = None
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _AmountColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("[yellow]{task.fields[note]}"),
            console=self.out,
            transient=True,
        )
        self._bar.start()
        unit, _done, total, _rate = _amounts(figures)
        self._task = self._bar.add_task(
            escape(f"{plain(step.step_id)} {plain(step.tool)} {step_subject(step.params)}"),
            total=total,
            unit=unit,
            rate="",
            note="",
        )

    def _update_bar(self, figures: dict[str, Any]) -> None:
        assert self._bar is not None
        _unit, done, total, rate = _amounts(figures)
        if total is None:
            # Progress.update reads None as "unchanged": the task is told directly.
            for task in self._bar.tasks:
                task.total = None
        self._bar.update(self._task, completed=done, total=total, rate=rate)

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self._closed.set()
        if self._watch is not None:
            self._watch.join()
        with self._lock:
            self._running = None
            self._stop()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def planning(self, what: str | None) -> None:
        """A spinner while a model drafts the plan; None ends it."""
        with self._lock:
            self._stop()
            if what is not None and self.live:
                self._status = self.out.status(safe_text(what), spinner=spinner_for(self.out))
                self._status.start()

    def step_started(self, step: StepResult, total: int) -> None:
        if not self.live:
            return
        with self._lock:
            self._stop()
            self._pending = None
            self._started = time.monotonic()
            label = f"{plain(step.step_id)} {plain(step.tool)} {step_subject(step.params)}"
            self._running = Text(label)
            if self._watch is None:
                self._watch = threading.Thread(
                    target=self._spinner, name="aishell-progress", daemon=True
                )
                self._watch.start()

    def _spinner(self) -> None:
        """Show the running step's spinner, or its bar when it reported figures, once it
        has run SPINNER_AFTER."""
        while not self._closed.wait(SPINNER_AFTER / 5):
            with self._lock:
                shown = self._status is not None or self._bar is not None
                late = time.monotonic() - self._started >= SPINNER_AFTER
                if self._running is None or not late or shown:
                    continue
                if self._pending is not None:
                    step, figures = self._pending
                    self._start_bar(step, figures)
                    self._update_bar(figures)
                else:
                    self._status = self.out.status(self._running, spinner=spinner_for(self.out))
                    self._status.start()

    def step_finished(self, step: StepResult, total: int) -> None:
        with self._lock:
            self._running = None
            self._pending = None
            self._stop()
        if self.quiet:
            return
        mark = {
            "succeeded": "✓",
            "previewed": "·",
            "skipped": "-",
            "waiting_approval": "?",
            "deferred": "…",
        }.get(step.status, "✗")
        style = STATUS_STYLE.get(step.status, "")
        took = f" {units.took(step.seconds)}" if step.seconds is not None else ""
        figures = step_figures(step.output, with_summary=False)
        note = f"  {plain(step.error)}" if step.error else (f"  {figures}" if figures else "")
        self.out.print(
            Text.assemble(
                (f"{mark} ", style),
                f"{plain(step.step_id)} {plain(step.tool)} ",
                (step_subject(step.params), "bold"),
                (f" {step.status}{took}", style),
                (note, "dim"),
            ),
            # The terminal wraps a long line: half the cost of rich wrapping each one.
            soft_wrap=True,
        )
