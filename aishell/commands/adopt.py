"""`aishell backups adopt`: a person signs, with the home's key, the catalog rows of
backups recorded before rows were signed (or signed with a key the home no longer has),
once each backup's file is read again and found to be what its row records.

Restore, validation, retention, a drill, an incremental's parent, `backup_required` and
every reader of a backup's age refuse a row the home's key did not sign
(state/backups.py: seal_error). Nothing signs such a row on its own: the row says which
file, of which database, holds what, and only a person can vouch that an unsigned row is
aishell's own. What they are shown is what is checked and what is signed: a row changed
between the check and the signature is not signed. An incremental backup is signed only
with its chain as restore takes it, link by link: each parent signed as it is with its
file unchanged, or adopted in the same command, parents first."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.handlers.backup.elsewhere import not_here
from aishell.handlers.backup.manifest import manifest_of
from aishell.policy.approvers import current_user
from aishell.state.backups import adoptable, seal_error
from aishell.state.processes import this_host
from aishell.state.signing import SigningKey, load_key
from aishell.state.store import StateStore, signed_store
from aishell.state.values import loads, now

CHUNK = 1 << 20


def check_adoption(
    config: Config, ids: Sequence[int], all_unsigned: bool = False
) -> dict[str, Any]:
    """Each backup named (or, `all_unsigned`, each kept one not signed) checked against
    its files: `ready` (what would be signed, as shown), `refused` ({id, why}: one line
    each) and `signed` (the ids already signed with the home's key, left as they are)."""
    if bool(ids) == all_unsigned:
        raise UsageError(
            "Name the backups to adopt (aishell backups adopt ID ...) or give "
            "--all-unsigned, not both"
        )
    key = load_key(config.home)
    with StateStore(config.state_url, key=key) as store:
        rows = store.stored_backups(None if all_unsigned else ids)
        found = {row["id"]: row for row in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise UsageError(
                f"No backup with id {', '.join(map(str, missing))}; `aishell backups list` "
                "shows them"
            )
        ready, refused, signed = [], [], []
        for row in rows:
            if seal_error(key, row) is None:
                signed.append(row["id"])
                continue
            why = _refusal(key, row)
            if why is None:
                ready.append(_shown(row))
            else:
                refused.append({"id": row["id"], "why": why})
        ready, broken = _whole_chains(store, key, ready, {r["id"] for r in refused})
    return {"ready": ready, "refused": refused + broken, "signed": signed}


def adopt_backups(config: Config, ready: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sign the rows `check_adoption` found ready, each only if it is still as it was
    checked; `adopted` (ids) and `refused` ({id, why}) for a row changed meanwhile."""
    adopted: list[int] = []
    refused: list[dict[str, Any]] = []
    asked = {shown["id"] for shown in ready}
    with signed_store(config) as store:
        # Oldest first: a parent is signed before the incrementals that build on it.
        for shown in sorted(ready, key=lambda r: int(r["id"])):
            parent = shown.get("builds_on")
            if parent in asked and parent not in adopted:
                why = (
                    f"Backup {shown['id']} builds on backup {parent}, which was not signed; "
                    "not signed"
                )
                refused.append({"id": shown["id"], "why": why})
                continue
            data = {
                "backup_id": shown["id"],
                "by": current_user(),
                "host": this_host(),
                "at": now(),
                "path": shown["path"],
                "sha256": shown["sha256"],
                "size_bytes": shown["size_bytes"],
            }
            if store.adopt_backup(shown["stored"], data):
                adopted.append(shown["id"])
            else:
                why = f"Backup {shown['id']}: its row changed since it was checked; not signed"
                refused.append({"id": shown["id"], "why": why})
    return {"adopted": adopted, "refused": refused}


def _whole_chains(
    store: StateStore,
    key: SigningKey | None,
    ready: list[dict[str, Any]],
    refused: set[int],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ready rows whose chain restore would take link by link (each parent signed as
    it is with its file unchanged, or adopted in this same command), and a refusal ({id,
    why}) for each other: a signed incremental restore refuses at its parent is no use.
    `refused`: the rows of this command already refused, each with its own line."""
    adopting = {os.path.realpath(r["path"]): r for r in ready}
    files: dict[int, str | None] = {}
    refusing: dict[int, str] = dict.fromkeys(refused, "")
    # Oldest first: a parent taken before its incrementals is judged before them.
    for shown in sorted(ready, key=lambda r: int(r["id"])):
        why = _broken_link(store, key, shown, adopting, refusing, files)
        if why is not None:
            refusing[shown["id"]] = why
    kept = [r for r in ready if r["id"] not in refusing]
    return kept, [{"id": i, "why": why} for i, why in refusing.items() if i not in refused]


def _broken_link(
    store: StateStore,
    key: SigningKey | None,
    shown: dict[str, Any],
    adopting: Mapping[str, dict[str, Any]],
    refusing: Mapping[int, str],
    files: dict[int, str | None],
) -> str | None:
    """Why restore would refuse the chain of `shown` at one of its parents; None when
    every parent is signed as it is and its file unchanged, or adopted with it."""
    child = f"Backup {shown['id']}"
    unsigned, needed = [shown["id"]], []
    seen = {os.path.realpath(shown["path"])}
    parent = _parent_of(shown["stored"])
    while parent is not None:
        if os.path.realpath(parent) in seen:
            return f"{child}: the manifests of its chain form a loop; not adopted"
        seen.add(os.path.realpath(parent))
        link = adopting.get(os.path.realpath(parent))
        row = link["stored"] if link is not None else _kept_at(store, parent)
        if row is None:
            return (
                f"{child} builds on {parent}, which no kept backup row records: restore "
                "would refuse its chain there; not adopted"
            )
        if shown["builds_on"] is None:
            shown["builds_on"] = row["id"]
        if row["id"] in refusing:
            return f"{child} builds on backup {row['id']}, which is not adopted; not adopted"
        why = None if link is not None else _link_refusal(key, row, files)
        if why is not None:
            return f"{child} builds on backup {row['id']}, {why}; not adopted"
        if link is not None or seal_error(key, row) is not None:
            unsigned.append(row["id"])
            needed += [] if link is not None else [row["id"]]
        parent = _parent_of(row)
    if not needed:
        return None
    together = " ".join(map(str, sorted(unsigned)))
    return (
        f"{child} builds on backup {', '.join(map(str, needed))}, which this home's key did "
        f"not sign: restore would refuse its chain there; adopt them together "
        f"(`aishell backups adopt {together}`)"
    )


def _link_refusal(
    key: SigningKey | None, row: Mapping[str, Any], files: dict[int, str | None]
) -> str | None:
    """Why a parent not adopted with its incremental breaks its chain (a phrase after
    "builds on backup N"): signed, its file not what its row records; unsigned, a row
    `backups adopt` would refuse. None when it holds (its file read once)."""
    if seal_error(key, row) is None:
        if row["id"] not in files:
            files[row["id"]] = _file_refusal(row)
        said = files[row["id"]]
        return None if said is None else f"whose file is not what its row records ({said})"
    if row["id"] not in files:
        files[row["id"]] = _refusal(key, row)
    if files[row["id"]] is None:
        return None
    return f"which cannot be adopted (`aishell backups adopt {row['id']}` says why)"


def _parent_of(row: Mapping[str, Any]) -> str | None:
    """The path an incremental's recorded manifest names its parent by; None for a full."""
    manifest = loads(row["manifest"])
    parent = manifest.get("parent") if isinstance(manifest, dict) else None
    return str(parent) if parent else None


def _kept_at(store: StateStore, path: str) -> dict[str, Any] | None:
    """The newest kept row of the backup at `path` (by its real path, as restore finds
    it), None when no row not deleted records it."""
    real = os.path.realpath(path)
    found = [r for r in store.kept_backups_at([path]) if os.path.realpath(r["path"]) == real]
    return found[-1] if found else None


def _refusal(key: SigningKey | None, row: Mapping[str, Any]) -> str | None:
    """Why a row may not be adopted; None when its file is what it records."""
    if row["deleted_at"]:
        return f"Backup {row['id']} was deleted; there is nothing to adopt"
    if not adoptable(key, row):
        return f"{seal_error(key, row)}; it is not adopted"
    return _file_refusal(row)


def _file_refusal(row: Mapping[str, Any]) -> str | None:
    """Why a row's file (here, with the manifest beside it) is not what the row records;
    None when it is."""
    which = f"Backup {row['id']} ({row['path']})"
    if not row["sha256"]:
        return f"{which} records no sha256 to check its file against; take a new backup"
    away = not_here({**row, "manifest": loads(row["manifest"])})
    if away is not None:
        return f"{away}; adopt it there"
    read = _read(row["path"])
    if isinstance(read, str):
        return f"{which}: {read}; not adopted"
    sha, size = read
    if row["size_bytes"] is not None and size != row["size_bytes"]:
        return f"{which}: its file holds {size} bytes, the row records {row['size_bytes']}"
    if sha != row["sha256"]:
        recorded = str(row["sha256"])[:16]
        return f"{which}: its file's sha256 {sha[:16]}... is not the {recorded}... it records"
    return _manifest_refusal(which, row)


def _manifest_refusal(which: str, row: Mapping[str, Any]) -> str | None:
    """The manifest beside the file must be the one the row records, of the same file."""
    beside = manifest_of(Path(row["path"]))
    if beside is None:
        return f"{which}: no manifest beside its file; it is not a finished aishell backup"
    if beside.get("sha256") != row["sha256"]:
        return f"{which}: the manifest beside its file is of another file (its sha256 differs)"
    kept = loads(row["manifest"])
    if kept is not None and kept != beside:
        return f"{which}: the manifest beside its file is not the one its row records"
    return None


def _read(path: str) -> tuple[str, int] | str:
    """The sha256 and size of the regular file at `path`; else why not, in a phrase."""
    # O_NONBLOCK: a FIFO put at the path must not wait for a writer; the descriptor's own
    # fstat says what was opened.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return "its file is missing"
    except OSError as exc:
        return f"its file cannot be read ({exc.strerror})"
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "what is at its path is not a regular file"
        digest = hashlib.sha256()
        try:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        except OSError as exc:
            return f"its file cannot be read ({exc.strerror})"
    return digest.hexdigest(), info.st_size


def _shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the person is shown of a row before it is signed, and the row as stored."""
    manifest = loads(row["manifest"])
    database = manifest.get("database_identity") if isinstance(manifest, dict) else None
    return {
        "id": row["id"],
        "builds_on": None,
        "target": row["target"],
        "kind": row["kind"],
        "path": row["path"],
        "sha256": row["sha256"],
        "size_bytes": row["size_bytes"],
        "created_at": row["created_at"],
        "verified_at": row["verified_at"],
        "database": database,
        "stored": dict(row),
    }
