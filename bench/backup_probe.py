"""Where the time of one `aishell run backup` goes: the command as a user runs it
(`aishell.cli.main` with the same arguments), with a clock around the calls it makes.

    python bench/backup_probe.py MARKS_JSON -- --home H run backup --target T --json ...

Writes MARKS_JSON: when the probe started and ended (time.time(), so that the parent can
add the interpreter's start and its exit), and each timed call as [label, start, end].
Calls of the same label nested in one another count once (the outer one). The wrappers
replace module attributes before the command runs; they cost a function call each.
"""

from __future__ import annotations

import time

STARTED = time.time()

import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

MARKS: list[tuple[str, float, float]] = []
_DEPTH: dict[str, int] = {}

# (module, attribute, label): functions timed where their callers look them up.
CALLS = (
    ("aishell.config.models", "load_config", "config"),
    ("aishell.commands.starting", "load_catalog", "catalog"),
    ("aishell.commands.starting", "open_target", "open target"),
    ("aishell.commands.runs", "build_plan", "plan"),
    ("aishell.commands.starting", "start_run", "run"),
    ("aishell.handlers.backup.take", "_space", "size estimate (in the dump step)"),
    ("aishell.handlers.backup.take", "take_postgresql", "dump step's work"),
    ("aishell.handlers.backup.take", "take_mysql", "dump step's work"),
    ("aishell.handlers.backup.take", "write_manifest", "manifest"),
    ("aishell.handlers.backup.dumps", "stream_into", "dump streamed (tool, file, sha256)"),
    ("aishell.handlers.backup.dumps", "tool_version", "tool version"),
    ("aishell.handlers.backup.disk", "_fsync", "sync"),
)
# Context managers: (module, attribute, label, whole) -- the whole block, or its entry.
BLOCKS = (
    ("aishell.commands.starting", "signed_store", "state store opened", False),
    ("aishell.state.core", "StoreCore._tx", "state writes", True),
    ("aishell.state.core", "StoreCore._hot_tx", "state writes", True),
)


def _note(label: str, start: float) -> None:
    MARKS.append((label, start, time.time()))


def _timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        outer = _DEPTH.get(label, 0) == 0
        _DEPTH[label] = _DEPTH.get(label, 0) + 1
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[label] -= 1
            if outer:
                _note(label, start)

    return timed


def _timed_block(fn: Callable[..., Any], label: str, whole: bool) -> Callable[..., Any]:
    @contextmanager
    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        outer = _DEPTH.get(label, 0) == 0
        _DEPTH[label] = _DEPTH.get(label, 0) + 1
        start = time.time()
        try:
            with fn(*args, **kwargs) as value:
                if not whole and outer:
                    _note(label, start)
                yield value
        finally:
            _DEPTH[label] -= 1
            if whole and outer:
                _note(label, start)

    return timed


def _patch() -> None:
    for module, attribute, label in CALLS:
        owner = importlib.import_module(module)
        setattr(owner, attribute, _timed(getattr(owner, attribute), label))
    for module, attribute, label, whole in BLOCKS:
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _timed_block(getattr(owner, name), label, whole))


def main() -> None:
    out, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    from aishell.cli import main as aishell_main

    _patch()
    imported = time.time()
    sys.argv = ["aishell", *argv]
    try:
        aishell_main()
    finally:
        ended = time.time()
        with open(out, "w") as handle:
            json.dump(
                {"started": STARTED, "imported": imported, "ended": ended, "marks": MARKS}, handle
            )


if __name__ == "__main__":
    main()
