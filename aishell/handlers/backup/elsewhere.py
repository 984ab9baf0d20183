"""Backups in a fleet: which machine took a backup, and the one line that says so when
its file cannot be read on this machine.

A backup's manifest names the host that took it (`hostname`; the catalog keeps the
manifest); rows from before it have the host of their run. Machines that share one
backup folder (one NFS mount as every home's `backup_dir`, at the same path) restore
and validate each other's backups as their own; with a folder per machine, a backup is
read where it was taken.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

SHARE_IT = (
    "set backup_dir in each machine's config to one folder they all mount at the same "
    "path (NFS, say)"
)


def this_host() -> str:
    return socket.gethostname()


def taken_on(backup: Mapping[str, Any]) -> str | None:
    """The host that took a catalogued backup, where the catalog knows it."""
    manifest = backup.get("manifest")
    if isinstance(manifest, Mapping) and manifest.get("hostname"):
        return str(manifest["hostname"])
    host = backup.get("host")
    return str(host) if host else None


def readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


def elsewhere(path: str, catalog: Iterable[Mapping[str, Any]]) -> str | None:
    """The line for a backup file this machine cannot read that another host took, or
    None (it is readable, or was taken here and is simply gone: the caller says that)."""
    if readable(path):
        return None
    for backup in catalog:
        if backup.get("path") == path:
            return not_here(backup)
    return None


def not_here(backup: Mapping[str, Any]) -> str | None:
    """As `elsewhere`, for a catalog row."""
    path = str(backup["path"])
    host = taken_on(backup)
    if readable(path) or host is None or host == this_host():
        return None
    which = f"Backup {backup['id']} ({path})" if backup.get("id") else f"Backup {path}"
    return (
        f"{which} was taken on host {host} and cannot be read on this host "
        f"({this_host()}); read it on {host}, or {SHARE_IT}"
    )
