"""What the tests that stand one backup in for another (other bytes, an older manifest's
shape) give the backup catalog too: restores and validations trust a file and its
manifest only as the catalog recorded them, so such a stand-in is recorded as if it
had been taken so."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, text

from aishell.handlers.backup.manifest import sha256_of
from aishell.state.seals import seal
from aishell.state.signing import load_key


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
    resealed(home)


def resealed(home: Path, url: str | None = None) -> None:
    """Every backup row signed anew with the home's key, as aishell signs what it records:
    for a test whose SQL stands a row in for what a run would have recorded (an older
    backup, one verified). `url`: a store elsewhere than the home's state.db."""
    key = load_key(home)
    assert key is not None
    engine = create_engine(url or f"sqlite:///{home / 'state.db'}")
    try:
        with engine.begin() as conn:
            for row in conn.execute(text("SELECT * FROM backups")).mappings().all():
                conn.execute(
                    text("UPDATE backups SET seal = :seal WHERE id = :id"),
                    {"seal": seal(key, "backup", str(row["id"]), row), "id": row["id"]},
                )
    finally:
        engine.dispose()
