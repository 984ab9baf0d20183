"""The locks a tool's statements take, per engine, as its definition declares them (the
`locks:` of tools/*.yaml): the first thing a DBA asks of maintenance on a busy table.
Previews, prompts and `tools show` print them with the lock wait that bounds them;
tests/tool/test_declared_locks.py holds each against the server's own lock views.

Modes are the engines' own names: PostgreSQL's table lock modes as its docs name them
(pg_locks says ShareUpdateExclusiveLock for SHARE UPDATE EXCLUSIVE), MySQL/MariaDB's
metadata lock types as performance_schema.metadata_locks names them, SQLite's file
locks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aishell.dialects import mysql_lock_wait_seconds
from aishell.units import exact

if TYPE_CHECKING:
    from aishell.config.models import TargetConfig

MODES: dict[str, tuple[str, ...]] = {
    "postgresql": (
        "ACCESS SHARE",
        "ROW SHARE",
        "ROW EXCLUSIVE",
        "SHARE UPDATE EXCLUSIVE",
        "SHARE",
        "SHARE ROW EXCLUSIVE",
        "EXCLUSIVE",
        "ACCESS EXCLUSIVE",
    ),
    "mysql": (
        "SHARED",
        "SHARED_HIGH_PRIO",
        "SHARED_READ",
        "SHARED_WRITE",
        "SHARED_UPGRADABLE",
        "SHARED_READ_ONLY",
        "SHARED_NO_WRITE",
        "SHARED_NO_READ_WRITE",
        "EXCLUSIVE",
    ),
    "sqlite": ("SHARED", "RESERVED", "EXCLUSIVE"),
}
# What a lock is on: the tables the step names (every one when it names none), the
# indexes it rebuilds, every table of the database, (SQLite) the database file, or the
# table a step archives into (its archive_table param; no lock when it has none).
OBJECTS = ("table", "index", "every table", "database file", "archive table")
ARCHIVE_PARAM = "archive_table"
_ENTRY_KEYS = {"lock", "object", "held", "wait"}


@dataclass(frozen=True)
class Lock:
    mode: str
    object: str
    # How long it is held, as a DBA reads it ("until the VACUUM ends").
    held: str
    # The param (seconds) that bounds the wait for it; None: the target's lock wait.
    wait: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As the definition gives it."""
        return {"lock": self.mode, "object": self.object, "held": self.held, "wait": self.wait}


# By engine; every engine the tool implements has its list (empty: no lock on the
# target's tables).
PerDialect = Mapping[str, tuple[Lock, ...]]


def per_dialect(
    data: Mapping[str, Any], dialects: Iterable[str], fail: Callable[[str], Exception]
) -> dict[str, tuple[Lock, ...]]:
    """The `locks` of a tool definition, checked: a mapping naming exactly the engines the
    tool implements, each a list of {lock, object, held, wait?}."""
    wanted = sorted(dialects)
    value = data.get("locks")
    if not isinstance(value, dict):
        raise fail(
            "locks must map each engine the tool implements to the locks it takes there "
            "(a list of {lock, object, held}; [] for none)"
        )
    named = sorted(str(d) for d in value)
    if named != wanted:
        raise fail(
            f"locks must name exactly the engines the tool implements ({', '.join(wanted)}), "
            f"not {', '.join(named) or 'none'}"
        )
    numbers = {
        name
        for name, spec in (data.get("params", {}).get("properties") or {}).items()
        if isinstance(spec, dict) and spec.get("type") in ("number", "integer")
    }
    found: dict[str, tuple[Lock, ...]] = {}
    for d in wanted:
        if not isinstance(value[d], list):
            raise fail(f"locks.{d} must be a list of locks ([] for none)")
        found[d] = tuple(
            _lock(e, d, f"locks.{d}[{i}]", numbers, fail) for i, e in enumerate(value[d])
        )
    return found


