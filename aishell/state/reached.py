"""Which database each target's runs last reached, and from that the one answer every
reader of a backup's age asks: the newest restorable backup of the database target T
reaches now (newest_restorable).

A run records, as it reaches its target (the run lock's read of the database's
identity, or a dry run's), the database's backup_identity and the fingerprint of the
config that reached it (its URL without secrets, hashed). A listing, a page, a metrics
scrape or an alert connects to no target: it vouches for a backup's age only while the
target's config still has that fingerprint and, for SQLite, while the file at its path
is still the one reached (stat and birth time, read locally). Otherwise the database is
unknown and no age is vouched: the answer says why in one phrase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from aishell.config.dburl import parse_url, resolve_url, url_fingerprint
from aishell.config.models import Config
from aishell.state.backups import PROVEN, database_of, in_place, sealed
from aishell.state.core import StoreCore
from aishell.state.schema import backups, reached_databases, runs
from aishell.state.values import dumps, loads, now
from aishell.targets.identity import sqlite_file_identity

# Why no backup's age is vouched for a target: its database is unknown, or it has none.
NEVER_REACHED = "unknown: no run has reached this database yet"
POINTED_ELSEWHERE = "unknown: its config changed since a run last reached its database"
FILE_REPLACED = "unknown: its SQLite file was replaced since a run last reached it"
FILE_MISSING = "unknown: its SQLite file is not there"
NOT_CONFIGURED = "unknown: not a configured target"
NO_BACKUP = "no restore-proven backup of its database"


@dataclass(frozen=True)
class Restorable:
    """What a target's backups vouch for now: the database it reaches (None: unknown),
    its newest restorable backup (None: none vouched) and, without one, why."""

    database: str | None
    backup: Mapping[str, Any] | None
    reason: str | None
    # Which unknown it is, in at most 64 characters (None: the database is known): the
    # same while nothing changes, another once the config or file changes again or a run
    # reaches the target since (an alert about it is then a new occurrence).
    unknown_key: str | None = None

    @property
    def created_at(self) -> str | None:
        return None if self.backup is None else str(self.backup["created_at"])

    def age_seconds(self, at: datetime) -> float | None:
        """How old the backup is at `at`; None when none is vouched."""
        taken = self.created_at
        return None if taken is None else (at - datetime.fromisoformat(taken)).total_seconds()


class ReachedDatabases(StoreCore):
    """Rows of reached_databases, and the newest restorable backup judged by them."""

    def record_reached(self, target: str, database: str, fingerprint: str, run_id: str) -> None:
        """Target `target`, configured as `fingerprint` says, reached `database` (its
        backup_identity) in run `run_id`, now."""
        values = {
            "database_identity": database,
            "fingerprint": fingerprint,
            "run_id": run_id,
            "reached_at": now(),
        }
        where = reached_databases.c.target == target
        for _ in range(2):
            try:
                with self._tx() as conn:
                    if conn.execute(update(reached_databases).where(where).values(values)).rowcount:
                        return
                    conn.execute(insert(reached_databases).values(target=target, **values))
                return
            except IntegrityError:
                continue  # another process recorded it first: updated on the next go

    def newest_restorable(self, config: Config, names: Iterable[str]) -> dict[str, Restorable]:
        """Per target of `names`: the newest restore-proven backup still in place
        (in_place) whose manifest names the database the target reaches now, under
        whatever target name it was taken; the database as the last run through the
        target recorded it, while the target's config and (SQLite) its file are still
        those it reached. Two statements however many targets; connects to none."""
        wanted = list(dict.fromkeys(names))
        self.flush()
        recorded = {
            row.target: row
            for row in self._conn.execute(
                select(reached_databases).where(reached_databases.c.target.in_(wanted))
            )
        }
        judged = {name: _reaches(config, name, recorded.get(name)) for name in wanted}
        newest = self._newest_proven({db for db, _, _ in judged.values() if db is not None})
        self._conn.rollback()
        return {
            name: Restorable(
                database,
                newest.get(database) if database else None,
                why if database is None else (None if database in newest else NO_BACKUP),
                key,
            )
            for name, (database, why, key) in judged.items()
        }

    def _newest_proven(self, databases: set[str]) -> dict[str, dict[str, Any]]:
        """For each of `databases`, its newest restore-proven backup still in place and
        signed with the home's key as it is, as {id, target, created_at, path}; one
        statement."""
        if not databases:
            return {}
        # Every column: a row is counted only as the home's key signed it (sealed).
        query = (
            select(backups, runs.c.hostname)
            .outerjoin(runs, runs.c.run_id == backups.c.run_id)
            # Only rows whose manifest names one of the databases are read whole.
            .where(
                PROVEN
                & backups.c.deleted_at.is_(None)
                & or_(
                    *(
                        backups.c.manifest.contains(dumps(db), autoescape=True)
                        for db in sorted(databases)
                    )
                )
            )
            .order_by(backups.c.created_at.desc(), backups.c.id.desc())
        )
        found: dict[str, dict[str, Any]] = {}
        with self._conn.execute(query) as rows:
            for row in sealed(self._key, rows):
                manifest = loads(row.manifest)
                database = database_of(manifest)
                if database is None or database not in databases or database in found:
                    continue
                said = manifest.get("hostname") if isinstance(manifest, dict) else None
                if in_place(row.path, row.size_bytes, said or row.hostname):
                    found[database] = {
                        "id": row.id,
                        "target": row.target,
                        "created_at": row.created_at,
                        "path": row.path,
                    }
                    if len(found) == len(databases):
                        break
        return found


def _reaches(config: Config, name: str, recorded: Any) -> tuple[str | None, str | None, str | None]:
    """The database target `name` reaches now, as far as the store can vouch without
    connecting; else None, why not, and which unknown it is (Restorable.unknown_key)."""
    configured = config.main.targets.get(name)
    if configured is None:
        return None, NOT_CONFIGURED, "not configured"
    if recorded is None:
        return None, NEVER_REACHED, "never reached"
    after = f"after {recorded.reached_at}"
    url = resolve_url(configured.url, config.home)
    fingerprint = url_fingerprint(url)
    if recorded.fingerprint != fingerprint:
        return None, POINTED_ELSEWHERE, f"config {fingerprint[:16]} {after}"
    parsed = parse_url(url)
    if parsed is not None and parsed.backend == "sqlite" and parsed.database:
        try:
            here = sqlite_file_identity(str(Path(parsed.database).resolve()))
        except OSError:
            return None, FILE_MISSING, f"file gone {after}"
        if here != recorded.database_identity:
            return None, FILE_REPLACED, f"file {_digest(here)} {after}"
    return str(recorded.database_identity), None, None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
