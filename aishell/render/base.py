"""What every part of the human output shares: the console, the colours of statuses
and risks, and how untrusted text is made safe to print."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.text import Text

from aishell.terminal import printable
from aishell.units import binary_size

T = TypeVar("T")

STATUS_STYLE = {
    "succeeded": "green",
    "completed": "green",
    "previewed": "cyan",
    "skipped": "yellow",
    "waiting_approval": "yellow",
    "denied": "red",
    "failed": "red",
    "aborted": "red",
    "interrupted": "red",
    "running": "blue",
    "pending": "dim",
    "completed_with_denials": "yellow",
    "deferred": "yellow",
    "out_of_window": "yellow",
    "approved": "cyan",
}
RISK_STYLE = {
    "safe": "green",
    "low": "cyan",
    "medium": "yellow",
    "high": "red",
    "critical": "bold red",
}


# The width of output that is not a terminal (a pipe, a file): a line is never broken.
UNWRAPPED_WIDTH = 100_000


def console(as_json: bool) -> Console:
    """Human output goes to stderr when stdout carries JSON. On a terminal it fits the
    terminal; on a pipe or in a file no line is wrapped. Colour follows NO_COLOR and the
    terminal, as rich decides."""
    out = Console(stderr=as_json, highlight=False)
    if out.is_terminal:
        return out
    return Console(stderr=as_json, highlight=False, width=UNWRAPPED_WIDTH)


def prompt_console() -> Console:
    """Where a person is asked, and shown what they are asked about: stderr, where the
    question itself goes. With stdout sent to a file or a pipe (`| tee run.log`) the
    facts of a step stay beside its question on the terminal, and out of the file."""
    return Console(stderr=True, highlight=False)


def styled(value: str, styles: dict[str, str]) -> Text:
    """A status or risk word in its colour."""
    return Text(printable(value), style=styles.get(value, ""))


def safe_text(value: Any, style: str = "", newlines: bool = False) -> Text:
    """Anything a database, a config file, a person or a model wrote, for the terminal:
    control characters escaped, and never read as rich markup or emoji codes."""
    return Text(printable("" if value is None else value, newlines=newlines), style=style)


def plain(value: Any) -> str:
    """Control characters escaped, as a str: only for places that never read markup
    (parts of Text.assemble, or text passed through escape())."""
    return printable("" if value is None else value)


# Output about more steps than this shows alike steps as one line; --all shows each.
SUMMARY_FROM = 50
# A list of more names than this is shown as its count, its first names and its last.
NAMES_SHOWN = 10


def step_subject(params: dict[str, Any], every: bool = False) -> str:
    """The table(s) a step works on, printable; a long list summed up unless `every`;
    a value an earlier step gives is shown as where it comes from."""
    table = params.get("table")
    if isinstance(table, str):
        return printable(from_steps(table))
    tables = params.get("tables")
    if isinstance(tables, list):
        return (
            names_summary(tables, every, show=lambda t: printable(from_steps(str(t))))
            if tables
            else "(all)"
        )
    if isinstance(tables, str):
        return printable(from_steps(tables))
    return ""


def from_steps(value: str) -> str:
    """`${step_1.output.corrupted_tables}` as "from step_1: corrupted_tables": what a
    reference names before the step it names has run."""
    # Here, not at the top: the listings render without the plan's grammar.
    from aishell.plan.references import find_references

    for ref in find_references(value):
        value = value.replace(ref.text, f"from {ref.step_id}: {ref.key}")
    return value


def names_summary(
    names: Sequence[T],
    every: bool = False,
    noun: str = "tables",
    show: Callable[[T], str] = str,
) -> str:
    """Names, each as `show` prints it (by default already printable), joined; more than
    NAMES_SHOWN as their count, the first three and the last, unless `every`. Only the
    names shown are printed: a step of 10,000 tables prints four."""
    if every or len(names) <= NAMES_SHOWN:
        return ", ".join(map(show, names))
    first = ", ".join(map(show, names[:3]))
    return f"{len(names):,} {noun}: {first}, ..., {show(names[-1])}"


def alike(steps: list[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Steps grouped by `key`, each group where its first step is in the plan."""
    groups: dict[Hashable, list[T]] = {}
    for step in steps:
        groups.setdefault(key(step), []).append(step)
    return list(groups.values())


def steps_label(ids: list[str]) -> str:
    """One step's id, or how many steps and the first and last id."""
    if len(ids) == 1:
        return printable(ids[0])
    return f"{printable(ids[0])} ... {printable(ids[-1])} ({len(ids):,} steps)"


def human_size(n: Any) -> str:
    """Bytes in B, KiB, MiB, GiB or TiB; "-" when the size is not known."""
    return binary_size(n)


def cutoff_text(figures: Mapping[str, Any]) -> str:
    """A purge's cutoff as stored, never reformatted (a timestamp keeps its microseconds,
    a Unix time its digits), with the time zone it is read in or whose clock it reads
    on, where its value has no offset: "2026-10-31 02:00:00 in time zone UTC"."""
    zone = figures.get("cutoff_zone") or figures.get("cutoff_clock")
    return f"{figures['cutoff']} in time zone {zone}" if zone else str(figures["cutoff"])
