"""A step's second session on the target: what a handler cannot send on the step's own.

Some work cannot share the step's session: a snapshot held open beside a dump, a
scratch database created and dropped outside any transaction, aishell's own client or
purge session ended while the step's connection is busy or closed to new statements.
Such a session is still the step's: every statement it sends is audited with the step
and passes a guard of its own, which lets it send reads and only the writes declared
here, filled with the names aishell chose (its scratch database), never a user's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aishell.risk import RiskLevel


@dataclass(frozen=True)
class Side:
    """What one second session is for.

    `writes`: the statement shapes it may write ({name} filled from `names`, quoted by
    the dialect; :name bound). `risk`: what the server's catalog may call those writes
    (ending a session is a call of pg_terminate_backend, which counts as a high write),
    declared here with the exact shape so that a step of lower risk may still clean up
    after itself. `isolation_level`: the session's (AUTOCOMMIT for DDL that may not run
    in a transaction). `after_stop`: sent after the run was told to stop, since ending
    aishell's own sessions is part of stopping. `read_only`: the session is read-only
    though it has writes declared (a setting of its own transaction). `limit_seconds`:
    the server's statement limit for the session, set as it opens (a session opened as
    a step ends has what is left of the step's, nothing once its time ran out)."""

    purpose: str
    writes: tuple[str, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    risk: RiskLevel = RiskLevel.SAFE
    isolation_level: str | None = None
    after_stop: bool = False
    read_only: bool = False
    limit_seconds: float | None = None
    # Writes it may send exactly as given (statements aishell built from a backup's own
    # names), besides the shapes of `writes`.
    exact: tuple[str, ...] = ()
    # Another database of the target's server (a validation's scratch copy).
    database: str | None = None
    # Whether its reads are held to the catalog's word on the code reading may run
    # (user functions behind views, checks, policies, operators). False only for a
    # read-only session that reads every table as a dump does (a backup's counts and
    # checksums): held so, a backup of any database with such code would be refused,
    # while pg_dump reads the same tables; the read-only session is the last word.
    reads_checked: bool = True
