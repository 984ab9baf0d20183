"""The backups catalog: backups taken, verified and deleted, which
`backup_required` and the tools that choose among backups read."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, insert, select, update

from aishell.errors import StateError, StateTampered
from aishell.state.core import StoreCore
from aishell.state.processes import this_host
from aishell.state.schema import backups, runs
from aishell.state.seals import check
from aishell.state.signing import SigningKey
from aishell.state.values import dumps, loads, new_id, now

# A backup that a restore has proven (a passing validate_backup): what `backup_required`,
# the backup_stale alert and the backup age metric count (reached.py: of the database the
# target reaches now).
PROVEN = backups.c.verified_at.is_not(None)

# How far a passing validation proved a backup (its verification's `proof`): restored
# into a scratch copy and compared with its manifest; or, a quick validation, decoded
# whole and compared with its manifest, which proves the file is the whole dump its
# manifest describes but not that it restores. Only a restore marks a backup verified.
RESTORED = "restored"
DECODED = "decoded"


def on_disk(path: str, size_bytes: int | None) -> bool:
    """Whether a catalogued backup's file is here, a regular file of the size the
    catalog recorded (a file cut short or replaced by another is not the backup)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(info.st_mode) and (size_bytes is None or info.st_size == size_bytes)


def in_place(path: str, size_bytes: int | None, host: str | None) -> bool:
    """Whether a catalogued backup is still there to restore: on disk here; or taken on
    another host into a folder this machine does not see, where it is read and checked.
    A file deleted or moved by hand proves nothing, however it was verified."""
    if on_disk(path, size_bytes):
        return True
    return bool(host) and host != this_host() and not os.path.lexists(path)


# The manifest's key naming the database a backup is of (targets.identity's
# backup_identity): a target's name may be pointed at another database, or its SQLite
# file replaced, and a backup of that other database vouches for nothing here.
DATABASE_KEY = "database_identity"


def database_of(manifest: Any) -> str | None:
    """The database a backup's manifest says it is of; None for a backup recorded
    before manifests said so (of no database aishell can vouch for)."""
    said = manifest.get(DATABASE_KEY) if isinstance(manifest, Mapping) else None
    return said if isinstance(said, str) and said else None


# What a person does about a row its key did not sign: take a new backup; and for a row
# stored unsigned (before backups were signed) or with a key the home no longer has,
# adopt it once its files are checked against it (commands/adopt.py).
AGAIN = "take a new backup (`aishell run backup --type full`)"


def adoptable(key: SigningKey | None, stored: Mapping[str, Any]) -> bool:
    """Whether a row carries no signature or another key's: what `backups adopt` may sign
    once its files match it. A row this key signed and that changed since is not."""
    if not stored.get("seal") or key is None:
        return True
    try:
        return bool(json.loads(stored["seal"])["key_id"] != key.key_id)
    except (ValueError, TypeError, KeyError):
        return False  # a damaged signature was changed outside aishell


def seal_error(key: SigningKey | None, stored: Mapping[str, Any]) -> str | None:
    """Why a backup's row, as stored (every column of backups), is not what the home's key
    signed; None when it is. Without the key nothing is vouched for: a home that has
    none signed no backup, and a row read so counts as no backup anywhere."""
    backup_id = stored["id"]
    what, seal = f"backup {backup_id}", stored.get("seal")
    if key is not None:
        try:
            check(key, "backup", str(backup_id), stored, seal, what, AGAIN)
            return None
        except StateTampered:
            pass  # refused below, saying how to make the row good
    again = AGAIN
    if adoptable(key, stored):
        again = f"`aishell backups adopt {backup_id}` signs it once its file matches it, or {AGAIN}"
    if key is None:
        return (
            f"state.db: backup {backup_id} cannot be checked: this aishell home has no "
            f"signing key (plan-signing.key), so it signed no backup; {again}"
        )
    try:
        check(key, "backup", str(backup_id), stored, seal, what, again)
    except StateTampered as exc:
        return str(exc)
    return None


def sealed(key: SigningKey | None, rows: Iterable[Any]) -> Iterator[Any]:
    """Only the rows (selected with every column of backups) the home's key signed as
    they are: what every reader that counts a backup (as restorable, as fresh, as kept)
    reads, so that a row written or changed outside aishell counts nowhere."""
    for row in rows:
        if seal_error(key, row._mapping) is None:
            yield row


def refused(row: Mapping[str, Any]) -> str | None:
    """Why restore, validation, retention and an incremental refuse a catalog row (its
    `seal_error`: not what the home's key signed); None when they may trust it."""
    said = row.get("seal_error")
    return str(said) if said else None


