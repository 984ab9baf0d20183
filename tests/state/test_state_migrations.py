"""The state store's schema history (Alembic, aishell/state/migrations).

- A state.db made before the history moved to Alembic (tests/data/state_before_alembic.sql,
  dumped from such a store) is copied aside, with what only its -wal file held, then
  stamped as the baseline; every run, step, approval, backup and schedule in it is found
  through the store's API. An older one (schema_version 3) gets the tables it lacks.
- A new store on SQLite and on PostgreSQL is at the head revision, with exactly the
  schema the history before Alembic made and that aishell/state/schema.py describes.
- A store at a revision this aishell does not know, or at a newer schema_version, is
  refused with one line and left as it was; an upgrade that fails leaves nothing of it.
- Opening prints and logs nothing; processes that open one old store at once upgrade
  it once.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, insert, inspect

from aishell.errors import StateError
from aishell.state import history, schema
from aishell.state.history import HEAD_REVISION, LEGACY_SCHEMA_VERSION
from aishell.state.store import StateStore
from tests.helpers import at_once
from tests.services import scratch_postgresql

BEFORE_ALEMBIC = Path(__file__).parents[1] / "data" / "state_before_alembic.sql"
# The tables each schema_version of the history before Alembic added.
ADDED_BY_VERSION = {
    1: ("runs", "steps", "events", "approvals", "backups", "target_locks"),
    2: ("statements", "run_controls", "target_health"),
    3: ("step_progress",),
    4: ("schedules", "schedule_runs"),
    5: ("plan_cache",),
    6: ("scratch",),
}


def load_before_alembic(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(BEFORE_ALEMBIC.read_text())
    finally:
        conn.close()


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def sqlite_schema(path: Path) -> list[tuple[object, ...]]:
    """Every table and index of a SQLite file as SQLite keeps it, but Alembic's own; the
    text's spacing aside (a column a revision added is in it as ADD COLUMN put it, where
    a new store has it on a line of its own)."""
    return [
        (kind, name, table, " ".join(str(sql or "").split()))
        for kind, name, table, sql in query(
            path,
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name != 'alembic_version' ORDER BY name",
        )
    ]


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def baseline_schema() -> MetaData:
    """The tables of the baseline revision: the schema of the history before Alembic."""
    path = history.MIGRATIONS_FOLDER / "versions" / f"{history.BASELINE_REVISION}.py"
    spec = importlib.util.spec_from_file_location("baseline_revision", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: MetaData = module.schema
    return found


def differences_from_schema_py(url: str) -> list[object]:
    """What Alembic's comparison finds between a store and aishell/state/schema.py."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), schema.metadata))
    finally:
        engine.dispose()


# --- a store made before Alembic -------------------------------------------------------------


