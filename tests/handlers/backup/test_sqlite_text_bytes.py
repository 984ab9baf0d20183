"""A SQLite database whose TEXT values are not UTF-8 (SQLite stores whatever bytes it is
given) backs up, validates, restores and chains increments: every read of its rows takes
the bytes as they are, and two different undecodable values never checksum alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aishell import commands
from aishell.policy.approvers import Prompting
from tests.helpers import use_target


def _odd_text(path: Path, value: str = "e9e8ff") -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t1 (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute(f"INSERT INTO t1 (name) VALUES (CAST(x'{value}' AS TEXT)), ('plain')")
    conn.commit()
    conn.close()


def _names(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        return [r[0] for r in conn.execute("SELECT name FROM t1 ORDER BY id")]
    finally:
        conn.close()


def test_a_sqlite_database_with_text_that_is_not_utf8_backs_up_and_validates(config, home):
    _odd_text(home / "demo.db")
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    assert done.steps[-1].output["ok"] is True
    assert done.steps[-1].output["checksums_compared"] == 1


def test_a_restore_of_text_that_is_not_utf8_measures_it_as_the_backup_did(home, tmp_path):
    source, copy = tmp_path / "source.db", tmp_path / "copy.db"
    _odd_text(source)
    sqlite3.connect(copy).close()  # an empty database to restore into
    config = use_target(home, f"sqlite:///{source}", copy=f"sqlite:///{copy}")
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    backup_id = commands.list_backups(config, "db")[0]["id"]
    restored = commands.restore(config, backup_id, "copy", approver=Prompting(ask=lambda r: "yes"))
    assert restored.status == "completed", restored.error
    assert _names(copy) == [b"\xe9\xe8\xff", b"plain"]


def test_an_increment_sees_one_undecodable_value_changed_for_another(home, tmp_path):
    source = tmp_path / "source.db"
    _odd_text(source)
    config = use_target(home, f"sqlite:///{source}")
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    conn = sqlite3.connect(source)
    conn.execute("UPDATE t1 SET name = CAST(x'e9e8fe' AS TEXT) WHERE id = 1")
    conn.commit()
    conn.close()
    done = commands.run_job(config, "backup", {"type": "incremental"})
    assert done.status == "completed", done.error
    assert done.steps[1].output["changed_tables"] == ["t1"]