def _lock(
    entry: Any, dialect: str, where: str, numbers: set[str], fail: Callable[[str], Exception]
) -> Lock:
    if not isinstance(entry, dict) or not {"lock", "object", "held"} <= set(entry):
        raise fail(f"{where} must give lock, object and held")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise fail(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
    if entry["lock"] not in MODES[dialect]:
        raise fail(f"{where}.lock: '{entry['lock']}' is not one of: {', '.join(MODES[dialect])}")
    if entry["object"] not in OBJECTS:
        raise fail(f"{where}.object: '{entry['object']}' is not one of: {', '.join(OBJECTS)}")
    if not isinstance(entry["held"], str) or not entry["held"].strip():
        raise fail(f"{where}.held must say how long the lock is held")
    wait = entry.get("wait")
    if wait is not None and wait not in numbers:
        raise fail(f"{where}.wait must name a number param of the tool (seconds)")
    return Lock(entry["lock"], entry["object"], entry["held"].strip(), wait)


@dataclass(frozen=True)
class StepLocks:
    """The locks one step takes, as previews and prompts show them."""

    # Each lock, what it is on and how long it is held (prompts, --json).
    taken: tuple[str, ...]
    # Each lock in a few words (the plan's table): its mode, what it is on unless the
    # step's own tables, and "briefly" where it is held briefly.
    brief: tuple[str, ...]
    # The lock waits that bound them: (how long, the setting it comes from).
    waits: tuple[tuple[str, str], ...]

    @property
    def wait(self) -> str:
        return "; ".join(f"lock wait {amount} ({setting})" for amount, setting in self.waits)

    def to_dict(self) -> dict[str, Any]:
        return {"taken": list(self.taken), "wait": self.wait}

    def in_brief(self) -> tuple[str, ...]:
        """Each lock in a few words, then each wait with its setting's own name."""
        waits = (f"wait {amount} ({setting.rsplit('.', 1)[-1]})" for amount, setting in self.waits)
        return (*self.brief, *waits)


def step_locks(
    locks: Sequence[Lock],
    tables: Sequence[str],
    params: Mapping[str, Any],
    target: str,
    config: TargetConfig,
    dialect: str,
) -> StepLocks:
    """Each lock a step takes, on what and for how long, and the lock wait that bounds it."""
    archive = params.get(ARCHIVE_PARAM)
    locks = [lock for lock in locks if lock.object != "archive table" or archive]
    if not locks:
        return _NO_LOCKS
    taken = tuple(
        f"{lock.mode} on {_object(lock.object, tables, archive)}, {lock.held}" for lock in locks
    )
    # The same for every step of a tool, whatever its tables: made once (a plan of 10,000
    # tables has 30,000 steps).
    settings = tuple(params.get(lock.wait) if lock.wait else None for lock in locks)
    timeouts = (getattr(config, "busy_timeout_ms", None), getattr(config, "lock_timeout_ms", None))
    made = (tuple(locks), settings, target, *timeouts, dialect)
    try:
        brief, waits = _brief_and_waits(*made)
    except TypeError:  # a setting that is no number (refused later): not kept
        brief, waits = _brief_and_waits.__wrapped__(*made)
    return StepLocks(taken, brief, waits)


_NO_LOCKS = StepLocks(("no lock on the target's tables",), ("no table lock",), ())


@lru_cache(maxsize=256)
def _brief_and_waits(
    locks: tuple[Lock, ...],
    settings: tuple[Any, ...],
    target: str,
    busy_timeout_ms: Any,
    lock_timeout_ms: Any,
    dialect: str,
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    brief = tuple(dict.fromkeys(_brief(lock) for lock in locks))
    waits = dict.fromkeys(
        _wait(lock, setting, target, busy_timeout_ms, lock_timeout_ms, dialect)
        for lock, setting in zip(locks, settings, strict=True)
    )
    return brief, tuple(wait for wait in waits if wait is not None)


def _brief(lock: Lock) -> str:
    on = "" if lock.object == "table" else f" on {_object(lock.object, ())}"
    return f"{lock.mode}{on}{', briefly' if lock.held.startswith('briefly') else ''}"


def _object(kind: str, tables: Sequence[str], archive: Any = None) -> str:
    if kind == "table":
        if not tables:
            return "each table"
        more = f" and {len(tables) - 3} more" if len(tables) > 3 else ""
        return ", ".join(tables[:3]) + more
    if kind == "archive table":
        return str(archive) if archive else "the archive table (archive_table)"
    return {"index": "each index rebuilt", "database file": "the database file"}.get(kind, kind)


def _wait(
    lock: Lock,
    setting: Any,
    target: str,
    busy_timeout_ms: Any,
    lock_timeout_ms: Any,
    dialect: str,
) -> tuple[str, str] | None:
    """The lock wait in effect, and its setting: the step's own param (its value given as
    `setting`), else the target's."""
    if lock.wait is not None:
        return (_seconds(setting), lock.wait) if setting is not None else None
    if dialect == "sqlite":
        return _seconds(busy_timeout_ms / 1000), f"targets.{target}.busy_timeout_ms"
    # MySQL's lock_wait_timeout is whole seconds, rounded up as engines.py sets it.
    seconds = (
        lock_timeout_ms / 1000
        if dialect == "postgresql"
        else mysql_lock_wait_seconds(lock_timeout_ms)
    )
    return _seconds(seconds), f"targets.{target}.lock_timeout_ms"


def _seconds(value: Any) -> str:
    number = float(value)
    return f"{exact(number)} s" if number >= 1 else f"{round(number * 1000)} ms"
