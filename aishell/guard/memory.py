"""What a run's guards have learned from the server's catalog, and when it must be asked
again: after a write the guard let through that may have changed code a later statement
runs (a definition, a user's function), and once it is older than the run may trust it,
since another session may change definitions while a long run goes on."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from aishell.guard.calls import Call
from aishell.guard.hidden import HiddenWriters
from aishell.guard.statements import without_leading_comments

# How long what the catalog said stands before a step start asks again: a run of hours
# would otherwise judge its reads by definitions another session has since replaced.
# One lookup of each kind per interval, however many steps run in it.
CATALOG_READ_FOR_SECONDS = 30.0

# Statements that change rows or a table's storage, never the code a statement runs
# (the code a write runs itself is judged by the guard as it is sent). Every other write
# the guard lets through may change a definition: what was learned is forgotten.
_KEEPS_CODE = frozenset(
    (
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "REPLACE",
        "VACUUM",
        "ANALYZE",
        "ANALYSE",
        "REINDEX",
        "CLUSTER",
        "OPTIMIZE",
        "REPAIR",
        "CHECK",
        "CHECKSUM",
        "TRUNCATE",
        "LOCK",
        "SAVEPOINT",
        "RELEASE",
        "ROLLBACK",
        "COMMIT",
        "BEGIN",
        "START",
        "END",
        "ABORT",
        "FLUSH",
        "REFRESH",
        "COPY",
        "SELECT",
        "VALUES",
        "WITH",
        "SHOW",
        "EXPLAIN",
        "CHECKPOINT",
        "NOTIFY",
    )
)
# A setting that changes what a name in a statement resolves to, or who runs it.
_SETS_RESOLUTION = re.compile(r"search_path|\brole\b|authorization|sql_mode", re.IGNORECASE)
_FIRST_WORD = re.compile(r"\(*\s*([A-Za-z_]+)")


@dataclass
class GuardMemory:
    """What a run's guards have learned, shared by its steps: per function call whether
    it may write, as the server's catalog said, and the statements, as the driver got
    them, found to only read. A statement's verdict as a read depends on its text and
    the catalog's definitions alone, so it stands until a definition may have changed
    (`forget`) or the catalog is asked again after CATALOG_READ_FOR_SECONDS (`expire`):
    a step per table sends the same reads with other values."""

    # (What is said of one that may write, calls.writing_calls; None for one that reads.)
    volatile: dict[Call, str | None] = field(default_factory=dict)
    # Per function a write calls: whether it is a user's (not trusted), which may write.
    user_written: dict[Call, str | None] = field(default_factory=dict)
    reads: set[str] = field(default_factory=set)
    # What may make a read write without naming a function, looked up when first needed.
    hidden: HiddenWriters | None = None
    # The user-defined functions the site vouches only read (the target's
    # trusted_functions): the site's word, which the guard takes.
    trusted: tuple[str, ...] = ()
    # `hidden` as its maker gave it, never looked up: a side session whose reads its
    # tool checked itself (a dump's snapshot) is given none to look for.
    hidden_given: bool = False
    # Counts each forgetting: what a run keeps beside this (the user code the estimates
    # read) is read again when the count it was read at has passed.
    generation: int = 0
    learned_at: float = field(default_factory=time.monotonic)

    def forget(self) -> None:
        """Ask the catalog again from the next statement on."""
        self.volatile.clear()
        self.user_written.clear()
        self.reads.clear()
        if not self.hidden_given:
            self.hidden = None
        self.generation += 1
        self.learned_at = time.monotonic()

    def expire(self, now: float | None = None) -> bool:
        """Forget what is older than CATALOG_READ_FOR_SECONDS; whether it was."""
        if (time.monotonic() if now is None else now) - self.learned_at < CATALOG_READ_FOR_SECONDS:
            return False
        self.forget()
        return True

    def wrote(self, sql: str, dialect: str) -> None:
        """A write the guard let through: forget, unless it cannot change code."""
        if not keeps_code(sql, dialect):
            self.forget()


def keeps_code(sql: str, dialect: str) -> bool:
    """Whether a write changes rows or storage only, never a definition or a setting
    that decides what a statement's names are."""
    stripped = without_leading_comments(sql, dialect)
    first = _FIRST_WORD.match(stripped)
    if first is None:
        return False
    word = first.group(1).upper()
    if word == "SET":
        return _SETS_RESOLUTION.search(stripped) is None
    return word in _KEEPS_CODE


# What a run's cache keeps of the catalog's code beside the guard's memory (the user code
# usercode.py reads, the hidden writers the estimates read), read again with it.
USER_CODE_KEY = "user code"
HIDDEN_WRITERS_KEY = "hidden writers"
_READ_AT_KEY = "catalog code generation"


def ask_again_if_due(memory: GuardMemory, run_cache: dict[str, object]) -> None:
    """At a step's start: what the catalog said goes once it is too old, and the run's
    cached code with the guard's memory whenever that was forgotten."""
    memory.expire()
    if run_cache.get(_READ_AT_KEY) != memory.generation:
        run_cache.pop(USER_CODE_KEY, None)
        run_cache.pop(HIDDEN_WRITERS_KEY, None)
        run_cache[_READ_AT_KEY] = memory.generation