def test_a_store_made_before_alembic_is_copied_aside_stamped_and_read_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    load_before_alembic(path)
    # A row that lives only in the -wal file: a writer that never checkpoints holds it
    # there while the store is opened.
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute(
        "INSERT INTO backups (target, kind, path, created_at) "
        "VALUES ('demo', 'full', '/backups/only-in-wal.db', '2025-01-04T00:00:00.000+00:00')"
    )
    writer.commit()
    assert (tmp_path / "state.db-wal").stat().st_size > 0
    before = dump(path)
    caplog.set_level(logging.DEBUG)
    try:
        with StateStore(url_of(path)) as store:
            assert store.schema_revision == HEAD_REVISION
            assert store.schema_version == LEGACY_SCHEMA_VERSION
            found = _everything(store)
    finally:
        writer.close()
    copy = tmp_path / f"state.db.before-{HEAD_REVISION}"
    assert dump(copy) == before  # the -wal's row included
    assert query(copy, "SELECT name FROM sqlite_master WHERE name = 'alembic_version'") == []
    assert found == _everything_in(copy)
    assert "/backups/only-in-wal.db" in found["backups"]
    # Stamped as the baseline, then taken through the later revisions as a new store is.
    fresh = tmp_path / "fresh.db"
    StateStore(url_of(fresh)).close()
    assert sqlite_schema(path) == sqlite_schema(fresh)
    assert query(path, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert query(
        path,
        "SELECT data FROM events WHERE run_id = '-' AND kind = 'schema_upgraded' "
        "ORDER BY id DESC LIMIT 1",
    ) == [(f'{{"from": "schema_version 6", "to": "{HEAD_REVISION}"}}',)]
    # Quiet: nothing on the terminal, nothing logged by Alembic.
    assert capfd.readouterr() == ("", "")
    assert not [r for r in caplog.records if r.name.startswith("alembic")]
    # Opened again: at the head, nothing copied or upgraded again.
    copy.unlink()
    with StateStore(url_of(path)) as store:
        assert _everything(store) == found
    assert not copy.exists()


def _everything(store: StateStore) -> dict[str, object]:
    """Every run (with its steps and approvals), backup and schedule, through the API."""
    runs = {}
    for listed in store.list_runs(limit=1000):
        run = store.get_run(listed["run_id"])
        steps = [(s["index"], s["tool"], s["status"], s["output"]) for s in run["steps"]]
        approvals = [
            (a["step_idx"], a["decision"], a["decided_by"], a["reason"]) for a in run["approvals"]
        ]
        runs[run["run_id"]] = (run["status"], steps, approvals)
    schedules = {}
    for found in store.list_schedules():
        started = [r["run_id"] for r in store.schedule_runs(found["name"])]
        schedules[found["name"]] = (found["cron"], found["paused"], started)
    backups = sorted(b["path"] for b in store.list_backups())
    return {"runs": runs, "backups": backups, "schedules": schedules}


def _everything_in(path: Path) -> dict[str, object]:
    """The same, read from the file with sqlite3."""
    runs = {}
    for run_id, status in query(path, "SELECT run_id, status FROM runs"):
        steps = [
            (idx, tool, step_status, None if output is None else json.loads(output))
            for idx, tool, step_status, output in query(
                path,
                f"SELECT idx, tool, status, output FROM steps WHERE run_id = '{run_id}' "
                "ORDER BY idx",
            )
        ]
        approvals = query(
            path,
            "SELECT step_idx, decision, decided_by, reason FROM approvals "
            f"WHERE run_id = '{run_id}' ORDER BY id",
        )
        runs[run_id] = (status, steps, approvals)
    schedules = {}
    for name, cron, paused in query(path, "SELECT name, cron, paused FROM schedules"):
        started = query(path, f"SELECT run_id FROM schedule_runs WHERE schedule = '{name}'")
        schedules[name] = (cron, bool(paused), [r for (r,) in started])
    backups = query(path, "SELECT path FROM backups WHERE deleted_at IS NULL ORDER BY path")
    return {"runs": runs, "backups": [p for (p,) in backups], "schedules": schedules}


def test_an_older_store_made_before_alembic_gets_the_tables_it_lacks(tmp_path: Path) -> None:
    """schema_version 3: the baseline creates what versions 4 to 6 added, as those steps
    did, and keeps what is there."""
    path = tmp_path / "state.db"
    load_before_alembic(path)
    conn = sqlite3.connect(path)
    for version in (4, 5, 6):
        for table in ADDED_BY_VERSION[version]:
            conn.execute(f"DROP TABLE {table}")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    older = query(path, "SELECT run_id FROM runs")
    with StateStore(url_of(path)) as store:
        assert store.schema_revision == HEAD_REVISION
        assert store.schema_version == LEGACY_SCHEMA_VERSION
        assert {(r["run_id"],) for r in store.list_runs()} == set(older)
        assert store.list_schedules() == []  # a table of version 4, new and empty
        store.record_scratch("file", str(tmp_path / "x"))  # version 6's table
    assert (tmp_path / f"state.db.before-{HEAD_REVISION}").is_file()
    fresh = tmp_path / "fresh.db"
    StateStore(url_of(fresh)).close()
    assert sqlite_schema(path) == sqlite_schema(fresh)


def test_processes_opening_one_old_store_at_once_upgrade_it_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    load_before_alembic(path)
    assert at_once(6, _revision, [(path,)]) == [[HEAD_REVISION] * 6]
    upgrades = query(path, "SELECT count(*) FROM events WHERE kind = 'schema_upgraded'")
    assert upgrades == [(len(ADDED_BY_VERSION) + 1,)]  # the six before Alembic, and one


def _revision(path: Path) -> str | None:
    with StateStore(url_of(path)) as store:
        return store.schema_revision


# --- a new store -------------------------------------------------------------------------------


def test_the_head_revision_is_the_newest_file_in_migrations() -> None:
    script = ScriptDirectory.from_config(history.alembic_config())
    assert script.get_current_head() == HEAD_REVISION
    assert [s.revision for s in script.walk_revisions()][-1] == history.BASELINE_REVISION


def test_a_new_sqlite_store_is_at_the_head_with_the_schema_made_before_alembic(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with StateStore(url_of(path)) as store:
        assert store.schema_revision == HEAD_REVISION
        assert store.schema_version == LEGACY_SCHEMA_VERSION
    assert not list(tmp_path.glob("*.before-*"))  # nothing to copy aside
    made_before = tmp_path / "before.db"
    load_before_alembic(made_before)
    # The baseline is the schema made before Alembic; the later revisions change a new
    # store and an upgraded one alike.
    StateStore(url_of(made_before)).close()
    assert sqlite_schema(path) == sqlite_schema(made_before)
    assert differences_from_schema_py(url_of(path)) == []


def test_a_new_postgresql_store_is_at_the_head() -> None:
    with scratch_postgresql() as url:
        with StateStore(url) as store:
            assert store.schema_revision == HEAD_REVISION
            assert store.schema_version == LEGACY_SCHEMA_VERSION
        with StateStore(url) as store:  # opened again: already there
            store.record_event("-", None, "checked", {})
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert tables == {*schema.metadata.tables, "alembic_version"}
        assert differences_from_schema_py(url) == []


def test_a_postgresql_store_made_before_alembic_is_stamped() -> None:
    with scratch_postgresql() as url:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                baseline_schema().create_all(conn)
                conn.execute(insert(schema.meta).values(key="schema_version", value="6"))
                conn.execute(
                    insert(schema.schedules).values(
                        name="nightly",
                        cron="0 2 * * *",
                        timezone="UTC",
                        words="[]",
                        agent="maintenance",
                        job="{}",
                        options="{}",
                        paused=False,
                        created_at="2025-01-01T00:00:00.000+00:00",
                        created_by="someone",
                    )
                )
        finally:
            engine.dispose()
        with StateStore(url) as store:
            assert store.schema_revision == HEAD_REVISION
            assert [s["name"] for s in store.list_schedules()] == ["nightly"]


# --- a store from a newer aishell ----------------------------------------------------------------


def test_a_store_at_an_unknown_revision_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(url_of(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    conn.commit()
    conn.close()
    before = dump(path)
    with pytest.raises(StateError) as err:
        StateStore(url_of(path))
    assert str(err.value) == (
        f"The state store {path} is at schema revision 0099_from_the_future, which this "
        f"aishell does not know (its newest is {HEAD_REVISION}): a newer aishell made it; "
        "upgrade aishell, or point state.url at another store"
    )
    assert dump(path) == before
    assert not list(tmp_path.glob("*.before-*"))


def test_a_store_made_before_alembic_at_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    load_before_alembic(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError) as err:
        StateStore(url_of(path))
    assert str(err.value) == (
        f"The state store {path} has schema version 7, newer than this aishell knows "
        f"({LEGACY_SCHEMA_VERSION}); upgrade aishell"
    )
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'alembic_version'") == []


def test_a_failed_upgrade_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    load_before_alembic(path)
    before = dump(path)
    upgrade = command.upgrade

    def upgrade_then_fail(config: Config, revision: str) -> None:
        upgrade(config, revision)
        raise RuntimeError("the machine stopped here")

    monkeypatch.setattr(command, "upgrade", upgrade_then_fail)
    with pytest.raises(RuntimeError, match="stopped here"):
        StateStore(url_of(path))
    assert dump(path) == before  # one transaction: nothing of the upgrade stayed
    assert dump(tmp_path / f"state.db.before-{HEAD_REVISION}") == before
    monkeypatch.undo()
    with StateStore(url_of(path)) as store:
        assert store.schema_revision == HEAD_REVISION
