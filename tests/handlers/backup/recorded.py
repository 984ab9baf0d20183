"""What the tests that stand one backup in for another (other bytes, an older manifest's
shape) give the backup catalog too: restores and validations trust a file and its
manifest only as the catalog recorded them, so such a stand-in is recorded as if it
had been taken so."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from aishell.handlers.backup.manifest import sha256_of


def record_as_on_disk(home: Path, path: Path) -> None:
    """The catalog's row of the backup at path records its file and manifest as they are
    now: their sha256, size and manifest."""
    manifest = json.loads(path.with_name(path.name + ".manifest.json").read_text())
    conn = sqlite3.connect(home / "state.db")
    try:
        conn.execute(
            "UPDATE backups SET sha256 = ?, size_bytes = ?, manifest = ? WHERE path = ?",
            (sha256_of(path), path.stat().st_size, json.dumps(manifest, sort_keys=True), str(path)),
        )
        conn.commit()
    finally:
        conn.close()