def proof_of(verification: Any) -> str | None:
    """How far a catalog row's last passing validation proved it (RESTORED, DECODED),
    None when it has none; a passing one from before proofs were named was a restore."""
    if not isinstance(verification, Mapping) or not verification.get("ok"):
        return None
    return str(verification.get("proof") or RESTORED)


class BackupCatalog(StoreCore):
    """Rows of the backups table."""

    def record_backup(
        self,
        *,
        target: str,
        kind: str,
        path: str,
        run_id: str | None = None,
        created_at: str | None = None,
        verified_at: str | None = None,
        verification: Any = None,
        sha256: str | None = None,
        size_bytes: int | None = None,
        manifest: Any = None,
    ) -> int:
        """A backup taken, signed with the home's key in a store opened with it (over its
        id, known once it is written, in the same transaction)."""
        row = {
            "target": target,
            "run_id": run_id,
            "kind": kind,
            "path": path,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "manifest": None if manifest is None else dumps(manifest),
            "created_at": created_at or now(),
            "verified_at": verified_at,
            "verification": None if verification is None else dumps(verification),
        }
        with self._tx() as conn:
            backup_id = new_id(conn.execute(insert(backups).values(**row)))
            sealed = self._sealed("backup", str(backup_id), row)
            if sealed is not None:
                conn.execute(update(backups).where(backups.c.id == backup_id).values(seal=sealed))
        return backup_id

    def backup_verified(self, path: str, verification: Any, ok: bool) -> None:
        """Store a validation's result with the backup; only a passing restore marks it
        verified. A passing quick validation (DECODED) neither marks it verified nor
        replaces the proof of a restore it had; a failing one of either kind unmarks it."""
        where: ColumnElement[bool] = backups.c.path == path
        values: dict[str, Any] = {"verification": dumps(verification)}
        if ok and proof_of(verification) == DECODED:
            where = where & backups.c.verified_at.is_(None)
        else:
            values["verified_at"] = now() if ok else None
        self._rewrite(where, values)

    def backup_deleted(self, path: str) -> None:
        self._rewrite(backups.c.path == path, {"deleted_at": now()})

    def _rewrite(self, where: ColumnElement[bool], values: dict[str, Any]) -> None:
        """Change the rows `where` picks, each signed anew when it was what the home's key
        signed: a row changed outside aishell stays refused, not signed as it is now."""
        with self._tx() as conn:
            found = [dict(r._mapping) for r in conn.execute(select(backups).where(where))]
            for stored in found:
                changed = dict(values)
                if self._key is not None and self._seal_error(stored) is None:
                    changed["seal"] = self._sealed("backup", str(stored["id"]), stored | values)
                conn.execute(update(backups).where(backups.c.id == stored["id"]).values(changed))

    def _seal_error(self, stored: Mapping[str, Any]) -> str | None:
        """Why a backup's row is not what the home's key signed (seal_error); None when
        it is."""
        return seal_error(self._key, stored)

    def stored_backups(self, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Rows as stored (every column, manifest as its text), oldest first: those of
        `ids`, or (None) every row not deleted that the home's key did not sign but may
        adopt (adoptable): what `backups adopt` checks against its files."""
        query = select(backups).order_by(backups.c.id)
        if ids is not None:
            query = query.where(backups.c.id.in_(list(ids)))
        else:
            query = query.where(backups.c.deleted_at.is_(None))
        found = [dict(r._mapping) for r in self._conn.execute(query)]
        self._conn.rollback()
        if ids is not None:
            return found
        return [r for r in found if self._seal_error(r) is not None and adoptable(self._key, r)]

    def kept_backup_count(self) -> int:
        """How many backup rows are kept (not deleted), counted by the store: after `plan
        rotate-key`, the rows its new key vouches for none of."""
        count = self._conn.execute(
            select(func.count()).select_from(backups).where(backups.c.deleted_at.is_(None))
        ).scalar_one()
        self._conn.rollback()
        return int(count)

    def kept_backups_at(self, paths: Iterable[str]) -> list[dict[str, Any]]:
        """Rows as stored (every column) of the backups not deleted whose file is at one of
        `paths`, oldest first: the links of a chain `backups adopt` walks, by the path an
        incremental's manifest names its parent by."""
        wanted = sorted({*paths, *(os.path.realpath(p) for p in paths)})
        if not wanted:
            return []
        query = (
            select(backups)
            .where(backups.c.path.in_(wanted) & backups.c.deleted_at.is_(None))
            .order_by(backups.c.id)
        )
        found = [dict(r._mapping) for r in self._conn.execute(query)]
        self._conn.rollback()
        return found

    def adopt_backup(self, stored: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        """Sign a backup's row with the home's key, as `stored` says it was when its files
        were checked against it and a person saw it; an event `backup_adopted` (`data`:
        who, what was checked) records it. False, signing nothing: the row changed since,
        or is signed already."""
        if self._key is None:  # a caller's mistake: adopt_backups opens it with the key
            raise StateError("state.db: a backup is adopted only in a store opened with the key")
        with self._tx() as conn:
            now_stored = (
                conn.execute(select(backups).where(backups.c.id == stored["id"])).mappings().first()
            )
            if now_stored is None or dict(now_stored) != dict(stored):
                return False
            sealed_now = self._sealed("backup", str(stored["id"]), now_stored)
            conn.execute(
                update(backups).where(backups.c.id == stored["id"]).values(seal=sealed_now)
            )
            # A run's id is the event's only key: an adoption belongs to no run.
            self._event(conn, "-", None, "backup_adopted", dict(data))
        return True

    def list_backups(self, target: str | None = None) -> list[dict[str, Any]]:
        """Backups not deleted, newest first; each with `host`, the machine that took it
        (its manifest says; a backup from before manifests did, its run's host), and
        `seal_error`: why its row is not what the home's key signed (None: it is; a store
        opened without the key vouches for none), which restore, validation and
        retention refuse (refused)."""
        query = (
            select(backups, runs.c.hostname.label("run_host"))
            .outerjoin(runs, runs.c.run_id == backups.c.run_id)
            .where(backups.c.deleted_at.is_(None))
            .order_by(backups.c.created_at.desc())
        )
        if target:
            query = query.where(backups.c.target == target)
        found = [dict(r._mapping) for r in self._conn.execute(query)]
        self._conn.rollback()
        return [self._judged(row) for row in found]

    def _judged(self, row: dict[str, Any]) -> dict[str, Any]:
        """A listed row with its `seal_error` and whether `backups adopt` may sign it."""
        said = self._seal_error(row)
        may = said is not None and adoptable(self._key, row)
        return _backup_row(row) | {"seal_error": said, "adoptable": may}

    def backup_for(self, database: str, run_id: str | None = None) -> datetime | None:
        """When the newest backup that vouches for `database` (backup_identity) was
        taken, under whatever target name: one verified, or one run `run_id` took that
        no validation has failed since; of that database (its manifest names it), still
        in place (in_place), and signed with the home's key as it is (sealed).
        Its age is the caller's to judge: a backup taken earlier in a run is as old as it
        is when the run resumes."""
        vouches: ColumnElement[bool] = PROVEN
        if run_id is not None:
            vouches = vouches | (backups.c.run_id == run_id)
        query = (
            select(backups, runs.c.hostname)
            .outerjoin(runs, runs.c.run_id == backups.c.run_id)
            # Only rows whose manifest names the database are read whole.
            .where(
                vouches
                & backups.c.deleted_at.is_(None)
                & backups.c.manifest.contains(dumps(database), autoescape=True)
            )
            .order_by(backups.c.created_at.desc())
        )

        def vouches_for(manifest: Any, row: Any) -> bool:
            verification = loads(row.verification)
            failed = isinstance(verification, Mapping) and not verification.get("ok")
            return database_of(manifest) == database and not failed

        return self._newest_in_place(query, vouches_for)

    def _newest_in_place(
        self, query: Select[Any], wanted: Callable[[Any, Any], bool]
    ) -> datetime | None:
        """When the newest of the query's backups (newest first) that `wanted` takes,
        given its manifest and row, and still in place (in_place) was taken. A row the
        home's key did not sign as it is (verified_at written in) vouches for nothing."""
        found = None
        with self._conn.execute(query) as rows:
            for row in sealed(self._key, rows):
                manifest = loads(row.manifest)
                if not wanted(manifest, row):
                    continue
                said = manifest.get("hostname") if isinstance(manifest, dict) else None
                if in_place(row.path, row.size_bytes, said or row.hostname):
                    found = row.created_at
                    break
        self._conn.rollback()
        return datetime.fromisoformat(found) if found else None


def _backup_row(row: Any) -> dict[str, Any]:
    left = ("manifest", "verification", "run_host", "seal")
    found = {k: v for k, v in row.items() if k not in left}
    manifest = loads(row["manifest"])
    said = manifest.get("hostname") if isinstance(manifest, dict) else None
    return {
        **found,
        "manifest": manifest,
        "verification": loads(row["verification"]),
        "host": said or row["run_host"],
    }
