"""An approval covers what the step reached when it was given, and the statements it
showed: a table that joins the approved one since (a PostgreSQL inheriting table or
partition, whose rows a DELETE on the parent deletes), code added on such a table, a
statement the step would now send that was not shown (a rebuild's list of indexes
grown), and a SQLite table dropped and made again under its name: each is a fact no
one approved, and the resumed step asks again, naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import load_config
from aishell.errors import PlanError
from aishell.policy.approvers import NonInteractive
from tests.handlers.purge.test_log_cleanup import _database, fill, job, rows_of
from tests.helpers import run_sql, use_target
from tests.policy.test_approval_outlives import ROWS, _resumed_waits, _waiting_purge

# A table of old rows made to inherit from `events` after the purge of `events` was
# approved: PostgreSQL's DELETE FROM events reaches its rows.
CHILD = [
    "CREATE TABLE events_2019 (LIKE events INCLUDING ALL)",
    "INSERT INTO events_2019 (id, created_at, payload) SELECT 100000 + g, "
    "now() - interval '2500 days', 'old' FROM generate_series(1, 50) g",
]


def test_an_inheriting_table_attached_since_is_asked_about_again(home: Path) -> None:
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *CHILD)
        run_id, config = _waiting_purge(home, url)
        run_sql(url, "ALTER TABLE events_2019 INHERIT events")
        _resumed_waits(
            config, run_id, "table events reaches other tables than when it was approved"
        )
        # (A read of `events` reads its child's rows too, now.)
        assert len(rows_of(url, "events_2019")) == 50 and len(rows_of(url)) == ROWS + 50


def test_an_inheriting_table_detached_since_is_asked_about_again(home: Path) -> None:
    """The other way: the approval counted the child's rows, which the step now leaves."""
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *CHILD, "ALTER TABLE events_2019 INHERIT events")
        run_id, config = _waiting_purge(home, url)
        run_sql(url, "ALTER TABLE events_2019 NO INHERIT events")
        _resumed_waits(config, run_id, "table events reaches other tables")


def test_a_trigger_added_on_an_inheriting_table_is_asked_about_again(home: Path) -> None:
    """A row deleted through `events` from its child fires the child's triggers."""
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *CHILD, "ALTER TABLE events_2019 INHERIT events")
        run_id, config = _waiting_purge(home, url)
        run_sql(
            url,
            "CREATE TABLE kept (id int)",
            "CREATE FUNCTION keep_it() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO kept VALUES (old.id); RETURN old; END $$",
            "CREATE TRIGGER child_gone AFTER DELETE ON events_2019 FOR EACH ROW "
            "EXECUTE FUNCTION keep_it()",
        )
        _resumed_waits(config, run_id, "trigger child_gone on events_2019 added since")
        assert len(rows_of(url, "events_2019")) == 50


def test_an_approval_of_an_unchanged_inheritance_still_covers_the_step(home: Path) -> None:
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *CHILD, "ALTER TABLE events_2019 INHERIT events")
        run_id, config = _waiting_purge(home, url)
        done = commands.resume_run(config, run_id, approver=NonInteractive())
        assert done.status == "completed", done.error
        assert rows_of(url, "events_2019") == {}


def test_a_sqlite_table_made_again_under_its_name_is_asked_about_again(home: Path) -> None:
    """Dropped and made again with other rows, its root page reused: the table approved
    is gone (a table made after it gives the new one another row in the schema)."""
    with _database("sqlite", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, "CREATE TABLE later (id INTEGER PRIMARY KEY)")
        run_id, config = _waiting_purge(home, url)
        root = "SELECT rootpage FROM sqlite_schema WHERE name = 'events'"
        before = query(url, root)
        run_sql(url, "DROP TABLE events")
        fill(url, rows=ROWS)
        assert query(url, root) == before  # the page reused: not what tells them apart
        _resumed_waits(config, run_id, "table events is not the table it was approved for")
        assert len(rows_of(url)) == ROWS


def query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = [tuple(row) for row in conn.execute(text(sql))]
    engine.dispose()
    return found


def events_to_rebuild(url: str) -> None:
    """`events` filled, with a second index, and pgstattuple to measure its indexes."""
    fill(url, rows=ROWS)
    run_sql(
        url,
        "CREATE EXTENSION IF NOT EXISTS pgstattuple",
        "CREATE INDEX events_payload ON events (payload)",
    )


