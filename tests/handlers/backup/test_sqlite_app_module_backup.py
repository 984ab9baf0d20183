"""A SQLite database holding a virtual table of the application's own module (one
neither the sqlite3 program nor aishell's connection has) is backed up, validated and
restored: the file is copied whole (VACUUM INTO and the backup API copy the table's
schema entry and shadow tables, never opening it), and that table alone is neither
counted nor checksummed, the manifest and the step saying so by its name."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from aishell import commands
from aishell.handlers.backup.manifest import sha256_of
from aishell.handlers.backup.sqliteincrement import recorded
from aishell.policy.approvers import PreApproved
from tests.handlers.backup.recorded import record_as_on_disk
from tests.handlers.backup.test_restore_prechecks import Recorder
from tests.handlers.purge.test_purge_app_code_later import with_app_module
from tests.helpers import query, use_target

NOT_COUNTED = (
    "not counted: it is a virtual table of module app_module, which the application "
    "defines, not SQLite, and aishell cannot load it"
)


def _database(path: Path) -> Path:
    """`events` (30 rows), the shadow table an application's module keeps its rows in,
    and `vt`, the module's virtual table: its CREATE VIRTUAL TABLE written into the
    schema as the application's connection would have stored it (a sqlite3 module
    cannot be made from Python)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, note TEXT)")
    conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, f"n{i}") for i in range(30)])
    conn.execute("CREATE TABLE vt_data (id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute("INSERT INTO vt_data VALUES (1, x'0102')")
    conn.commit()
    conn.close()
    with_app_module(path)
    return path


def _schema(path: Path) -> list[tuple[Any, ...]]:
    return query(path, "SELECT type, name, sql FROM sqlite_schema ORDER BY name")


def test_backed_up_validated_and_restored_without_opening_it(home: Path) -> None:
    db = _database(home / "app.db")
    schema = _schema(db)
    config = use_target(home, f"sqlite:///{db}", copy=f"sqlite:///{home / 'copy.db'}")
    result = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", [s.error for s in result.steps]
    [taken] = [s for s in result.steps if s.tool == "backup_database_full"]
    manifest = taken.output["backup_record"]["manifest"]
    assert manifest["tables"] == {"events": 30, "vt_data": 1}
    assert set(manifest["checksums"]) == {"events", "vt_data"}
    assert manifest["not_counted"] == {"vt": NOT_COUNTED}
    assert taken.output["not_counted"] == {"vt": NOT_COUNTED}
    [validated] = [s for s in result.steps if s.tool == "validate_backup"]
    assert validated.status == "succeeded", validated.error
    assert validated.output["not_counted"] == {"vt": NOT_COUNTED}
    assert _schema(Path(taken.output["backup_path"])) == schema
    # Restored over the changed database, and into a new file: the virtual table whole.
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM events")
    conn.commit()
    conn.close()
    backup = commands.list_backups(config, "db")[0]
    for into, path in (("db", db), ("copy", home / "copy.db")):
        done = commands.restore(
            config,
            backup["id"],
            into,
            replace=True,
            create=True,
            approver=Recorder(answer="yes").approver,
        )
        assert done.status == "completed", done.error
        [restored] = [s for s in done.steps if s.tool == "restore_backup"]
        assert restored.output["not_counted"] == {"vt": NOT_COUNTED}
        assert _schema(path) == schema
        assert query(path, "SELECT count(*) FROM events") == [(30,)]
        assert query(path, "SELECT * FROM vt_data") == [(1, b"\x01\x02")]


def test_an_increment_is_taken_whole_names_it_and_restores(home: Path) -> None:
    db = _database(home / "app.db")
    config = use_target(home, f"sqlite:///{db}")
    full = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
    assert full.status == "completed", [s.error for s in full.steps]
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO events VALUES (100, 'new')")
    conn.commit()
    conn.close()
    schema = _schema(db)
    result = commands.run_job(config, "backup", {"type": "incremental"}, approver=PreApproved())
    assert result.status == "completed", [s.error for s in result.steps]
    [taken] = [s for s in result.steps if s.tool == "backup_database_incremental"]
    manifest = taken.output["backup_record"]["manifest"]
    # Copied page by page, as a file whose schema names the application's code is, it
    # is taken whole (targets/appcode.py's stops_rewrite), naming the table.
    assert manifest["kind"] == "full"
    assert "vt: it is a virtual table of module app_module" in manifest["taken_whole"]
    assert manifest["not_counted"] == {"vt": NOT_COUNTED}
    db.unlink()
    newest = commands.list_backups(config, "db")[0]
    done = commands.restore(
        config,
        newest["id"],
        "db",
        replace=True,
        create=True,
        approver=Recorder(answer="yes").approver,
    )
    assert done.status == "completed", done.error
    assert _schema(db) == schema
    assert query(db, "SELECT count(*) FROM events") == [(31,)]


def test_a_copy_without_it_fails_validation(home: Path) -> None:
    """Never counted, it must still come back: a copy that lost it is no backup."""
    db = _database(home / "app.db")
    config = use_target(home, f"sqlite:///{db}")
    taken = commands.run_job(config, "backup", {"type": "full", "verify": False})
    assert taken.status == "completed", [s.error for s in taken.steps]
    [backup] = commands.list_backups(config, "db")
    path = Path(backup["path"])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("DELETE FROM sqlite_schema WHERE name = 'vt'")
    conn.commit()
    conn.close()
    # Its manifest made to match the file in all else, its schema's hashes too.
    manifest_file = path.with_name(path.name + ".manifest.json")
    copy = sqlite3.connect(path)
    manifest = json.loads(manifest_file.read_text()) | recorded(copy)
    copy.close()
    manifest["sha256"], manifest["size_bytes"] = sha256_of(path), path.stat().st_size
    manifest_file.write_text(json.dumps(manifest))
    # And the catalog's record, which validation holds the file and manifest to as well.
    record_as_on_disk(home, path)
    drill = commands.run_job(config, "backup", {"type": "drill"})
    assert drill.status == "failed"
    [validated] = [s for s in drill.steps if s.tool == "validate_backup"]
    assert "tables the manifest lists did not come back: vt" in str(validated.error)
