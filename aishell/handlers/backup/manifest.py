"""A backup's manifest, written beside it: the file's sha256 and size, the server and tool
versions, and its tables with row counts and content checksums; and the chain of backups
an incremental one builds on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aishell.errors import StepFailed
from aishell.files import read_regular
from aishell.handlers.backup.disk import partial_file
from aishell.state.backups import refused
from aishell.tool.context import ToolContext

CHUNK = 1 << 20
# A manifest names each table with two figures: far below this even for many tables.
MANIFEST_LIMIT = 64 << 20

# Where a manifest's row counts and checksums come from; validation measures the
# restored copy the same way.
FROM_COPY = "the copy"  # SQLite: read from the file itself
FROM_SNAPSHOT = "the dump's snapshot"  # PostgreSQL: read in the snapshot pg_dump dumps
FROM_DUMP = "the dump"  # MySQL/MariaDB: the rows the dump file holds

# A backup and those it builds on, oldest (the full one) first, each with its manifest.
Chain = list[tuple[Path, dict[str, Any]]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def write_manifest(path: Path, manifest: dict[str, Any], ctx: ToolContext) -> None:
    with partial_file(_manifest_path(path), ctx) as partial:
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = read_regular(_manifest_path(path), MANIFEST_LIMIT, "Manifest", StepFailed)
    except FileNotFoundError:
        raise StepFailed(
            f"No manifest beside {path}; it is not a finished aishell backup"
        ) from None
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, an integer past int()'s digits
        raise StepFailed(f"The manifest beside {path} is not a manifest's JSON") from None
    if not isinstance(manifest, dict):
        raise StepFailed(f"The manifest beside {path} is not a manifest's JSON")
    return manifest


def manifest_of(path: Path) -> dict[str, Any] | None:
    """The manifest beside a backup file, or None when there is none to read."""
    try:
        return read_manifest(path)
    except (StepFailed, FileNotFoundError):
        return None


def remove_backup(path: Path) -> None:
    """A backup file and its manifest, gone if they were there; only regular files are
    removed (a link or a folder at either name is left where it is)."""
    for each in (path, _manifest_path(path)):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(each).st_mode):
                each.unlink()


def changed_tables(
    parent: Mapping[str, Any], counts: dict[str, int], checksums: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Tables that differ from the parent backup, and tables gone since.

    A table counts as unchanged only when its row count and its content checksum
    both match the parent's; a table without a checksum is always taken.
    """
    before_counts = parent.get("tables") or {}
    before_sums = parent.get("checksums") or {}
    changed = [
        t
        for t in counts
        if t not in before_counts
        or before_counts[t] != counts[t]
        or t not in checksums
        or before_sums.get(t) != checksums[t]
    ]
    dropped = sorted(t for t in before_counts if t not in counts)
    return sorted(changed), dropped


def chain_of(path: Path, recorded: Mapping[str, Mapping[str, Any]] | None = None) -> Chain:
    """A backup and the backups it builds on, oldest (the full one) first; each file must
    still match its manifest, and, given `recorded` (the backup catalog's row of each
    backup by the real path of its file: recorded_backups), the sha256 and the manifest
    the catalog recorded when it was taken: a file and a manifest both replaced, or a
    manifest edited, are not the backup the catalog holds."""
    chain: Chain = []
    current: Path | None = path
    while current is not None:
        if not current.is_file():
            raise StepFailed(f"Backup {current} is missing; the chain cannot be restored")
        manifest = read_manifest(current)
        sha = sha256_of(current)
        if sha != manifest["sha256"]:
            raise StepFailed(
                f"sha256 of {current.name} ({sha}) does not match the manifest's "
                f"{manifest['sha256']}"
            )
        if recorded is not None:
            as_recorded(current, sha, manifest, recorded, "validates")
        chain.append((current, manifest))
        current = Path(manifest["parent"]) if manifest.get("parent") else None
    return list(reversed(chain))


def as_recorded(
    path: Path,
    sha: str,
    manifest: Mapping[str, Any],
    recorded: Mapping[str, Mapping[str, Any]],
    doing: str,
) -> None:
    """The file is the backup the catalog recorded at its path, and the manifest beside
    it the one recorded with it: only the file's bytes are hashed, so a manifest edited
    since (another parent, tables it says were dropped, fewer tables to compare) would
    steer a restore or a validation unseen. A row from before the catalog kept a sha256
    or a manifest is taken at the manifest's word for what it lacks. `doing`: what
    aishell does only with recorded backups ("validates", "restores")."""
    row = recorded.get(os.path.realpath(path))
    if row is None:
        raise StepFailed(
            f"Backup {path.name} is not in the backup catalog; aishell {doing} only the "
            "backups it recorded (`aishell backups list`)"
        )
    # Its row's path, checksum and manifest are what the rest is checked against: a row
    # the home's key did not sign as it is vouches for nothing.
    why = refused(row)
    if why is not None:
        raise StepFailed(why)
    catalogued = row.get("sha256")
    if catalogued is not None and catalogued != sha:
        raise StepFailed(
            f"sha256 of {path.name} ({sha}) differs from the catalog's {catalogued}: it is "
            "not the backup the catalog recorded (file and manifest replaced since)"
        )
    kept = row.get("manifest")
    if isinstance(kept, Mapping) and dict(kept) != dict(manifest):
        edited = sorted(k for k in {*kept, *manifest} if kept.get(k) != manifest.get(k))
        raise StepFailed(
            f"The manifest beside {path.name} is not the one the backup catalog recorded "
            f"when it was taken (it differs in {', '.join(edited[:5])}): it was edited "
            "since, and is not trusted; use another backup"
        )


def recorded_backups(catalog: list[dict[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The catalog's row of each backup, by the real path of its file."""
    return {os.path.realpath(str(b["path"])): b for b in catalog}


def as_catalogued(chain: Chain, catalog: list[dict[str, Any]], expected: str | None) -> str:
    """A restore's chain checked file by file: its sha256 against its manifest, the file
    and its manifest against the catalog's record of them (as_recorded), and the newest
    against `expected`, the sha256 its restore was planned with. The newest's sha256."""
    recorded = recorded_backups(catalog)
    sha = ""
    for link, manifest in chain:
        sha = sha256_of(link)
        if sha != manifest["sha256"]:
            raise StepFailed(
                f"Backup file {link.name} changed after it was taken: its sha256 {sha[:16]}... "
                f"differs from the manifest's {str(manifest['sha256'])[:16]}...; restore "
                "another backup"
            )
        catalogued = (recorded.get(os.path.realpath(link)) or {}).get("sha256")
        for against in (catalogued, expected if link == chain[-1][0] else None):
            if against and against != sha:
                raise StepFailed(
                    f"Backup file {link.name} is not the one the catalog recorded: its "
                    f"sha256 {sha[:16]}... differs from the catalog's {against[:16]}...; "
                    "restore another backup"
                )
        as_recorded(link, sha, manifest, recorded, "restores")
    return sha