def _full_rebuild(home: Path, url: str):
    """`db` at url; full maintenance rebuilding every index (threshold 0)."""
    use_target(home, url)
    agent = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(agent.read_text())
    data["maintenance_agent"].setdefault("default_config", {}).update(
        {"fragmentation_threshold": 0, "min_index_pages": 1}
    )
    agent.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def test_a_statement_not_shown_when_approved_is_asked_about_again(home: Path) -> None:
    """The rebuild of `events` approved with its indexes listed (PostgreSQL rebuilds
    each index; MariaDB the whole table, whatever its indexes); an index is added since:
    its rebuild was never shown, so the resumed step asks again, naming it."""
    with _database("postgresql", home) as url:
        events_to_rebuild(url)
        config = _full_rebuild(home, url)
        job = {"type": "full", "tables": ["events"]}
        waiting = commands.run_job(
            config, "maintenance", job, approver=NonInteractive(), safety_level="strict"
        )
        rebuild = [s for s in waiting.steps if s.tool == "rebuild_fragmented_indexes"]
        assert rebuild and rebuild[0].status == "waiting_approval", waiting.steps
        shown = " ".join(rebuild[0].sql)
        assert "events_payload" in shown and "events_late" not in shown, shown
        commands.decide_steps(config, waiting.run_id, "approved", step=rebuild[0].index)
        run_sql(url, "CREATE INDEX events_late ON events (created_at, payload)")
        resumed = commands.resume_run(config, waiting.run_id, approver=NonInteractive())
        (again,) = [s for s in resumed.steps if s.index == rebuild[0].index]
        assert again.status == "waiting_approval", (again.status, again.error)
        assert "a statement not shown when it was approved" in str(again.error), again.error
        assert "events_late" in str(again.error), again.error


def test_a_sqlite_file_made_again_on_the_same_inode_is_another_database(home: Path) -> None:
    """The file removed and a copy written at its path, which gets the freed inode (the
    file's identity): its birth time says it is another file, and the resume is
    refused."""
    path = home / "logs.db"
    url = f"sqlite:///{path}"
    fill(url, rows=ROWS)
    run_id, config = _waiting_purge(home, url)
    kept = path.read_bytes()
    inode = path.stat().st_ino
    path.unlink()
    os.sync()  # ext4 hands an inode freed by a committed transaction to a new file
    for _ in range(500):
        path.write_bytes(kept)
        if path.stat().st_ino == inode:
            break
        spare = path.with_name(f"spare-{path.stat().st_ino}")
        path.rename(spare)  # kept, so that its inode is not the one handed out next
    else:
        # Another process's file took the freed inode first (a busy machine): the case
        # this test is about could not be made.
        pytest.skip("the file system handed the freed inode to another process's file")
    with pytest.raises(PlanError, match=f"Run {run_id} ran on a file made at .* another file"):
        commands.resume_run(config, run_id, approver=NonInteractive())
    assert len(rows_of(url)) == ROWS


def _child(name: str) -> list[str]:
    """A table whose rows go with the events they name (ON DELETE CASCADE)."""
    return [
        f"CREATE TABLE {name} (id INT PRIMARY KEY, log_id INT, "
        "FOREIGN KEY (log_id) REFERENCES events (id) ON DELETE CASCADE)",
        f"INSERT INTO {name} (id, log_id) SELECT id, id FROM events",
    ]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_cascade_into_a_table_named_like_the_approved_ones_is_asked_about_again(
    dialect: str, home: Path
) -> None:
    """A purge approved by its number for its cascade into notes1; notes2 (another table,
    whose name and key's name differ only by a digit) cascades from `events` since: that
    is a new reason, not the approved one with other figures."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *_child("notes1"))
        config = use_target(home, url)
        waiting = commands.run_job(
            config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
        )
        assert waiting.status == "waiting_approval", waiting.error
        commands.decide_steps(config, waiting.run_id, "approved", step=1)
        run_sql(url, *_child("notes2"))
        _resumed_waits(config, waiting.run_id, "a new reason")
        assert query(url, "SELECT count(*) FROM notes2") == [(ROWS,)]
